"""Tests for minivae/evaluate.py: the held-out ELBO, the importance-weighted bound, the exact log p(x) by
quadrature against closed forms and scipy.integrate, and the KL decomposition; their standard errors against the
spread of independent estimates; bounded memory (tracemalloc) for pairwise and grid computations; and the
``minivae evaluate`` table, printed section by section."""
import json
import math
import os
import signal
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import minivae.evaluate as evaluate_module
from minivae.backend import to_host
from minivae.evaluate import (active_units, evaluate, evaluate_elbo, evaluate_sections, exact_log_px, iw_bound,
                              kl_decomposition)
from minivae.model import VAE
from minivae.reparam import LOGVAR_MAX
from minivae.rng import RNG


def small_model(device="cpu", z_dim=2, hidden=(6,), likelihood="bernoulli", seed=0, x_dim=10):
    model = VAE(x_dim, z_dim, hidden=hidden, likelihood=likelihood, dtype="float64", device=device, seed=seed)
    r = np.random.default_rng(seed + 100)
    for p in model.params.values():                       # a model with some structure, not the init
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)))
    return model


def numpy_elbo_terms(model, x, eps):
    """The ELBO's terms recomputed in float64 NumPy from the model's parameters alone, none of minivae's ops: for
    the MLP VAE with q(z|x) = N(mu, diag e^logvar) (logvar clamped at LOGVAR_MAX), p(z) = N(0, I) and a Bernoulli
    decoder, nll_sn = sum_d softplus(l_snd) - x_nd l_snd at z_sn = mu_n + e^(logvar_n / 2) eps_sn, and the closed
    form kl_n = (1/2) sum_j (e^logvar_nj + mu_nj^2 - 1 - logvar_nj). x: (N, D), eps: (S, N, Z) host arrays.
    Returns (nll (S, N), kl (N,))."""
    c = model.config
    assert (c["likelihood"], c["prior"], c["posterior"], c["decoder"]) == ("bernoulli", "normal", "diagonal", "mlp")
    p = {k: to_host(v).astype(np.float64) for k, v in model.params.items()}
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0)}[c["activation"]]

    def mlp(prefix, h):
        for i in range(len(model.hidden)):
            h = act(h @ p[f"{prefix}.{i}.W"] + p[f"{prefix}.{i}.b"])
        return h

    x = np.asarray(to_host(x), dtype=np.float64)
    h = mlp("enc", x)
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
    logvar = np.minimum(h @ p["enc.logvar.W"] + p["enc.logvar.b"], LOGVAR_MAX)
    z = mu + np.exp(logvar / 2) * np.asarray(to_host(eps), dtype=np.float64)      # (S, N, Z)
    logits = mlp("dec", z) @ p["dec.out.W"] + p["dec.out.b"]                     # (S, N, D)
    nll = np.sum(np.logaddexp(0.0, logits) - x * logits, axis=-1)
    kl = 0.5 * np.sum(np.exp(logvar) + mu ** 2 - 1.0 - logvar, axis=1)
    return nll, kl


def data(model, n=25, seed=1):
    r = np.random.default_rng(seed)
    x = r.uniform(size=(n, model.x_dim))
    if model.config["likelihood"] == "bernoulli":
        x = (x < 0.4).astype(float)
    return model.device.asarray(x)


def test_elbo_matches_per_example_terms_and_batching(device):
    model = small_model(device)
    x = data(model)
    full = evaluate_elbo(model, x, seed=5, batch_size=1000)
    nll, kl = model.elbo_terms(x, RNG(5).normal((25, 2), model.device, "float64"))
    assert full["nll"] == pytest.approx(float(np.mean(to_host(nll))), rel=1e-13)
    assert full["kl"] == pytest.approx(float(np.mean(to_host(kl))), rel=1e-13)
    ref_nll, ref_kl = numpy_elbo_terms(model, x, RNG(5).normal((1, 25, 2), model.device, "float64"))
    assert full["nll"] == pytest.approx(np.mean(ref_nll), rel=1e-12)          # each term against NumPy
    assert full["kl"] == pytest.approx(np.mean(ref_kl), rel=1e-12)
    assert full["neg_elbo"] == pytest.approx(np.mean(ref_nll) + np.mean(ref_kl), rel=1e-12)
    batched = evaluate_elbo(model, x, seed=5, batch_size=7)
    numbers = lambda r: {k: v for k, v in r.items() if v is not None}       # noqa: E731
    assert numbers(batched) == pytest.approx(numbers(full), rel=1e-13)
    assert evaluate_elbo(model, x, seed=5) == full
    assert full["neg_elbo_se"] is None and batched["neg_elbo_se"] is None   # one draw per example has no spread


def test_elbo_of_several_draws_against_its_per_draw_terms(device):
    """samples = S: the mean over S draws eps (S, N, Z) of model.elbo_terms, and se = sqrt(sum_n var_n / S) / N
    with var_n the unbiased variance of example n's S terms; the closed-form KL has se 0."""
    model = small_model(device)
    x = data(model, n=9)
    got = evaluate_elbo(model, x, seed=3, samples=6)
    eps = RNG(3).normal((6, 9, 2), model.device, "float64")
    terms = np.stack([np.stack([to_host(t) for t in model.elbo_terms(x, eps[s, ...])]) for s in range(6)])  # (S, 2, N)
    nll, kl = terms[:, 0, :], terms[:, 1, :]
    assert got["nll"] == pytest.approx(nll.mean(), rel=1e-13)
    assert got["kl"] == pytest.approx(kl.mean(), rel=1e-13)
    for key, t in (("nll", nll), ("neg_elbo", nll + kl)):
        assert got[f"{key}_se"] == pytest.approx(np.sqrt(np.sum(np.var(t, axis=0, ddof=1)) / 6) / 9, rel=1e-10)
    assert got["kl_se"] == 0.0 and got["samples"] == 6


def test_log_weights_against_scipy_densities():
    """log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), each density from scipy.stats; iw_bound with
    k = 1 is that log-weight for the noise of RNG(seed)."""
    model = small_model()
    x = data(model, n=4)
    eps = np.random.default_rng(3).standard_normal((3, 4, 2))
    lw = model.log_weights(x, eps)
    mu, logvar = model.encode(x)
    for i in range(3):
        z = mu + np.exp(logvar / 2) * eps[i]
        log_px_z = -model.reconstruction_nll(x, z)
        ref = (log_px_z + scipy.stats.norm.logpdf(z).sum(axis=1)
               - scipy.stats.norm.logpdf(z, mu, np.exp(logvar / 2)).sum(axis=1))
        np.testing.assert_allclose(lw[i], ref, rtol=1e-12)
    eps = RNG(7).normal((1, 4, 2), model.device, "float64")
    np.testing.assert_allclose(iw_bound(model, x, k=1, seed=7)["per_example"], model.log_weights(x, eps)[0],
                               rtol=1e-15)


def test_l1_is_the_elbo_in_expectation_and_lk_grows_with_k():
    """L_1 averages to the ELBO (closed-form KL), and the mean of L_k over seeds does not decrease with k."""
    model = small_model()
    x = data(model, n=40)
    elbo = -evaluate_elbo(model, x, seed=0)["kl"] - np.mean(
        [evaluate_elbo(model, x, seed=s)["nll"] for s in range(400)])
    l1 = [iw_bound(model, x, k=1, seed=s)["iw_bound"] for s in range(400)]
    assert abs(np.mean(l1) - elbo) < 5 * np.std(l1) / np.sqrt(len(l1))
    means = [np.mean([iw_bound(model, x, k=k, seed=s)["iw_bound"] for s in range(20)]) for k in (1, 10, 100)]
    assert means[0] < means[1] < means[2]


def test_iw_bound_chunking_does_not_change_the_result(device):
    model = small_model(device)
    x = data(model, n=9)
    a = iw_bound(model, x, k=50, seed=2, batch_size=4, max_rows=10)
    b = iw_bound(model, x, k=50, seed=2, batch_size=4, max_rows=10_000)
    np.testing.assert_allclose(a["per_example"], b["per_example"], rtol=1e-13)
    np.testing.assert_allclose(a["per_example_var"], b["per_example_var"], rtol=1e-10)
    assert a["se"] == pytest.approx(b["se"], rel=1e-10)


def test_iw_bound_variance_against_the_weights():
    """The per-example delta-method variance (k sum_i w~_i^2 - 1) / (k - 1), w~ the normalised weights, from the
    log-weights of the same noise (float64 numpy, scipy's logsumexp)."""
    model = small_model()
    x = data(model, n=5)
    got = iw_bound(model, x, k=30, seed=4, max_rows=7)
    lw = to_host(model.log_weights(x, RNG(4).normal((30, 5, 2), model.device, "float64")))   # (k, N)
    w = np.exp(lw - scipy.special.logsumexp(lw, axis=0))                                   # w~, columns sum to 1
    np.testing.assert_allclose(got["per_example"], scipy.special.logsumexp(lw, axis=0) - np.log(30), rtol=1e-13)
    var = (30 * np.sum(w**2, axis=0) - 1) / 29
    np.testing.assert_allclose(got["per_example_var"], var, rtol=1e-10)
    assert got["se"] == pytest.approx(np.sqrt(var.sum()) / 5, rel=1e-10)
    # and the same variance as the plain unbiased variance of w over its squared mean, divided by k
    w_raw = np.exp(lw - lw.max(axis=0))
    np.testing.assert_allclose(var, np.var(w_raw, axis=0, ddof=1) / np.mean(w_raw, axis=0) ** 2 / 30, rtol=1e-10)


def test_reported_standard_errors_match_the_spread_of_independent_estimates():
    """Over 400 independent seeds for one example, the standard deviation of the estimates matches the reported
    standard error (root mean square over the seeds) within 20%: the L_k delta method (an example whose weights are
    well behaved; the delta method is an approximation for large k) and the ELBO's over S = 10 draws. With 400
    seeds the spread itself is known to about 3.5% (1 / sqrt(2 * 399))."""
    model = small_model()
    x = data(model, n=1)
    lk = [iw_bound(model, x, k=100, seed=s) for s in range(400)]
    spread = np.std([r["iw_bound"] for r in lk], ddof=1)
    reported = np.sqrt(np.mean([r["se"] ** 2 for r in lk]))
    assert 0.8 < spread / reported < 1.25, (spread, reported)
    elbo = [evaluate_elbo(model, x, seed=s, samples=10) for s in range(400)]
    for key in ("neg_elbo", "nll"):
        spread = np.std([r[key] for r in elbo], ddof=1)
        reported = np.sqrt(np.mean([r[f"{key}_se"] ** 2 for r in elbo]))
        assert 0.8 < spread / reported < 1.25, (key, spread, reported)


def test_grid_log_likelihood_matches_the_likelihood_ops():
    for likelihood in ("bernoulli", "gaussian"):
        model = small_model(likelihood=likelihood)
        x, z = data(model, n=5), np.random.default_rng(0).standard_normal((7, 2))
        grid = model.log_likelihood_grid(x, z)                                # (5, 7)
        for g in range(7):
            ref = -model.reconstruction_nll(x, np.repeat(z[g:g + 1], 5, axis=0))
            np.testing.assert_allclose(grid[:, g], ref, rtol=1e-11)


def linear_gaussian_model():
    """hidden=() and a Gaussian likelihood: x = z W + b + sigma noise, so p(x) = N(b, W^T W + sigma^2 I) and
    p(z|x) is Gaussian, both in closed form."""
    model = small_model(hidden=(), likelihood="gaussian", x_dim=5, seed=3)
    model.params["dec.logvar"][...] = np.log(0.3)
    return model


def test_exact_log_px_matches_linear_gaussian_closed_form():
    model = linear_gaussian_model()
    x = model.device.asarray(np.random.default_rng(2).standard_normal((6, 5)))
    W, b = model.params["dec.out.W"], model.params["dec.out.b"]             # (Z, D), (D,)
    var = model.config["sigma_min"]**2 + float(np.exp(model.params["dec.logvar"]))   # learned, floored
    truth = scipy.stats.multivariate_normal(b, W.T @ W + var * np.eye(5)).logpdf(x)
    ex = exact_log_px(model, x, tol=1e-9, max_points=2_000_000)   # this p(z|x) is narrower than q: halve once
    assert ex["quadrature_error"] < 1e-8 and ex["converged"]
    np.testing.assert_allclose(ex["per_example"], truth, rtol=1e-9)
    # the gap is KL(q(z|x) || p(z|x)), with the exact Gaussian posterior N(m, S)
    S = np.linalg.inv(np.eye(2) + W @ W.T / var)
    mu, logvar = model.encode(x)
    for n in range(6):
        m = S @ W @ (x[n] - b) / var
        q_var = np.exp(logvar[n])
        kl = 0.5 * (np.trace(np.linalg.solve(S, np.diag(q_var))) + (m - mu[n]) @ np.linalg.solve(S, m - mu[n])
                    - 2 + np.linalg.slogdet(S)[1] - np.sum(logvar[n]))
        assert ex["per_example"][n] - ex["per_example_elbo"][n] == pytest.approx(kl, rel=1e-7, abs=1e-9)


def test_quadrature_elbo_matches_the_closed_form_kl():
    """With the N(0, I) prior, the ELBO on the grid (every term summed on the grid, no closed form) equals
    E_q[log p(x|z)] by scipy.integrate.quad minus the closed-form KL (kl.py, through model.elbo_terms)."""
    model = small_model(z_dim=1)
    x = data(model, n=4)
    ex = exact_log_px(model, x)
    assert ex["converged"] and ex["elbo_quadrature_error"] < 1e-6
    _, kl = model.elbo_terms(x, np.zeros((4, 1)))                           # closed form: the noise is unused
    mu, logvar = model.encode(x)
    for n in range(4):
        q = scipy.stats.norm(mu[n, 0], np.exp(logvar[n, 0] / 2))
        def integrand(z, q=q, n=n):
            return -q.pdf(z) * model.reconstruction_nll(x[n:n + 1], np.array([[z]]))[0]
        e_loglik, _ = scipy.integrate.quad(integrand, q.mean() - 12 * q.std(), q.mean() + 12 * q.std(), limit=200,
                                           epsabs=0, epsrel=1e-12)
        assert ex["per_example_elbo"][n] == pytest.approx(e_loglik - kl[n], rel=1e-9)


def test_exact_log_px_matches_scipy_quad_in_one_dimension():
    model = small_model(z_dim=1)
    x = data(model, n=3)
    ex = exact_log_px(model, x)
    for n in range(3):
        def integrand(z, n=n):
            return np.exp(-model.reconstruction_nll(x[n:n + 1], np.array([[z]]))[0]) * scipy.stats.norm.pdf(z)
        value, _ = scipy.integrate.quad(integrand, -12, 12, limit=200, epsabs=0, epsrel=1e-12)
        assert ex["per_example"][n] == pytest.approx(np.log(value), rel=1e-9)


@pytest.mark.parametrize("z_dim", [1, 2])
def test_exact_log_px_blocks_do_not_change_the_result(device, z_dim):
    """Tiles of 333 points (Z = 1) or 777 (Z = 2: whole rows, one at a time, so tiles start at odd indices too,
    where the 2h subgrid is the other half of the points) against the whole grid at once."""
    model = small_model(device, z_dim=z_dim)
    x = data(model, n=7)
    a = exact_log_px(model, x, max_elements=7 * (333 if z_dim == 1 else 777))
    b = exact_log_px(model, x, max_elements=10**8)                          # the whole grid at once
    np.testing.assert_allclose(a["per_example"], b["per_example"], rtol=1e-13)
    np.testing.assert_allclose(a["per_example_elbo"], b["per_example_elbo"], rtol=1e-11)
    assert a["grid_points"] == b["grid_points"]


def test_exact_log_px_warns_at_its_grid_cap():
    """A grid cap too small for the tolerance: a RuntimeWarning naming the grid size and the error reached, and
    converged False; the result is still the best sum on that grid."""
    model = small_model()
    x = data(model, n=4)
    with pytest.warns(RuntimeWarning, match=r"grid cap: \d+ grid points .*max_points=60.* quadrature error .* > "
                                            r"tol 1e-06"):
        ex = exact_log_px(model, x, max_points=60)
    assert not ex["converged"] and ex["grid_points"] <= 60
    assert max(ex["quadrature_error"], ex["elbo_quadrature_error"]) > 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                      # converging: no warning
        assert exact_log_px(model, x)["converged"]


def test_quadrature_error_estimate_does_not_see_the_box(monkeypatch):
    """quadrature_error compares the grid with its own 2h subgrid: it measures discretisation, and the mass
    outside the box only through the grid's edge. A box cut at 2 sd of each q (the prior's box shrunk to a
    point) converges, reports an error below 1e-7, and is wrong by over 100 times that (evaluation.md)."""
    model = small_model(z_dim=1)
    x = data(model, n=4)
    full = exact_log_px(model, x, tol=1e-9)
    monkeypatch.setattr(model.prior, "quadrature_box", lambda params: (np.zeros(1), np.zeros(1), 10.0))
    cut = exact_log_px(model, x, radius=2.0, tol=1e-4)
    assert cut["converged"] and cut["quadrature_error"] < 1e-7
    assert np.max(np.abs(cut["per_example"] - full["per_example"])) > 100 * cut["quadrature_error"]


def test_bounds_are_ordered_elbo_lk_log_px(device):
    model = small_model(device)
    x = data(model, n=12)
    ex = exact_log_px(model, x)
    assert ex["quadrature_error"] < 1e-6 and ex["q_mass_error"] < 1e-8
    assert np.all(ex["per_example_elbo"] < ex["per_example"])          # deterministic: ELBO < log p(x)
    # L_k is a random variable whose mean lies between them: average 10 independent estimates
    lk = np.stack([iw_bound(model, x, k=1000, seed=s)["per_example"] for s in range(10)])
    mean, se = lk.mean(axis=0), lk.std(axis=0, ddof=1) / np.sqrt(10)
    assert np.all(ex["per_example_elbo"] < mean) and np.all(mean < ex["per_example"] + 4 * se)


def test_exact_needs_a_small_latent():
    with pytest.raises(ValueError, match="z_dim 1 or 2"):
        exact_log_px(small_model(z_dim=3), data(small_model(z_dim=3)))


def test_active_units_and_kl_decomposition():
    model = small_model(z_dim=3)
    x = data(model, n=60)
    model.params["enc.mu.W"][:, 2] = 0.0                   # latent 2's mean no longer depends on x
    au = active_units(model, x)
    assert au["active_units"] == 2 and au["variance"][2] < 1e-20
    dec = kl_decomposition(model, x, samples=20)
    _, closed_kl = numpy_elbo_terms(model, x, np.zeros((1, 60, 3)))
    assert dec["kl"] == pytest.approx(np.mean(closed_kl), rel=1e-12)         # the closed form, in NumPy
    info, marginal = surgery_reference(model, x, 20, 0)
    assert dec["mutual_information"] == pytest.approx(np.mean(info), rel=1e-12)
    # KL(q(z) || p(z)) estimated on its own, mean_n [log q(z_n) - log N(z_n; 0, I)] at the same draws: it
    # differs from the reported one (the closed-form KL minus I_q) by the Monte Carlo error of the sampled KL
    sampled_kl = info + marginal                                               # per draw: mean_n log q(z|x)/p(z)
    se = np.std(sampled_kl, ddof=1) / np.sqrt(20)
    assert abs(dec["marginal_kl"] - np.mean(marginal)) < 4 * se, (dec["marginal_kl"], np.mean(marginal), se)
    assert 0 < dec["mutual_information"] <= dec["log_n"]
    assert dec["kl_se"] == 0.0 and dec["mutual_information_se"] == pytest.approx(dec["marginal_kl_se"], rel=1e-9)
    for name in ("enc.mu.W", "enc.logvar.W", "enc.0.W"):  # an encoder that ignores x: I_q(x; z) = 0
        model.params[name][...] = 0.0
    assert abs(kl_decomposition(model, x)["mutual_information"]) < 1e-12


def surgery_reference(model, x, samples, seed, log_prior=None):
    """Per draw, unchunked, from the draws z_n = mu_n + sigma_n eps_n of RNG(seed): I_q(x; z) = mean_n [log q(z_n|x_n)
    - log q(z_n)] and KL(q(z) || p(z)) = mean_n [log q(z_n) - log p(z_n)], with every (N, N, Z) pair from
    scipy.stats at once and scipy's logsumexp; ``log_prior(z)`` (default N(0, I)). Returns two (S,) arrays."""
    mu, logvar = (to_host(a) for a in model.encode(x))
    sigma, n = np.exp(logvar / 2), x.shape[0]
    if log_prior is None:
        def log_prior(z):
            return scipy.stats.norm.logpdf(z).sum(axis=1)
    rng, info, marginal = RNG(seed), [], []
    for _ in range(samples):
        z = mu + sigma * rng.generator.standard_normal(mu.shape)
        log_q_nm = scipy.stats.norm.logpdf(z[:, None, :], mu[None, :, :], sigma[None, :, :]).sum(axis=2)  # (N, N)
        log_qz = scipy.special.logsumexp(log_q_nm, axis=1) - np.log(n)
        info.append(np.mean(scipy.stats.norm.logpdf(z, mu, sigma).sum(axis=1) - log_qz))
        marginal.append(np.mean(log_qz - log_prior(z)))
    return np.array(info), np.array(marginal)


def test_kl_decomposition_in_blocks_equals_the_unchunked_sum(device):
    """Blocks of 5 x 5 pairs (max_elements=50, Z = 2) over N = 53 examples, uneven at the edges, against the
    unchunked reference: I_q and its standard error to 1e-12."""
    model = small_model(device, x_dim=6)
    x = data(model, n=53)
    dec = kl_decomposition(model, x, samples=4, seed=3, max_elements=50)
    info, _ = surgery_reference(model, x, 4, 3)
    assert dec["mutual_information"] == pytest.approx(np.mean(info), rel=1e-12, abs=1e-12)
    assert dec["mutual_information_se"] == pytest.approx(np.std(info, ddof=1) / 2, rel=1e-9)
    whole = kl_decomposition(model, x, samples=4, seed=3, max_elements=10**8)
    assert dec["mutual_information"] == pytest.approx(whole["mutual_information"], rel=1e-13)


def traced_peak(f):
    """The peak of traced (NumPy and Python) allocations while f runs, in bytes, and f's result."""
    tracemalloc.start()
    try:
        result = f()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_kl_decomposition_memory_is_bounded():
    """N = 2000 examples, Z = 2: one (N, N, Z) float64 array is 64 MB, and the unchunked computation holds several
    (214 MB traced); in blocks the whole call stays under 40 MB."""
    model = small_model(x_dim=6)
    x = data(model, n=2000)
    peak, dec = traced_peak(lambda: kl_decomposition(model, x, samples=2))
    assert peak < 40e6, f"kl_decomposition traced {peak / 1e6:.0f} MB"
    assert 0 < dec["mutual_information"] <= dec["log_n"]


def test_exact_log_px_memory_is_bounded():
    """N = 2000 examples: the old blocks of 4096 grid points held (N, 4096, Z) arrays of 131 MB each (720 MB
    traced); budgeted by N, the whole quadrature stays under 64 MB."""
    model = small_model(x_dim=6)
    x = data(model, n=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                     # the cap is the point here
        peak, ex = traced_peak(lambda: exact_log_px(model, x, max_points=20_000))
    assert peak < 64e6, f"exact_log_px traced {peak / 1e6:.0f} MB"
    assert ex["grid_points"] > 4096 and np.all(np.isfinite(ex["per_example"]))


@pytest.mark.parametrize("dtype, limit", [("float64", 160e6), ("float32", 80e6)])
def test_iw_bound_default_rows_keep_784_dim_memory_modest(dtype, limit):
    """A Fashion-MNIST-sized model (D = 784, H = 400): one call of the forward holds ~35 KB per decoder row in
    float64, so the old default of 65536 rows meant 2.3 GB (here, k = 120 for 100 examples in one call: 420 MB
    traced); the default budget keeps iw_bound near 125 MB (float64) and 62 MB (float32) for any k."""
    model = VAE(784, 8, hidden=(400,), dtype=dtype, seed=0)
    x = model.device.asarray(np.random.default_rng(0).uniform(size=(100, 784)), dtype=dtype)
    peak, r = traced_peak(lambda: iw_bound(model, x, k=120, progress=False))
    assert peak < limit, f"iw_bound traced {peak / 1e6:.0f} MB"
    assert np.all(np.isfinite(r["per_example"]))


def test_evaluation_reads_the_clamped_posterior_as_training_does():
    """An encoder whose raw log-variance is 50, beyond the clamp at 40: evaluation's q is training's q, with
    logvar = 40 (model.encode, model.elbo_terms, model.log_weights): the ELBO's KL is the closed form at 40, the
    L_1 log-weight is scipy's densities at sigma = e^20, and the surgery's KL is the same."""
    model = small_model(z_dim=2)
    model.params["enc.logvar.W"][...] = 0.0
    model.params["enc.logvar.b"][...] = 50.0
    x = data(model, n=5)
    mu, logvar = model.encode(x)
    assert np.all(logvar == LOGVAR_MAX)
    kl_closed = np.mean(0.5 * np.sum(np.exp(40.0) + mu**2 - 1.0 - 40.0, axis=1))
    elbo = evaluate_elbo(model, x, seed=2)
    eps = RNG(2).normal((5, 2), model.device, "float64")
    z = mu + np.exp(20.0) * eps
    assert elbo["kl"] == pytest.approx(kl_closed, rel=1e-13)
    assert elbo["nll"] == pytest.approx(np.mean(model.reconstruction_nll(x, z)), rel=1e-13)
    ref = (-model.reconstruction_nll(x, z) + scipy.stats.norm.logpdf(z).sum(axis=1)
           - scipy.stats.norm.logpdf(z, mu, np.exp(20.0)).sum(axis=1))
    np.testing.assert_allclose(iw_bound(model, x, k=1, seed=2)["per_example"], ref, rtol=1e-12)
    assert kl_decomposition(model, x, samples=3)["kl"] == pytest.approx(kl_closed, rel=1e-13)


def test_evaluate_report(device):
    model = small_model(device)
    x = data(model, n=20)
    r = evaluate(model, x, k=50, progress=False)
    nll, kl = numpy_elbo_terms(model, x, RNG(0).normal((10, 20, 2), model.device, "float64"))   # samples 10, seed 0
    assert r["nll"] == pytest.approx(np.mean(nll), rel=1e-12) and r["kl"] == pytest.approx(np.mean(kl), rel=1e-12)
    assert r["neg_elbo"] == pytest.approx(np.mean(nll) + np.mean(kl), rel=1e-12)
    assert r["neg_elbo_se"] == pytest.approx(np.sqrt(np.sum(np.var(nll + kl, axis=0, ddof=1)) / 10) / 20, rel=1e-9)
    assert r["bits_per_dim"] == pytest.approx(r["neg_elbo"] / (10 * np.log(2)))
    assert r["bits_per_dim_se"] == pytest.approx(r["neg_elbo_se"] / (10 * np.log(2)))
    assert r["neg_log_px"] <= r["neg_iw_bound"] and r["posterior_gap"] > 0
    assert {"active_units", "mutual_information", "marginal_kl", "quadrature_error", "elbo_quadrature_error",
            "quadrature_converged"} <= set(r)
    for key in ("neg_elbo", "nll", "neg_iw_bound", "mutual_information", "marginal_kl"):
        assert r[f"{key}_se"] > 0, key
    assert r["samples"] == 10 and r["quadrature_converged"] is True


def test_sections_come_in_order_each_as_soon_as_computed(monkeypatch):
    """evaluate_sections hands each section over before the next starts: an error in L_k comes after the ELBO."""
    model = small_model()
    x = data(model, n=8)
    names = [name for name, _ in evaluate_sections(model, x, k=5, progress=False)]
    assert names == ["elbo", "iw_bound", "exact", "active_units", "surgery"]

    def fail(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(evaluate_module, "iw_bound", fail)
    sections = evaluate_sections(model, x, k=5)
    assert next(sections)[0] == "elbo"
    with pytest.raises(MemoryError):
        next(sections)


def test_progress_bars(capsys):
    """progress True draws tqdm bars on stderr; None (the default) draws none when stderr is not a terminal."""
    model = small_model()
    x = data(model, n=6)
    iw_bound(model, x, k=5, progress=True)
    kl_decomposition(model, x, samples=2, progress=True)
    exact_log_px(model, x, progress=True)
    err = capsys.readouterr().err
    assert "L_k" in err and "ELBO surgery" in err and "quadrature" in err
    evaluate(model, x, k=5)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_bad_batch_size(batch_size):
    model = small_model()
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_elbo(model, data(model), batch_size=batch_size)
    with pytest.raises(ValueError, match="k must"):
        iw_bound(model, data(model), k=0)


@pytest.mark.parametrize("call, needle", [
    (lambda m, x: evaluate_elbo(m, x, samples=0), "samples"),
    (lambda m, x: evaluate(m, x, samples=1.5), "samples"),
    (lambda m, x: iw_bound(m, x, max_rows=0), "max_rows"),
    (lambda m, x: iw_bound(m, x, progress="yes"), "progress"),
    (lambda m, x: kl_decomposition(m, x, max_elements=-5), "max_elements"),
    (lambda m, x: exact_log_px(m, x, max_points=0), "max_points"),
    (lambda m, x: exact_log_px(m, x, tol=0.0), "tol"),
])
def test_bad_arguments_name_themselves(call, needle):
    model = small_model()
    with pytest.raises(ValueError, match=needle):
        call(model, data(model, n=3))


LIKELIHOOD_OPTIONS = [dict(likelihood="gaussian", gaussian_variance="fixed", sigma=0.7),
                      dict(likelihood="gaussian", gaussian_variance="per-dim", sigma_min=0.2),
                      dict(likelihood="gaussian", gaussian_variance="per-element", sigma_min=0.2),
                      dict(likelihood="categorical", levels=5)]


@pytest.mark.parametrize("options", LIKELIHOOD_OPTIONS, ids=lambda o: o.get("gaussian_variance", "categorical"))
def test_grid_log_likelihood_of_every_likelihood_option(device, options):
    """The matrix-product forms of model.log_likelihood_grid against the likelihood ops (model.reconstruction_nll),
    and evaluate's bits per dimension: reported for the discrete categorical, not for a Gaussian density."""
    model = VAE(6, 2, hidden=(4,), dtype="float64", device=device, seed=0, **options)
    r = np.random.default_rng(1)
    for p in model.params.values():
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)))
    x = model.device.asarray(r.uniform(size=(5, 6)))
    z = r.standard_normal((7, 2))
    grid = to_host(model.log_likelihood_grid(x, model.device.asarray(z)))                    # (5, 7)
    for g in range(7):
        ref = -model.reconstruction_nll(x, model.device.asarray(np.repeat(z[g:g + 1], 5, axis=0)))
        np.testing.assert_allclose(grid[:, g], to_host(ref), rtol=1e-11)
    report = evaluate(model, x, k=5)
    assert ("bits_per_dim" in report) == (model.config["likelihood"] == "categorical")


# ---- a mixture prior (derivations/prior.md#evaluation-with-a-mixture-prior) ----------------------------------------

def mog_model(z_dim=1, device="cpu", components=3, seed=0):
    model = VAE(8, z_dim, hidden=(6,), dtype="float64", device=device, seed=seed, prior="mog",
                prior_components=components)
    r = np.random.default_rng(seed + 100)
    for p in model.params.values():
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)))
    return model


def mog_density(model, z):
    """p(z) of the model's mixture, from scipy.stats densities; z: (G, Z) host."""
    logits, mu, logvar = (to_host(model.params[f"prior.{k}"]) for k in ("logits", "mu", "logvar"))
    pi = np.exp(logits - np.max(logits))
    pi /= pi.sum()
    return sum(pi[c] * scipy.stats.multivariate_normal(mu[c], np.diag(np.exp(logvar[c]))).pdf(z)
               for c in range(len(pi)))


def test_log_weights_with_mog_prior_against_scipy(device):
    model = mog_model(z_dim=2, device=device)
    x = data(model, n=4)
    eps = np.random.default_rng(3).standard_normal((3, 4, 2))
    lw = to_host(model.log_weights(x, model.device.asarray(eps)))
    mu, logvar = (to_host(a) for a in model.encode(x))
    for i in range(3):
        z = mu + np.exp(logvar / 2) * eps[i]
        ref = (-to_host(model.reconstruction_nll(x, model.device.asarray(z))) + np.log(mog_density(model, z))
               - scipy.stats.norm.logpdf(z, mu, np.exp(logvar / 2)).sum(axis=1))
        np.testing.assert_allclose(lw[i], ref, rtol=1e-12)


def test_exact_log_px_with_mog_prior_matches_scipy_quad():
    """log p(x) = log of the integral of p(x|z) p(z) with the mixture p(z), and the ELBO on the grid with the KL
    summed on the grid, both against scipy.integrate.quad; then ELBO < L_k < log p(x)."""
    model = mog_model(z_dim=1)
    model.params["prior.mu"][:, 0] = [-4.0, 0.5, 7.0]            # a component beyond the box [-6, 6]
    model.params["prior.logvar"][:, 0] = [-1.0, 0.0, -2.0]
    x = data(model, n=3)
    ex = exact_log_px(model, x)
    assert ex["quadrature_error"] < 1e-8 and ex["q_mass_error"] < 1e-8
    mu, logvar = (to_host(a) for a in model.encode(x))
    quad = lambda f: scipy.integrate.quad(f, -20, 20, points=[-4.0, 0.5, 7.0], limit=400, epsabs=0,  # noqa: E731
                                          epsrel=1e-12)[0]
    for n in range(3):
        def log_lik(z, n=n):
            return -float(to_host(model.reconstruction_nll(x[n:n + 1], model.device.asarray([[z]])))[0])

        def log_prior(z):
            return float(np.log(mog_density(model, np.array([[z]]))))

        q = scipy.stats.norm(mu[n, 0], np.exp(logvar[n, 0] / 2))
        log_px = np.log(quad(lambda z: np.exp(log_lik(z) + log_prior(z))))
        elbo = quad(lambda z, q=q: q.pdf(z) * (log_lik(z) + log_prior(z) - q.logpdf(z)))
        assert ex["per_example"][n] == pytest.approx(log_px, rel=1e-9)
        assert ex["per_example_elbo"][n] == pytest.approx(elbo, rel=1e-8)
    lk = iw_bound(model, x, k=2000, seed=0)["per_example"]
    assert np.all(ex["per_example_elbo"] < lk)
    # L_k is a bound in expectation only: one estimate can exceed log p(x) (here by 0.03 nats for example 1, where
    # q misses a mode of p(z|x) and the weights are heavy-tailed); the mean of 20 estimates stays below it
    lk = np.stack([iw_bound(model, x, k=2000, seed=s)["per_example"] for s in range(20)])
    mean, se = lk.mean(axis=0), lk.std(axis=0, ddof=1) / np.sqrt(20)
    assert np.all(mean < ex["per_example"] + 1e-3 + 4 * se)


def test_kl_decomposition_with_mog_prior():
    """The mixture's average KL is the sampled estimate at the draws that estimate I_q: it matches the KL by
    quadrature within 4 standard errors, and I_q and the marginal KL match an unchunked reference; its reported
    se is the spread of the 50 per-draw averages, near the se the per-example quadrature spreads give."""
    model = mog_model(z_dim=1)
    x = data(model, n=40)
    dec = kl_decomposition(model, x, samples=50, seed=2)
    # with no closed-form KL, the reported marginal KL is exactly mean_n [log q(z_n) - log p(z_n)] at the draws:
    # against the unchunked reference, with the mixture's density from scipy.stats, and its se the draws' spread
    info, marginal = surgery_reference(model, x, 50, 2, log_prior=lambda z: np.log(mog_density(model, z)))
    assert dec["mutual_information"] == pytest.approx(np.mean(info), rel=1e-10)
    assert dec["marginal_kl"] == pytest.approx(np.mean(marginal), rel=1e-10)
    assert dec["marginal_kl_se"] == pytest.approx(np.std(marginal, ddof=1) / np.sqrt(50), rel=1e-8)
    mu, logvar = (to_host(a) for a in model.encode(x))
    sigma = np.exp(logvar[:, 0] / 2)
    grid = np.linspace(-25, 25, 200_001)[:, None]
    log_p = np.log(mog_density(model, grid))
    kls, sds = [], []
    for n in range(40):
        log_q = scipy.stats.norm.logpdf(grid[:, 0], mu[n, 0], sigma[n])
        w = np.exp(log_q) * (grid[1, 0] - grid[0, 0])
        kls.append(np.sum(w * (log_q - log_p)))
        sds.append(np.sqrt(np.sum(w * (log_q - log_p - kls[-1]) ** 2)))
    se = np.sqrt(np.mean(np.square(sds)) / (40 * 50))
    assert abs(dec["kl"] - np.mean(kls)) < 4 * se, (dec["kl"], np.mean(kls), se)
    assert 0.6 < dec["kl_se"] / se < 1.6, (dec["kl_se"], se)    # 50 draws: the se itself is known to ~10%


# ---- minivae evaluate: the table, section by section ------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from minivae.cli import main
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--epochs", "1", "--hidden", "8", "--z-dim", "2", "--out", str(out)]) == 0
    return str(out / "checkpoint.npz")


def test_cli_prints_each_estimate_with_its_standard_error(checkpoint, tmp_path, capsys):
    from minivae.cli import main
    capsys.readouterr()
    assert main(["evaluate", checkpoint, "--k", "20", "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    row = next(line for line in printed.splitlines() if "negative ELBO (mean of 10 draws)" in line)
    assert f"{result['neg_elbo']:.4f} ± {result['neg_elbo_se']:.4f}" in row
    assert "negative L_k, k = 20 (a bound in expectation)" in printed
    assert printed.index("negative ELBO (mean") < printed.index("L_k") < printed.index("quadrature")
    for key in ("neg_elbo", "nll", "kl", "neg_iw_bound", "neg_log_px", "quadrature_neg_elbo", "posterior_gap",
                "quadrature_error", "elbo_quadrature_error", "grid_points", "active_units", "mutual_information",
                "marginal_kl", "neg_elbo_se", "neg_iw_bound_se", "mutual_information_se", "marginal_kl_se"):
        assert key in result, key
    assert result["complete"] is True and math.isfinite(result["neg_elbo_se"])


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt, 130), ("SIGTERM", 130), (MemoryError, 2)])
def test_cli_keeps_the_sections_computed_before_an_interruption(checkpoint, tmp_path, capsys, monkeypatch,
                                                                 error, code):
    """Ctrl-C, SIGTERM or a memory error during L_k: the ELBO is already on screen and in --json (complete:
    false), the error is one line, and the SIGTERM handler is restored afterwards."""
    from minivae.cli import main

    def interrupted(*args, **kwargs):
        if error == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)                                                  # the handler interrupts the wait
        raise error
    monkeypatch.setattr(evaluate_module, "iw_bound", interrupted)
    capsys.readouterr()
    before = signal.getsignal(signal.SIGTERM)
    assert main(["evaluate", checkpoint, "--json", str(tmp_path / "p.json")]) == code
    assert signal.getsignal(signal.SIGTERM) is before
    captured = capsys.readouterr()
    assert "negative ELBO (mean of 10 draws)" in captured.out and "L_k" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    partial = json.loads((tmp_path / "p.json").read_text())
    assert partial["complete"] is False and "neg_elbo_se" in partial and "neg_iw_bound" not in partial


def test_auto_skips_the_quadrature_for_a_large_data_set(monkeypatch):
    """exact=None runs the quadrature over z for z_dim <= 2 only while examples x dimensions stay small: on
    10,000 Fashion-MNIST images it pairs each with up to 10^6 grid points (hours); the section says so instead."""
    import minivae.evaluate as evaluate_module
    from minivae.evaluate import evaluate_sections
    from minivae.model import VAE
    model = VAE(6, 2, hidden=(4,), dtype="float64")
    x = np.random.default_rng(0).uniform(size=(20, 6))
    monkeypatch.setattr(evaluate_module, "AUTO_EXACT_MAX", 100)
    sections = dict(evaluate_sections(model, x, k=2, samples=2, progress=False))
    assert "--exact yes" in sections["exact"]["exact_skipped"] and "neg_log_px" not in sections["exact"]
    forced = dict(evaluate_sections(model, x, k=2, samples=2, exact=True, progress=False))
    assert np.isfinite(forced["exact"]["neg_log_px"])
    monkeypatch.setattr(evaluate_module, "AUTO_EXACT_MAX", 1000)
    assert "neg_log_px" in dict(evaluate_sections(model, x, k=2, samples=2, progress=False))["exact"]
