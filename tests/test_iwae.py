"""Tests for minivae/iwae.py: the importance-weighted bound L_K = log (1/K) sum_i w_i from log-weights against
scipy.special.logsumexp, its backward (the normalised weights) against finite differences (float64, <= 1e-6),
and its stability for log-weights far outside the float range."""
import math

import numpy as np
import pytest
import scipy.special

from minivae.backend import to_host
from minivae.iwae import iw_bound_backward, iw_bound_forward


@pytest.mark.parametrize("k, n", [(1, 4), (3, 5), (10, 2)])
def test_iw_bound_forward_matches_scipy_logsumexp(device, rng, k, n):
    log_w = rng.standard_normal((k, n)) * 5.0
    bound, w_tilde = iw_bound_forward(device.asarray(log_w))
    np.testing.assert_allclose(to_host(bound), scipy.special.logsumexp(log_w, axis=0) - math.log(k), rtol=1e-13)
    np.testing.assert_allclose(to_host(w_tilde), scipy.special.softmax(log_w, axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_iw_bound_is_stable_for_large_log_weights(dtype):
    """Log-weights of -1e4 and +800 (their weights under- or overflow every float type): finite bounds and
    weights that sum to 1, equal to scipy's in float64."""
    log_w = np.array([[-1e4, 800.0, -5e3], [-1e4 - 2.0, 790.0, -5e3 + 1.0], [-1e4 - 50.0, 805.0, -5e3]])
    bound, w_tilde = iw_bound_forward(log_w.astype(dtype))
    assert bound.dtype == np.dtype(dtype) and np.all(np.isfinite(bound)) and np.all(np.isfinite(w_tilde))
    np.testing.assert_allclose(bound, scipy.special.logsumexp(log_w, axis=0) - math.log(3), rtol=1e-7)
    np.testing.assert_allclose(np.sum(w_tilde, axis=0), 1.0, rtol=1e-6)


def test_k_equal_1_gives_the_log_weight_and_unit_weight(rng):
    """K = 1: L_1 = log w exactly and its gradient weight is exactly 1, so the objective is the ELBO's."""
    log_w = rng.standard_normal((1, 6)) * 100.0
    bound, w_tilde = iw_bound_forward(log_w)
    np.testing.assert_array_equal(bound, log_w[0])
    np.testing.assert_array_equal(w_tilde, np.ones((1, 6)))
    dL = rng.standard_normal(6)
    np.testing.assert_array_equal(iw_bound_backward(dL, w_tilde), dL[None, :])
