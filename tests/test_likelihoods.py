"""Tests for minivae/likelihoods.py: the NLLs against scipy.stats and scipy.special, their backwards against
finite differences (float64, <= 1e-6), on every device: Bernoulli, Gaussian (every variance, with the floor on
a learned one) and categorical over discretised intensities."""
import itertools
import numpy as np
import pytest
import scipy.special
import scipy.stats

from minivae.backend import to_host
from minivae.data import load_dataset
from minivae.gradcheck import check_backward
from minivae.likelihoods import (SIGMA_MIN, bernoulli_nll_backward, bernoulli_nll_forward,
                                 categorical_nll_backward, categorical_nll_forward, gaussian_nll_backward,
                                 gaussian_nll_forward, level_onehot, log_softmax, variance_floor_backward,
                                 variance_floor_forward)

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


@pytest.mark.parametrize("logvar_shape", LOGVAR_SHAPES)
def test_gaussian_nll_matches_scipy(device, rng, logvar_shape):
    x, mean = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    logvar = rng.standard_normal(logvar_shape)
    nll, _ = gaussian_nll_forward(device.asarray(x), device.asarray(mean), device.asarray(logvar))
    ref = -scipy.stats.norm.logpdf(x, loc=mean, scale=np.exp(logvar / 2)).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)


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


# ---- the variance floor: log(sigma_min^2 + exp(l)) ----------------------------------------------------------------

@pytest.mark.parametrize("sigma_min", [SIGMA_MIN, 0.5])
def test_variance_floor_matches_its_definition(device, rng, sigma_min):
    """Against log(sigma_min^2 + exp(l)) by numpy's logaddexp, from l far below to far above log sigma_min^2."""
    c = 2 * np.log(sigma_min)
    raw = np.concatenate([c + np.linspace(-40, 40, 81), [-1e4, 1e4], rng.standard_normal(5) * 3])
    out, _ = variance_floor_forward(device.asarray(raw), sigma_min)
    np.testing.assert_allclose(to_host(out), np.logaddexp(c, raw), rtol=1e-14, atol=0)
    assert np.all(to_host(out) >= c)                                # the variance never drops below sigma_min^2


def floored_gaussian_forward(x, mean, raw, sigma_min=0.3):
    """The model's Gaussian with a learned variance: nll(x; mean, log(sigma_min^2 + exp(raw)))."""
    logvar, floor_cache = variance_floor_forward(raw, sigma_min)
    nll, cache = gaussian_nll_forward(x, mean, logvar)
    return nll, (cache, floor_cache)


def floored_gaussian_backward(dnll, cache):
    cache, floor_cache = cache
    dmean, dlogvar = gaussian_nll_backward(dnll, cache)
    return dmean, variance_floor_backward(dlogvar, floor_cache)


@pytest.mark.parametrize("raw_shape", [(), (5,), (4, 5)], ids=["shared", "per-dim", "per-element"])
def test_floored_gaussian_matches_scipy(device, rng, raw_shape):
    x, mean, raw = rng.standard_normal((4, 5)), rng.standard_normal((4, 5)), rng.standard_normal(raw_shape) - 2
    nll, _ = floored_gaussian_forward(*(device.asarray(a) for a in (x, mean, raw)))
    ref = -scipy.stats.norm.logpdf(x, loc=mean, scale=np.sqrt(0.3**2 + np.exp(raw))).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)


@pytest.mark.parametrize("raw_shape", [(), (5,), (4, 5)], ids=["shared", "per-dim", "per-element"])
def test_floored_gaussian_backward_gradcheck(device, rng, raw_shape):
    """The learned variances, through the floor, as the model chains them: gradients of the mean and the raw l."""
    x, mean = (device.asarray(rng.standard_normal((4, 5))) for _ in range(2))
    raw = device.asarray(rng.standard_normal(raw_shape) - 2)
    errors = check_backward(floored_gaussian_forward, floored_gaussian_backward, (x, mean, raw), wrt=(1, 2))
    assert max(errors) <= 1e-6, errors


def test_fixed_variance_gaussian_gradcheck(device, rng):
    """sigma fixed: logvar a constant 0-d array, only the mean has a gradient."""
    x, mean = (device.asarray(rng.standard_normal((4, 5))) for _ in range(2))
    logvar = device.asarray(np.array(2 * np.log(0.2)))
    errors = check_backward(lambda m: gaussian_nll_forward(x, m, logvar),
                            lambda d, c: gaussian_nll_backward(d, c)[0], (mean,))
    assert max(errors) <= 1e-6, errors


def test_learned_variance_is_unbounded_and_the_floor_bounds_it():
    """A mean exactly on the data (a pixel that is always 0, decoded as 0): without the floor the NLL falls without
    bound as logvar -> -inf, with a gradient that keeps pushing down; with it the NLL is >= D/2 log(2 pi sigma_min^2),
    reached smoothly, and the push on the raw logvar vanishes."""
    x = np.zeros((3, 4))
    raw = np.array([-10.0, -50.0, -200.0, -700.0])                  # exp(-logvar) overflows below -709
    unfloored = [gaussian_nll_forward(x, x, np.array(r))[0].sum() for r in raw]
    assert all(a > b for a, b in itertools.pairwise(unfloored)) and unfloored[-1] < -4000
    raw = np.append(raw, -1e4)                                      # the floor is fine far beyond that
    bound = 3 * 4 / 2 * np.log(2 * np.pi * SIGMA_MIN**2)          # N D/2 log(2 pi sigma_min^2), all 3 examples
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        for r in raw:
            nll, cache = floored_gaussian_forward(x, x, np.array(r), SIGMA_MIN)
            assert nll.sum() >= bound
            if r <= -50:                                            # well below log sigma_min^2 = -13.8
                assert nll.sum() == pytest.approx(bound, rel=1e-12)
            _, draw = floored_gaussian_backward(np.ones(3), cache)
            if r > -709:
                _, dlogvar = gaussian_nll_backward(np.ones(3), gaussian_nll_forward(x, x, np.array(r))[1])
                assert dlogvar == 6.0                               # unfloored: 1/2 per element, for ever
            assert 0.0 <= draw <= 6.0 * np.exp(r - 2 * np.log(SIGMA_MIN))   # floored: sigmoid(l - c) -> 0


# ---- categorical over L discretised intensities ---------------------------------------------------------------

def test_log_softmax_matches_scipy_and_is_stable(device, rng):
    a = rng.standard_normal((3, 4, 6)) * 10
    a[0, 0] = [1e4, -1e4, 0, 5e3, -3, 1e4]                           # exp would overflow without the shift
    np.testing.assert_allclose(to_host(log_softmax(device.asarray(a))), scipy.special.log_softmax(a, axis=-1),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_level_onehot_rounds_to_the_nearest_level(device, rng, levels):
    k = rng.integers(0, levels, (5, 7))
    x = k / (levels - 1)                                            # on the grid: exactly level k
    x[0, :3] = [0.0, 1.0, 1.4 / (levels - 1)]                       # the ends, and a value between levels
    k[0, :3] = [0, levels - 1, 1]
    grid = device.asarray(np.arange(levels), dtype="float64")
    t = to_host(level_onehot(device.asarray(x), grid))
    assert t.shape == (5, 7, levels) and t.dtype == np.float64
    np.testing.assert_array_equal(t, np.eye(levels)[k])
    t32 = to_host(level_onehot(device.asarray(x, dtype="float32"), device.asarray(np.arange(levels), "float32")))
    np.testing.assert_array_equal(t32, np.eye(levels)[k])           # x = k / (L - 1) in float32: still level k


def test_a_nan_pixel_gives_a_nan_categorical_loss_not_a_finite_one(device):
    """A NaN intensity has no level: its target row is NaN, so its example's loss is NaN (NaN in, NaN out) while
    the other examples' losses are unchanged."""
    x = np.full((3, 4), 0.5)
    x[1, 2] = np.nan
    grid = device.asarray(np.arange(5.0))
    logits = device.asarray(np.random.default_rng(0).standard_normal((3, 4, 5)))
    nll = to_host(categorical_nll_forward(level_onehot(device.asarray(x), grid), logits)[0])
    clean = to_host(categorical_nll_forward(level_onehot(device.asarray(np.full((3, 4), 0.5)), grid), logits)[0])
    assert np.isnan(nll[1]) and np.isfinite(nll[[0, 2]]).all()
    np.testing.assert_array_equal(nll[[0, 2]], clean[[0, 2]])


def test_level_onehot_of_the_digits_is_exact_with_17_levels():
    """The 8x8 digits as minivae loads them are (0..16) / 16 in float32: 17 levels recover every pixel exactly."""
    x = load_dataset("digits").x_test.astype(np.float32)            # (360, 64)
    t = level_onehot(x, np.arange(17.0, dtype=np.float32))
    np.testing.assert_array_equal(np.argmax(t, axis=2) / 16.0, x)
    np.testing.assert_array_equal(t.sum(axis=2), 1.0)


@pytest.mark.parametrize("levels", [2, 5])
def test_categorical_nll_matches_scipy(device, rng, levels):
    """-sum_d log softmax(a_d)[k_d] against scipy's log_softmax, and against scipy.stats.multinomial with one
    trial (a single draw of a categorical) for each pixel."""
    n, d = 4, 3
    k = rng.integers(0, levels, (n, d))
    a = rng.standard_normal((n, d, levels)) * 3
    t = np.eye(levels)[k]                                           # (N, D, L)
    nll, _ = categorical_nll_forward(device.asarray(t), device.asarray(a))
    logp = scipy.special.log_softmax(a, axis=2)
    ref = -np.take_along_axis(logp, k[..., None], axis=2)[..., 0].sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref, rtol=1e-12)
    ref_multinomial = -scipy.stats.multinomial.logpmf(t, 1, np.exp(logp)).sum(axis=1)
    np.testing.assert_allclose(to_host(nll), ref_multinomial, rtol=1e-10)


def test_categorical_nll_stable_at_extreme_logits():
    """Logits of +-1e4: finite and exact; the gradient softmax - t stays in [-1, 1]."""
    t = np.eye(3)[[[0, 1]]]                                         # (1, 2, 3): levels 0 and 1
    a = np.array([[[1e4, -1e4, 0.0], [1e4, -1e4, 1e4]]])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        nll, cache = categorical_nll_forward(t, a)
        da = categorical_nll_backward(np.ones(1), cache)
    np.testing.assert_allclose(nll, [0.0 + 2e4 + np.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(da, [[[0, 0, 0], [0.5, -1, 0.5]]], atol=1e-300)
