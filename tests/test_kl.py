"""Tests for minivae/kl.py: the closed-form KL(N(mu, diag sigma^2) || N(0, I)) against a Monte Carlo estimate
and scipy.stats, also at extreme values in float32 and beyond the clamp, and its derivative against the closed
form (its gradient check is tests/test_ops.py's)."""
import math

import numpy as np
import scipy.stats

from minivae.backend import to_host
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.reparam import LOGVAR_MAX, reparameterize_forward


def test_kl_matches_monte_carlo(rng):
    """KL = E_q[log q(z) - log p(z)], estimated with 10^6 samples of z ~ q and scipy.stats' log densities:
    the closed form lies within 5 Monte Carlo standard errors, and within 1e-2 relative."""
    mu = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [-0.3, 1.5, 0.1]])
    logvar = np.array([[-1.0, 0.5, 0.0], [0.3, -0.2, 1.0], [-2.0, 0.0, 0.7]])
    kl, _ = kl_std_normal_forward(mu, logvar)
    n = 1_000_000
    for i in range(mu.shape[0]):
        sigma = np.exp(logvar[i] / 2)
        z = mu[i] + sigma * rng.standard_normal((n, mu.shape[1]))
        log_ratio = (scipy.stats.norm.logpdf(z, mu[i], sigma) - scipy.stats.norm.logpdf(z)).sum(axis=1)
        est, se = log_ratio.mean(), log_ratio.std() / np.sqrt(n)
        assert abs(kl[i] - est) < 5 * se, (i, kl[i], est, se)
        assert abs(kl[i] - est) < 1e-2 * kl[i]


def test_kl_is_zero_at_the_prior_and_positive_elsewhere(device, rng):
    zero, _ = kl_std_normal_forward(device.asarray(np.zeros((2, 4))), device.asarray(np.zeros((2, 4))))
    np.testing.assert_array_equal(to_host(zero), [0.0, 0.0])
    kl, _ = kl_std_normal_forward(device.asarray(rng.standard_normal((50, 4))),
                                  device.asarray(rng.standard_normal((50, 4))))
    assert np.all(to_host(kl) > 0)


def test_kl_backward_matches_closed_form_derivative(rng):
    """dmu = dkl mu and dlogvar = dkl (exp(logvar) - 1) / 2, written independently."""
    mu, logvar, dkl = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    _, cache = kl_std_normal_forward(mu, logvar)
    dmu, dlogvar = kl_std_normal_backward(dkl, cache)
    np.testing.assert_allclose(dmu, dkl[:, None] * mu, rtol=1e-15)
    np.testing.assert_allclose(dlogvar, dkl[:, None] * (np.exp(logvar) - 1) / 2, rtol=1e-14)


# ---- at extreme values, against Monte Carlo (false alarm 6e-7 per row, fixed seed) -----------------------------

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
