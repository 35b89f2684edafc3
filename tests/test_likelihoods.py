"""Tests for minivae/likelihoods.py: the NLLs against scipy.stats and scipy.special, their backwards against
finite differences (float64, <= 1e-6), on every device."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from minivae.backend import to_host
from minivae.gradcheck import check_backward
from minivae.likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, gaussian_nll_backward,
                                 gaussian_nll_forward)

LOGVAR_SHAPES = [(), (5,), (1, 5), (4, 5)]     # a scalar, per dimension, per dimension (2-D), per element


def test_bernoulli_nll_matches_scipy(device, rng):
    """Binary targets: -sum_d log Bernoulli(x_d; sigmoid(a_d)) from scipy.stats."""
    x = (rng.uniform(size=(6, 5)) < 0.5).astype(float)
    a = rng.standard_normal((6, 5)) * 5
    nll, _ = bernoulli_nll_forward(device.asarray(x), device.asarray(a))
    ref = -scipy.stats.bernoulli.logpmf(x, scipy.special.expit(a)).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)


def test_bernoulli_nll_matches_cross_entropy_for_soft_targets(device, rng):
    """Targets in [0, 1]: -sum_d [x log sigmoid(a) + (1 - x) log(1 - sigmoid(a))] with scipy's log_expit."""
    x, a = rng.uniform(size=(6, 5)), rng.standard_normal((6, 5)) * 5
    nll, _ = bernoulli_nll_forward(device.asarray(x), device.asarray(a))
    ref = -(x * scipy.special.log_expit(a) + (1 - x) * scipy.special.log_expit(-a)).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)


def test_bernoulli_nll_stable_at_extreme_logits():
    """Logits of +-1e4 (where log(sigmoid(a)) gives -inf): finite, exact, and 0 for a confident right answer."""
    a = np.array([[1e4, -1e4, 1e4, -1e4, 40.0]])
    x = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]])
    nll, cache = bernoulli_nll_forward(x, a)
    np.testing.assert_allclose(nll, [0.0 + 0.0 + 1e4 + 1e4 + np.log1p(np.exp(-40.0))], rtol=1e-15)
    # sigmoid(a) - x is formed in float64 next to 1: its absolute resolution there is 1.1e-16
    np.testing.assert_allclose(bernoulli_nll_backward(np.ones(1), cache),
                               [[0, 0, 1, -1, -scipy.special.expit(-40.0)]], rtol=1e-12, atol=2.3e-16)


@pytest.mark.parametrize("shape", [(1, 1), (4, 5)])
def test_bernoulli_nll_backward_gradcheck(device, rng, shape):
    x, a = device.asarray(rng.uniform(size=shape)), device.asarray(rng.standard_normal(shape))
    errors = check_backward(bernoulli_nll_forward, bernoulli_nll_backward, (x, a), wrt=(1,))
    assert max(errors) <= 1e-6, errors


@pytest.mark.parametrize("logvar_shape", LOGVAR_SHAPES)
def test_gaussian_nll_matches_scipy(device, rng, logvar_shape):
    x, mean = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    logvar = rng.standard_normal(logvar_shape)
    nll, _ = gaussian_nll_forward(device.asarray(x), device.asarray(mean), device.asarray(logvar))
    ref = -scipy.stats.norm.logpdf(x, loc=mean, scale=np.exp(logvar / 2)).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)


@pytest.mark.parametrize("logvar_shape", LOGVAR_SHAPES)
def test_gaussian_nll_backward_gradcheck(device, rng, logvar_shape):
    x, mean = (device.asarray(rng.standard_normal((4, 5))) for _ in range(2))
    logvar = device.asarray(rng.standard_normal(logvar_shape))
    errors = check_backward(gaussian_nll_forward, gaussian_nll_backward, (x, mean, logvar), wrt=(1, 2))
    assert max(errors) <= 1e-6, errors


@pytest.mark.parametrize("logvar_shape", LOGVAR_SHAPES)
def test_gaussian_dlogvar_has_logvars_shape(rng, logvar_shape):
    x, mean, logvar = rng.standard_normal((4, 5)), rng.standard_normal((4, 5)), rng.standard_normal(logvar_shape)
    _, cache = gaussian_nll_forward(x, mean, logvar)
    dmean, dlogvar = gaussian_nll_backward(rng.standard_normal(4), cache)
    assert dmean.shape == (4, 5) and dlogvar.shape == logvar_shape


def test_gaussian_fixed_variance_is_scaled_squared_error(rng):
    """With logvar = log s^2 fixed, nll = |x - mean|^2 / (2 s^2) + D/2 log(2 pi s^2)."""
    x, mean, s = rng.standard_normal((3, 6)), rng.standard_normal((3, 6)), 0.3
    nll, _ = gaussian_nll_forward(x, mean, np.array(np.log(s**2)))
    ref = ((x - mean) ** 2).sum(axis=1) / (2 * s**2) + 6 / 2 * np.log(2 * np.pi * s**2)
    np.testing.assert_allclose(nll, ref, rtol=1e-13)
