"""Tests for minivae/kl.py: the closed-form KL(N(mu, diag sigma^2) || N(0, I)) against a Monte Carlo
estimate and scipy.stats, and its backward against finite differences (float64, <= 1e-6)."""
import numpy as np
import scipy.stats

from minivae.backend import to_host
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward


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
