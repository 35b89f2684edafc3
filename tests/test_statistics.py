"""Statistical tests of the stochastic parts, with fixed seeds. Each test's false-alarm rate (the chance that a
correct implementation fails it at a fresh seed) is <= 1e-3, stated per test; with the seed fixed the outcome
is deterministic.

- The sampler z = mu + exp(logvar/2) eps in float32 and float64: the Dvoretzky-Kiefer-Wolfowitz bound on the
  empirical CDF against N(mu, sigma^2), mean and variance within 5 standard errors, columns uncorrelated.
- The closed-form KL against Monte Carlo with 10^6 samples at extreme but unclamped values, in float32, and
  beyond the clamp (where the sampler and the KL must still describe the same q).
- Unbiasedness: the mean of many reparameterised gradient estimates against the exact gradient of the
  expectation, computed by quadrature in one dimension from values of f only (the score-function identities),
  for the ops and for the whole model's encoder gradients.
"""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from minivae.backend import get_device
from minivae.kl import kl_std_normal_forward
from minivae.layers import linear_backward, linear_forward
from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
from minivae.model import VAE
from minivae.reparam import LOGVAR_MAX, reparameterize_backward, reparameterize_forward
from minivae.rng import RNG

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


def monte_carlo_kl(mu, logvar, n, seed):
    """E_q[log q(z) - log p(z)] per row by Monte Carlo with the normal densities, z from minivae's sampler;
    returns the estimates and their standard errors. q's variance is exp(min(logvar, LOGVAR_MAX))."""
    rng = np.random.default_rng(seed)
    est, se = [], []
    for i in range(mu.shape[0]):
        eps = rng.standard_normal((n, mu.shape[1]))
        z, _ = reparameterize_forward(np.broadcast_to(mu[i], eps.shape), np.broadcast_to(logvar[i], eps.shape), eps)
        sigma = np.exp(np.minimum(logvar[i], LOGVAR_MAX) / 2)
        # log N(z; mu, sigma^2) - log N(z; 0, 1), from the densities' definitions (the 1/2 log 2 pi cancels)
        log_ratio = (-0.5 * ((z - mu[i]) / sigma) ** 2 - np.log(sigma) + 0.5 * z * z).sum(axis=1)
        est.append(log_ratio.mean())
        se.append(log_ratio.std() / math.sqrt(n))
    return np.array(est), np.array(se)


def test_kl_matches_monte_carlo_at_extreme_values_in_float32_and_beyond_the_clamp():
    """10^6 samples per row. Rows: a very narrow q far out, a very wide q (logvar 35, just inside the clamp), a
    mixed row, and a row beyond the clamp (logvar 60, read as 40 by both the KL and the sampler). The closed
    form (float64, and float32 to 1e-6 of it) lies within 5 Monte Carlo standard errors of the estimate
    (false alarm 6e-7 per row) and within 1e-2 relative."""
    mu = np.array([[30.0, -30.0, 0.0, 5.0], [0.0, 1.0, -1.0, 0.0], [-4.0, 0.0, 2.0, 0.5], [0.0, 0.0, 0.0, 1.0]])
    logvar = np.array([[-20.0, -20.0, -20.0, -20.0], [35.0, 30.0, 35.0, 20.0], [-5.0, 10.0, 0.0, -1.0],
                       [60.0, 0.0, 0.0, 0.0]])
    kl, _ = kl_std_normal_forward(mu, logvar)
    kl32, _ = kl_std_normal_forward(mu.astype(np.float32), logvar.astype(np.float32))
    np.testing.assert_allclose(kl32, kl, rtol=1e-6)
    est, se = monte_carlo_kl(mu, logvar, 1_000_000, seed=5)
    assert np.all(np.abs(kl - est) < 5 * se), (kl, est, se)
    assert np.all(np.abs(kl - est) < 1e-2 * kl), (kl, est)


# ---- unbiasedness of the reparameterised gradient ----------------------------------------------------------

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
