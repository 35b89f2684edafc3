"""Tests for minivae/likelihoods.py: the NLLs against scipy.stats and scipy.special on every device, and the
compositions' backwards against finite differences (float64, <= 1e-6; each pair's own gradient check is
tests/test_ops.py's): Bernoulli, Gaussian (every variance, with the floor on a learned one) and categorical over
discretised intensities; and at the edges, the Bernoulli NLL at extreme logits against a 400-digit decimal
reference and the Gaussian at extreme log-variances against its float64 formula (marker ``edge``)."""
import itertools
import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import scipy.special
import scipy.stats

from _extremes import DTYPES, close, logvar_grid
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


# ---- at the edges: Bernoulli at extreme logits (a 400-digit decimal reference), the Gaussian at extreme
# log-variances (its float64 formula); the tolerances: tests/_extremes.py ------------------------------------

LOGITS = [0.0, 1e-8, -1e-8, 20.0, -20.0, 50.0, -50.0, 100.0, -100.0, 120.0, -120.0, 1e4, -1e4, 1e38, -1e38]
LOGITS64 = LOGITS + [1e308, -1e308]
TARGETS = [0.0, 0.5, 1.0]


def _log1p_exp_neg(t):
    """log(1 + exp(-t)) for a Decimal t >= 0; the series below 1e-30, where 1 + e would drop digits."""
    e = (-t).exp()
    return e - e * e / 2 if e < Decimal("1e-30") else (1 + e).ln()


def bernoulli_reference(a, x):
    """(nll, dnll/da) = (softplus(a) - x a, sigmoid(a) - x) at the float value a, in 400-digit decimal, formed
    the textbook way (no care about cancellation: the precision absorbs it)."""
    with localcontext() as ctx:
        ctx.prec = 400
        A, X = Decimal(float(a)), Decimal(float(x))
        softplus = max(A, Decimal(0)) + _log1p_exp_neg(abs(A))
        e = (-abs(A)).exp()
        sigmoid = 1 / (1 + e) if A >= 0 else e / (1 + e)
        return float(softplus - X * A), float(sigmoid - X)


def bernoulli_grid(dtype):
    logits = LOGITS64 if dtype == "float64" else LOGITS
    a = np.array([v for v in logits for _ in TARGETS], dtype=dtype)[:, None]       # (M, 1): one logit a row
    x = np.array([t for _ in logits for t in TARGETS], dtype=dtype)[:, None]
    return a, x


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_nll_at_extreme_logits_matches_a_decimal_reference(dtype):
    """Logits {0, +-1e-8, +-20, +-50, +-100, +-120, +-1e4, +-1e38, and +-1e308 in float64} x targets {0, 0.5, 1}:
    the loss is finite, >= 0, and equals the 400-digit reference to 1e-12 (float64) / 1e-6 (float32) relative;
    the gradient sigmoid(a) - x is finite and within one unit of 1's last place of the exact value (it is
    formed next to 1: see test_bernoulli_gradient_is_accurate_in_absolute_terms)."""
    a, x = bernoulli_grid(dtype)
    nll, cache = bernoulli_nll_forward(x, a)
    grad = bernoulli_nll_backward(np.ones(len(a), dtype=dtype), cache)
    assert nll.dtype == grad.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(nll)) and np.all(nll >= 0) and np.all(np.isfinite(grad))
    eps = float(np.finfo(dtype).eps)
    for i in range(len(a)):
        ref_nll, ref_grad = bernoulli_reference(a[i, 0], x[i, 0])
        assert close(nll[i], ref_nll, dtype), (a[i, 0], x[i, 0], nll[i], ref_nll)
        assert abs(float(grad[i, 0]) - ref_grad) <= eps, (a[i, 0], x[i, 0], grad[i, 0], ref_grad)


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_confident_correct_prediction_gives_zero_loss_and_zero_gradient(dtype):
    """Where the exact loss log(1 + exp(-|a|)) is below the smallest float (|a| >= 1e4; |a| = 120 in float32),
    a right answer gives exactly 0 loss and exactly 0 gradient, not a tiny negative number or a NaN."""
    big = [1e4, 1e38] + ([1e308] if dtype == "float64" else [120.0])
    a = np.array([v for v in big] + [-v for v in big], dtype=dtype)[:, None]
    x = np.array([1.0] * len(big) + [0.0] * len(big), dtype=dtype)[:, None]
    nll, cache = bernoulli_nll_forward(x, a)
    grad = bernoulli_nll_backward(np.ones(len(a), dtype=dtype), cache)
    np.testing.assert_array_equal(nll, 0.0)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.edge
def test_bernoulli_gradient_is_accurate_in_absolute_terms():
    """The decision pinned here: the gradient is formed as sigmoid(a) - x, accurate to half a unit in the last
    place of 1 (1.1e-16 in float64), not relative to its own size. At x = 1, a = 40 it is exactly 0 where the
    exact value is -sigmoid(-40) = -4.2e-18. That error is below the resolution of every quantity it is added
    to (dlogits feeds dW = h^T dlogits beside O(1) terms), so the cheaper form is kept; the loss, by contrast,
    is formed without cancellation and keeps its 4.2e-18 (derivations/likelihoods.md#bernoulli-backward)."""
    a, x = np.array([[40.0, -40.0]]), np.array([[1.0, 0.0]])
    nll, cache = bernoulli_nll_forward(x, a)
    np.testing.assert_allclose(nll, [2 * math.log1p(math.exp(-40.0))], rtol=1e-15)
    grad = bernoulli_nll_backward(np.ones(1), cache)
    assert grad[0, 0] == 0.0                                   # exact: -4.25e-18, rounded away next to 1
    assert grad[0, 1] == pytest.approx(scipy.special.expit(-40.0), rel=1e-15)   # formed away from 1: exact


@pytest.mark.edge
def test_bernoulli_small_loss_keeps_its_relative_accuracy_in_float32():
    """The loss of a right answer at a = 20 is 2.06e-9; float32 keeps it (softplus(a) - x a would give 0)."""
    nll, _ = bernoulli_nll_forward(np.ones((1, 1), np.float32), np.full((1, 1), 20.0, np.float32))
    assert nll[0] == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-6)


def gaussian_reference(x, mean, logvar):
    """0.5 (log 2 pi + logvar + (x - mean)^2 exp(-logvar)) and its derivatives, in float64."""
    sq = (x - mean) ** 2 * math.exp(-logvar)
    return (0.5 * (math.log(2 * math.pi) + logvar + sq), -(x - mean) * math.exp(-logvar), 0.5 * (1.0 - sq))


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_nll_at_extreme_logvar(dtype):
    """x = 0, mean {0, +-1e3}, logvar {-100, ..., 100}: wherever the exact value fits the dtype, the NLL and its
    gradients are finite and match the float64 formula; where it does not (float32, logvar = -100, residual 1e3:
    2.7e49) the result is +inf (the gradients +-inf), never NaN. No clamp: a learned decoder variance goes
    through the model's floor sigma_min^2 (derivations/likelihoods.md#why-a-floor); a residual of 0 at
    logvar = -100 in float32 once gave 0 * inf = NaN."""
    mean, lv = logvar_grid(dtype)
    x = np.zeros_like(mean)
    with np.errstate(over="ignore"):
        nll, cache = gaussian_nll_forward(x, mean, lv)
        dmean, dlv = gaussian_nll_backward(np.ones(len(x), dtype=dtype), cache)
    big = float(np.finfo(dtype).max)
    for i in range(len(x)):
        refs = gaussian_reference(0.0, float(mean[i, 0]), float(lv[i, 0]))
        for got, ref in zip((nll[i], dmean[i, 0], dlv[i, 0]), refs, strict=True):
            assert not np.isnan(got), (mean[i, 0], lv[i, 0])
            if abs(ref) > big:
                assert got == (math.inf if ref > 0 else -math.inf), (mean[i, 0], lv[i, 0], got, ref)
            else:
                assert close(got, ref, dtype), (mean[i, 0], lv[i, 0], got, ref)
    assert dtype == "float64" or np.sum(np.isinf(nll)) == 2          # the two residuals of 1e3 at logvar -100
