"""Tests for minivae/reparam.py (each pair's own gradient check is tests/test_ops.py's): the log-variance clamp, at
the edges through the clamp (marker ``edge``), and statistically, with fixed seeds: the sampler's distribution
and the unbiasedness of the reparameterised gradient, for the ops and the whole model's encoder."""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from _extremes import DTYPES, close, logvar_grid
from minivae.backend import get_device, to_host
from minivae.gradcheck import check_backward
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.layers import linear_backward, linear_forward
from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
from minivae.model import VAE
from minivae.reparam import (LOGVAR_MAX, logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward,
                             reparameterize_forward)
from minivae.rng import RNG


@pytest.mark.parametrize("mu, logvar", [(0.0, 0.0), (3.0, -4.0), (-2.0, 2.5), (1e3, 0.7)])
def test_reparameterized_samples_match_normal(mu, logvar):
    """z = mu + exp(logvar/2) eps with eps from minivae's RNG is N(mu, exp(logvar)): a Kolmogorov-Smirnov test
    (p > 1e-3, so a correct sampler fails with probability 1e-3 at a fresh seed; the seed is fixed), and the
    sample mean and variance within 5 standard errors. A sampler that used the variance as the standard
    deviation fails all three."""
    n = 100_000
    from minivae.backend import get_device
    eps = RNG(7).normal((n, 1), get_device("cpu"), "float64")
    z, _ = reparameterize_forward(np.full((n, 1), mu), np.full((n, 1), logvar), eps)
    z = z[:, 0]
    sigma = np.exp(logvar / 2)
    assert scipy.stats.kstest(z, "norm", args=(mu, sigma)).pvalue > 1e-3
    assert abs(z.mean() - mu) < 5 * sigma / np.sqrt(n)
    # var of the sample variance of a normal: 2 sigma^4 / (n - 1)
    assert abs(z.var(ddof=1) - sigma**2) < 5 * sigma**2 * np.sqrt(2.0 / (n - 1))


def test_reparameterize_is_deterministic_given_eps(device, rng):
    mu, logvar, eps = (rng.standard_normal((5, 3)) for _ in range(3))
    z1, _ = reparameterize_forward(*(device.asarray(a) for a in (mu, logvar, eps)))
    z2, _ = reparameterize_forward(*(device.asarray(a) for a in (mu, logvar, eps)))
    np.testing.assert_array_equal(to_host(z1), to_host(z2))
    np.testing.assert_allclose(to_host(z1), mu + np.exp(logvar / 2) * eps, rtol=1e-14)


def test_logvar_clamp_is_min_with_a_flat_gradient_beyond_the_bound(device):
    """min(logvar, 40) forward; backward passes dout where logvar <= 40 and 0 beyond (the bound itself is inside:
    the derivative from the left); NaN stays NaN (derivations/reparameterization.md#the-clamp)."""
    raw = np.array([[-1e300, -3.0, 39.99, LOGVAR_MAX], [LOGVAR_MAX + 1e-9, 50.0, 1e300, np.nan]])
    out, cache = logvar_clamp_forward(device.asarray(raw))
    expected = np.array([[-1e300, -3.0, 39.99, 40.0], [40.0, 40.0, 40.0, np.nan]])
    np.testing.assert_array_equal(to_host(out), expected)
    dout = np.arange(1.0, 9.0).reshape(2, 4)
    np.testing.assert_array_equal(to_host(logvar_clamp_backward(device.asarray(dout), cache)),
                                  [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 8.0]])


# ---- at the edges: extreme log-variances through the clamp --------------------------------------------------

def clamped_kl_forward(mu, raw):
    """The model's path to the KL: the clamp at the encoder head, then the textbook closed form."""
    lv, clamp_cache = logvar_clamp_forward(raw)
    kl, kl_cache = kl_std_normal_forward(mu, lv)
    return kl, (clamp_cache, kl_cache)


def clamped_kl_backward(dkl, cache):
    clamp_cache, kl_cache = cache
    dmu, dlv = kl_std_normal_backward(dkl, kl_cache)
    return dmu, logvar_clamp_backward(dlv, clamp_cache)


def clamped_reparam_forward(mu, raw, eps):
    lv, clamp_cache = logvar_clamp_forward(raw)
    z, rep_cache = reparameterize_forward(mu, lv, eps)
    return z, (clamp_cache, rep_cache)


def clamped_reparam_backward(dz, cache):
    clamp_cache, rep_cache = cache
    dmu, dlv = reparameterize_backward(dz, rep_cache)
    return dmu, logvar_clamp_backward(dlv, clamp_cache)


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_reparam_and_kl_at_extreme_logvar(dtype):
    """logvar {-100, -50, -30, 0, 30, 50, 100} x mu {0, +-1e3}, read through the clamp at the encoder head as the
    model reads it: the KL, z and every gradient are finite in both dtypes, equal the closed form at
    min(logvar, 40), and beyond the clamp the logvar gradients are exactly 0 (derivations/kl.md#the-clamp,
    derivations/reparameterization.md#the-clamp). Without the clamp exp(100) overflows float32."""
    mu, lv = logvar_grid(dtype)
    eps = np.full_like(mu, -1.5)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # exp(-100) may underflow, nothing else
        kl, kl_cache = clamped_kl_forward(mu, lv)
        dmu_kl, dlv_kl = clamped_kl_backward(np.ones(len(mu), dtype=dtype), kl_cache)
        z, rep_cache = clamped_reparam_forward(mu, lv, eps)
        dmu_rep, dlv_rep = clamped_reparam_backward(np.full_like(z, 0.5), rep_cache)
    for a in (kl, dmu_kl, dlv_kl, z, dmu_rep, dlv_rep):
        assert a.dtype == np.dtype(dtype) and np.all(np.isfinite(a))
    for i in range(len(mu)):
        m, v = float(mu[i, 0]), float(lv[i, 0])
        c = min(v, LOGVAR_MAX)
        assert close(kl[i], 0.5 * (math.exp(c) + m * m - 1.0 - c), dtype), (m, v, kl[i])
        assert close(z[i, 0], m + math.exp(c / 2) * -1.5, dtype), (m, v, z[i, 0])
        inside = v <= LOGVAR_MAX
        assert close(dlv_kl[i, 0], 0.5 * (math.exp(c) - 1.0) if inside else 0.0, dtype), (m, v)
        assert close(dlv_rep[i, 0], 0.5 * 0.5 * -1.5 * math.exp(c / 2) if inside else 0.0, dtype), (m, v)
        assert dmu_kl[i, 0] == mu[i, 0] and dmu_rep[i, 0] == 0.5
    beyond = lv[:, 0] > LOGVAR_MAX
    assert beyond.sum() == 6 and np.all(dlv_kl[beyond] == 0) and np.all(dlv_rep[beyond] == 0)


@pytest.mark.edge
@pytest.mark.parametrize("side", ["below", "above"])
def test_clamp_gradcheck_near_the_bound(side):
    """The logvar gradient checks still hold (float64, <= 1e-6) through the clamp and the KL or the sampler, on
    either side of the bound, away from it by more than the finite-difference step: below it the ordinary
    gradient, above it exactly 0 on both sides. (The mu gradient, which the clamp does not touch, is checked at
    moderate values in tests/test_kl.py: beside a KL of 1e16 a step of 1e-5 in mu is lost to rounding.)"""
    rng = np.random.default_rng(0)
    lo, hi = (LOGVAR_MAX - 10.0, LOGVAR_MAX - 0.01) if side == "below" else (LOGVAR_MAX + 0.01, 100.0)
    mu, lv, eps = rng.standard_normal((3, 4)), rng.uniform(lo, hi, (3, 4)), rng.standard_normal((3, 4))
    kl_check = check_backward(clamped_kl_forward, lambda d, c: clamped_kl_backward(d, c)[1], (mu, lv), wrt=(1,))
    rep_check = check_backward(clamped_reparam_forward, lambda d, c: clamped_reparam_backward(d, c)[1],
                               (mu, lv, eps), wrt=(1,))
    assert max(kl_check + rep_check) <= 1e-6, (kl_check, rep_check)


# ---- statistics, with fixed seeds: each test's false-alarm rate (the chance that a correct implementation
# fails it at a fresh seed) is <= 1e-3, stated per test; with the seed fixed the outcome is deterministic ----

# The sampler in float32 and float64: the Dvoretzky-Kiefer-Wolfowitz bound on the empirical CDF against
# N(mu, sigma^2), mean and variance within 5 standard errors, columns uncorrelated.

ALPHA = 1e-3

# (mu, logvar) per latent column: the standard normal, narrow and wide, far from 0, and near both ends of use
COLUMNS = [(0.0, 0.0), (3.0, -4.0), (-2.0, 2.5), (1e3, 0.7), (-0.5, -20.0), (5.0, 30.0)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reparameterised_samples_are_normal_column_by_column(dtype):
    """n = 10^5 rows, one (mu, logvar) per column, eps from minivae's RNG. Per column: the Kolmogorov-Smirnov
    distance sup |F_n - F| below the DKW bound sqrt(log(2/a) / 2n) with a = 1e-3 / 6 (Massart's constant: a
    correct sampler exceeds it with probability <= a, so <= 1e-3 over the six columns); the mean within
    5 sigma/sqrt(n) and the variance within 5 sigma^2 sqrt(2/(n-1)) (normal tails: 6e-7 each); every pair of
    columns uncorrelated within 5/sqrt(n). A sampler that used the variance as the standard deviation, paired
    a column with another's logvar or reused noise across columns fails."""
    n, z_dim = 100_000, len(COLUMNS)
    mu = np.array([[m for m, _ in COLUMNS]] * n, dtype=dtype)
    logvar = np.array([[v for _, v in COLUMNS]] * n, dtype=dtype)
    eps = RNG(11).normal((n, z_dim), get_device("cpu"), dtype)
    z, _ = reparameterize_forward(mu, logvar, eps)
    assert z.dtype == np.dtype(dtype)
    z = z.astype(np.float64)
    a = ALPHA / z_dim
    dkw = math.sqrt(math.log(2.0 / a) / (2.0 * n))
    for j, (m, v) in enumerate(COLUMNS):
        sigma = math.exp(v / 2)
        d = scipy.stats.kstest(z[:, j], "norm", args=(m, sigma)).statistic
        assert d < dkw, (j, d, dkw)
        assert abs(z[:, j].mean() - m) < 5 * sigma / math.sqrt(n), j
        assert abs(z[:, j].var(ddof=1) / sigma**2 - 1.0) < 5 * math.sqrt(2.0 / (n - 1)), j
    corr = np.corrcoef(z, rowvar=False)
    off = corr[~np.eye(z_dim, dtype=bool)]
    assert np.max(np.abs(off)) < 5 / math.sqrt(n), off


# Unbiasedness: the mean of many reparameterised gradient estimates against the exact gradient of the
# expectation, computed by quadrature in one dimension from values of f only (the score-function identities),
# for the ops and for the whole model's encoder gradients.

X = np.array([1.0, 0.0, 1.0])          # one binary example, D = 3
W = np.array([1.5, -0.8, 0.6])         # a linear decoder from a 1-D z: logits = z W + C
C = np.array([-0.3, 0.4, 0.2])


def f_ref(z):
    """-log p(x | z) = sum_d softplus(a_d) - x_d a_d with a = z W + C, from NumPy's logaddexp: values only."""
    a = np.multiply.outer(z, W) + C
    return np.sum(np.logaddexp(0.0, a) - X * a, axis=-1)


def exact_gradient(mu, logvar):
    """d/dmu and d/dlogvar of E_{z ~ N(mu, sigma^2)}[f(z)] by quadrature over eps ~ N(0, 1), using the
    score-function identities (values of f, never its derivative):
        dE/dmu = E[f(z) eps] / sigma,     dE/dlogvar = E[f(z) (eps^2 - 1)] / 2,     z = mu + sigma eps."""
    sigma = math.exp(logvar / 2)

    def integral(g):
        value, err = scipy.integrate.quad(lambda e: f_ref(mu + sigma * e) * g(e) * scipy.stats.norm.pdf(e),
                                          -np.inf, np.inf, epsabs=1e-12, epsrel=1e-12, limit=200)
        assert err < 1e-8
        return value

    return integral(lambda e: e) / sigma, integral(lambda e: (e * e - 1.0) / 2.0)


PARAMS = [(0.3, -0.5), (-1.2, 0.8)]


@pytest.mark.parametrize("mu, logvar", PARAMS)
def test_reparameterised_gradient_is_unbiased_for_the_ops(mu, logvar):
    """2 x 10^5 per-sample pathwise gradients through the ops (reparameterize -> linear -> Bernoulli NLL and
    back): their mean lies within 5 standard errors of the exact gradient of the expectation (normal tails,
    false alarm 6e-7 per component)."""
    m = 200_000
    eps = np.random.default_rng(1).standard_normal((m, 1))
    z, rep_cache = reparameterize_forward(np.full((m, 1), mu), np.full((m, 1), logvar), eps)
    logits, lin_cache = linear_forward(z, W[None, :], C)
    nll, nll_cache = bernoulli_nll_forward(np.broadcast_to(X, (m, 3)), logits)
    dz, _, _ = linear_backward(bernoulli_nll_backward(np.ones(m), nll_cache), lin_cache)
    dmu, dlogvar = reparameterize_backward(dz, rep_cache)                 # (m, 1) each: one estimate per sample
    for samples, exact in zip((dmu[:, 0], dlogvar[:, 0]), exact_gradient(mu, logvar), strict=True):
        se = samples.std() / math.sqrt(m)
        assert abs(samples.mean() - exact) < 5 * se, (samples.mean(), exact, se)
    np.testing.assert_allclose(nll.mean(), scipy.integrate.quad(
        lambda e: f_ref(mu + math.exp(logvar / 2) * e) * scipy.stats.norm.pdf(e), -np.inf, np.inf)[0], rtol=1e-2)


@pytest.mark.parametrize("mu, logvar", PARAMS)
def test_model_encoder_gradient_is_unbiased(mu, logvar):
    """The whole model: a linear VAE (hidden=()) with z_dim 1 whose encoder gives q = N(mu, exp(logvar)) for
    the example X (weights 0, biases mu and logvar) and whose decoder is logits = z W + C. On a batch of copies
    of X, grads["enc.mu.b"] and grads["enc.logvar.b"] are the batch mean of the per-sample gradients of
    nll + KL. Over 50 batches of 4,000 their mean lies within 5 standard errors (t with 49 degrees of freedom:
    false alarm 8e-6 per component) of the exact gradient: quadrature for the expected NLL plus the KL's
    closed-form gradient (mu, (exp(logvar) - 1) / 2)."""
    model = VAE(3, 1, hidden=(), dtype="float64", seed=0)
    model.params["enc.mu.W"][...] = 0.0
    model.params["enc.mu.b"][...] = mu
    model.params["enc.logvar.W"][...] = 0.0
    model.params["enc.logvar.b"][...] = logvar
    model.params["dec.out.W"][...] = W[None, :]
    model.params["dec.out.b"][...] = C
    rng, batches, b = np.random.default_rng(2), 50, 4000
    x = np.broadcast_to(X, (b, 3)).copy()
    g = np.array([[grads["enc.mu.b"][0], grads["enc.logvar.b"][0]] for grads in
                  (model.loss_and_grads(x, rng.standard_normal((b, 1)))[1] for _ in range(batches))])
    exact = np.array(exact_gradient(mu, logvar)) + [mu, 0.5 * (math.exp(logvar) - 1.0)]
    se = g.std(axis=0, ddof=1) / math.sqrt(batches)
    assert np.all(np.abs(g.mean(axis=0) - exact) < 5 * se), (g.mean(axis=0), exact, se)
