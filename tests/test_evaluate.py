"""Tests for minivae/evaluate.py: the held-out ELBO, the importance-weighted bound, the exact log p(x) by
quadrature against closed forms and scipy.integrate, and the KL decomposition."""
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from minivae.backend import to_host
from minivae.evaluate import (_grid_log_likelihood, active_units, evaluate, evaluate_elbo, exact_log_px,
                              iw_bound, kl_decomposition, log_weights)
from minivae.model import VAE
from minivae.rng import RNG


def small_model(device="cpu", z_dim=2, hidden=(6,), likelihood="bernoulli", seed=0, x_dim=10):
    model = VAE(x_dim, z_dim, hidden=hidden, likelihood=likelihood, dtype="float64", device=device, seed=seed)
    r = np.random.default_rng(seed + 100)
    for p in model.params.values():                       # a model with some structure, not the init
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)))
    return model


def data(model, n=25, seed=1):
    r = np.random.default_rng(seed)
    x = r.uniform(size=(n, model.x_dim))
    if model.likelihood == "bernoulli":
        x = (x < 0.4).astype(float)
    return model.device.asarray(x)


def test_elbo_matches_per_example_terms_and_batching(device):
    model = small_model(device)
    x = data(model)
    full = evaluate_elbo(model, x, seed=5, batch_size=1000)
    nll, kl = model.elbo_terms(x, RNG(5).normal((25, 2), model.device, "float64"))
    assert full["nll"] == pytest.approx(float(np.mean(to_host(nll))), rel=1e-13)
    assert full["kl"] == pytest.approx(float(np.mean(to_host(kl))), rel=1e-13)
    assert full["neg_elbo"] == pytest.approx(full["nll"] + full["kl"], rel=1e-15)
    assert evaluate_elbo(model, x, seed=5, batch_size=7) == pytest.approx(full, rel=1e-13)
    assert evaluate_elbo(model, x, seed=5) == full


def test_log_weights_against_scipy_densities():
    """log w = log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma^2), each density from scipy.stats."""
    model = small_model()
    x = data(model, n=4)
    eps = np.random.default_rng(3).standard_normal((3, 4, 2))
    lw = log_weights(model, x, eps)
    mu, logvar = model.encode(x)
    for i in range(3):
        z = mu + np.exp(logvar / 2) * eps[i]
        log_px_z = -model.reconstruction_nll(x, z)
        ref = (log_px_z + scipy.stats.norm.logpdf(z).sum(axis=1)
               - scipy.stats.norm.logpdf(z, mu, np.exp(logvar / 2)).sum(axis=1))
        np.testing.assert_allclose(lw[i], ref, rtol=1e-12)


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


def test_grid_log_likelihood_matches_the_likelihood_ops():
    for likelihood in ("bernoulli", "gaussian"):
        model = small_model(likelihood=likelihood)
        x, z = data(model, n=5), np.random.default_rng(0).standard_normal((7, 2))
        grid = _grid_log_likelihood(model, x, z)                            # (5, 7)
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
    var = model.sigma_min**2 + float(np.exp(model.params["dec.logvar"]))   # the learned variance, floored
    truth = scipy.stats.multivariate_normal(b, W.T @ W + var * np.eye(5)).logpdf(x)
    ex = exact_log_px(model, x)
    assert ex["quadrature_error"] < 1e-8
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


def test_exact_log_px_matches_scipy_quad_in_one_dimension():
    model = small_model(z_dim=1)
    x = data(model, n=3)
    ex = exact_log_px(model, x)
    for n in range(3):
        def integrand(z):
            return np.exp(-model.reconstruction_nll(x[n:n + 1], np.array([[z]]))[0]) * scipy.stats.norm.pdf(z)
        value, _ = scipy.integrate.quad(integrand, -12, 12, limit=200, epsabs=0, epsrel=1e-12)
        assert ex["per_example"][n] == pytest.approx(np.log(value), rel=1e-9)


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
    assert dec["mutual_information"] + dec["marginal_kl"] == pytest.approx(dec["kl"], rel=1e-12)
    assert 0 < dec["mutual_information"] <= dec["log_n"]
    for name in ("enc.mu.W", "enc.logvar.W", "enc.0.W"):  # an encoder that ignores x: I_q(x; z) = 0
        model.params[name][...] = 0.0
    assert abs(kl_decomposition(model, x)["mutual_information"]) < 1e-12


def test_evaluate_report(device):
    model = small_model(device)
    r = evaluate(model, data(model, n=20), k=50)
    assert r["neg_elbo"] == pytest.approx(r["nll"] + r["kl"])
    assert r["bits_per_dim"] == pytest.approx(r["neg_elbo"] / (10 * np.log(2)))
    assert r["neg_log_px"] <= r["neg_iw_bound"] and r["posterior_gap"] > 0
    assert {"active_units", "mutual_information", "marginal_kl", "quadrature_error"} <= set(r)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_bad_batch_size(batch_size):
    model = small_model()
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_elbo(model, data(model), batch_size=batch_size)
    with pytest.raises(ValueError, match="k must"):
        iw_bound(model, data(model), k=0)


LIKELIHOOD_OPTIONS = [dict(likelihood="gaussian", gaussian_variance="fixed", sigma=0.7),
                      dict(likelihood="gaussian", gaussian_variance="per-dim", sigma_min=0.2),
                      dict(likelihood="gaussian", gaussian_variance="per-element", sigma_min=0.2),
                      dict(likelihood="categorical", levels=5)]


@pytest.mark.parametrize("options", LIKELIHOOD_OPTIONS, ids=lambda o: o.get("gaussian_variance", "categorical"))
def test_grid_log_likelihood_of_every_likelihood_option(device, options):
    """The matrix-product forms of _grid_log_likelihood against the likelihood ops (model.reconstruction_nll),
    and evaluate's bits per dimension: reported for the discrete categorical, not for a Gaussian density."""
    model = VAE(6, 2, hidden=(4,), dtype="float64", device=device, seed=0, **options)
    r = np.random.default_rng(1)
    for p in model.params.values():
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)))
    x = model.device.asarray(r.uniform(size=(5, 6)))
    z = r.standard_normal((7, 2))
    grid = to_host(_grid_log_likelihood(model, x, model.device.asarray(z)))                 # (5, 7)
    for g in range(7):
        ref = -model.reconstruction_nll(x, model.device.asarray(np.repeat(z[g:g + 1], 5, axis=0)))
        np.testing.assert_allclose(grid[:, g], to_host(ref), rtol=1e-11)
    report = evaluate(model, x, k=5)
    assert ("bits_per_dim" in report) == (model.likelihood == "categorical")


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
    lw = to_host(log_weights(model, x, model.device.asarray(eps)))
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
        def log_lik(z):
            return -float(to_host(model.reconstruction_nll(x[n:n + 1], model.device.asarray([[z]])))[0])

        def log_prior(z):
            return float(np.log(mog_density(model, np.array([[z]]))))

        q = scipy.stats.norm(mu[n, 0], np.exp(logvar[n, 0] / 2))
        log_px = np.log(quad(lambda z: np.exp(log_lik(z) + log_prior(z))))
        elbo = quad(lambda z: q.pdf(z) * (log_lik(z) + log_prior(z) - q.logpdf(z)))
        assert ex["per_example"][n] == pytest.approx(log_px, rel=1e-9)
        assert ex["per_example_elbo"][n] == pytest.approx(elbo, rel=1e-8)
    lk = iw_bound(model, x, k=2000, seed=0)["per_example"]
    assert np.all(ex["per_example_elbo"] < lk) and np.all(lk < ex["per_example"] + 1e-3)


def test_kl_decomposition_with_mog_prior():
    """The mixture's average KL is the sampled estimate at the draws that estimate I_q: it matches the KL by
    quadrature within 4 standard errors, and I_q + marginal KL = KL."""
    model = mog_model(z_dim=1)
    x = data(model, n=40)
    dec = kl_decomposition(model, x, samples=50, seed=2)
    assert dec["mutual_information"] + dec["marginal_kl"] == pytest.approx(dec["kl"], rel=1e-12)
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
