"""Tests for minivae/reparam.py: the sampler's distribution (statistically) and its backward (finite
differences, float64, <= 1e-6), and the log-variance clamp."""
import numpy as np
import pytest
import scipy.stats

from minivae.backend import to_host
from minivae.reparam import (LOGVAR_MAX, logvar_clamp_backward, logvar_clamp_forward, reparameterize_forward)
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

