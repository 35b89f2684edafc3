"""Numerics at the edges, in float32 and float64: the Bernoulli NLL at extreme logits, the KL, the sampler and the
Gaussian NLL at extreme log-variances (and the clamp), log-sum-exp at +-inf and NaN, and NaN reaching the
model (NaN reaching every op: tests/test_ops.py).

References are computed independently of the code: the Bernoulli NLL and its gradient in Python's ``decimal``
at 400 significant digits (enough to hold 1e308 exactly and still keep exp(-120) = 8e-53 beside 120), the
Gaussian and the KL from their formulas in float64 with Python's ``math``, log-sum-exp by SciPy.

Tolerances: relative 1e-12 (float64) or 1e-6 (float32), plus an absolute floor of the dtype's smallest normal
number, below which a result cannot carry relative accuracy (exp(-120) = 8e-53 is 0 in float32).
"""
import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import scipy.special

from minivae.gradcheck import check_backward
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, gaussian_nll_backward,
                                 gaussian_nll_forward)
from minivae.logsumexp import logsumexp
from minivae.model import VAE
from minivae.reparam import (LOGVAR_MAX, logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward,
                             reparameterize_forward)

pytestmark = pytest.mark.edge

DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-6, "float64": 1e-12}


def close(got, ref, dtype):
    """|got - ref| <= rtol |ref| + the dtype's smallest normal number."""
    tiny = float(np.finfo(dtype).tiny)
    return abs(float(got) - ref) <= RTOL[dtype] * abs(ref) + tiny


# ---- Bernoulli from logits ---------------------------------------------------------------------------------

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


def test_bernoulli_small_loss_keeps_its_relative_accuracy_in_float32():
    """The loss of a right answer at a = 20 is 2.06e-9; float32 keeps it (softplus(a) - x a would give 0)."""
    nll, _ = bernoulli_nll_forward(np.ones((1, 1), np.float32), np.full((1, 1), 20.0, np.float32))
    assert nll[0] == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-6)


# ---- extreme log-variances: KL, the sampler, the Gaussian NLL, and the clamp ------------------------------------

LOGVARS = [-100.0, -50.0, -30.0, 0.0, 30.0, 50.0, 100.0]
MUS = [0.0, 1e3, -1e3]


def logvar_grid(dtype):
    lv = np.array([v for v in LOGVARS for _ in MUS], dtype=dtype)[:, None]              # (21, 1)
    mu = np.array([m for _ in LOGVARS for m in MUS], dtype=dtype)[:, None]
    return mu, lv


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


def gaussian_reference(x, mean, logvar):
    """0.5 (log 2 pi + logvar + (x - mean)^2 exp(-logvar)) and its derivatives, in float64."""
    sq = (x - mean) ** 2 * math.exp(-logvar)
    return (0.5 * (math.log(2 * math.pi) + logvar + sq), -(x - mean) * math.exp(-logvar), 0.5 * (1.0 - sq))


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


# ---- log-sum-exp: what tests/test_logsumexp.py does not cover ---------------------------------------------

LSE_CASES = {
    "float32 [1000, 1000]": [[1000.0, 1000.0]],
    "1e5 copies of log(1e-40)": [[math.log(1e-40)] * 100_000],
    "all -inf": [[-np.inf] * 4],
    "+inf": [[np.inf, -np.inf, 3.0]],
    "NaN with +inf": [[np.nan, np.inf]],
    "NaN with -inf": [[-np.inf, np.nan]],
    "mixed rows": [[0.0, -np.inf, 3.0], [np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0], [-1e30, -1e30, -np.inf]],
}


@pytest.mark.parametrize("case", LSE_CASES, ids=list(LSE_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_in_both_dtypes_matches_scipy(case, dtype):
    """The cases of the issue in float32 as well as float64 (tests/test_logsumexp.py runs float64 only): the
    dtype is kept, and the value is SciPy's (computed in float64 from the same inputs) to the dtype's
    tolerance; NaN rows give NaN, +inf rows +inf, all -inf rows -inf."""
    a = np.array(LSE_CASES[case], dtype=dtype)
    with np.errstate(all="ignore"):
        got = logsumexp(a, axis=1)
        ref = scipy.special.logsumexp(a.astype(np.float64), axis=1)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, ref, rtol=RTOL[dtype] * 10, atol=0)


def test_logsumexp_over_a_leading_axis_of_a_3d_array():
    a = np.random.default_rng(0).standard_normal((5, 3, 4)) * 300
    a[0, 0, :] = -np.inf
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(logsumexp(a, axis=0), scipy.special.logsumexp(a, axis=0), rtol=1e-14)
        np.testing.assert_allclose(logsumexp(a, axis=-1), scipy.special.logsumexp(a, axis=-1), rtol=1e-14)


# ---- NaN and inf at the model's boundary -----------------------------------------------------------------------

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("where", ["x NaN", "x +inf", "eps NaN", "eps -inf", "parameter NaN"])
def test_non_finite_input_gives_a_non_finite_loss_or_gradient(likelihood, where):
    """With the value checks off, as the training loop runs it (check_input=False: reading values on a device
    would be a device-to-host transfer each step), a NaN or inf in the data, the noise or a weight comes out as
    a non-finite loss or gradient, which the training loop reports (tests/test_health.py); never as a finite
    loss with finite gradients. (An infinite eps may leave the loss finite, z = -inf saturating tanh, but not
    its gradient: dlogvar = dz eps sigma / 2.) With them on, host data is refused (tests/test_checks.py)."""
    model = VAE(5, 2, hidden=(4,), likelihood=likelihood, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.uniform(size=(3, 5)), rng.standard_normal((3, 2))
    if where.startswith("x"):
        x[1, 2] = np.nan if "NaN" in where else np.inf
    elif where.startswith("eps"):
        eps[0, 1] = np.nan if "NaN" in where else -np.inf
    else:
        model.params["dec.0.W"][0, 0] = np.nan
    with np.errstate(all="ignore"):
        loss, grads, _ = model.loss_and_grads(x, eps, check_input=False)
    assert not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values()))
    if where != "eps -inf":
        assert not np.isfinite(loss)


def test_an_infinite_bias_behind_tanh_leaves_the_loss_finite():
    """Why training checks the parameters as well as the loss: tanh saturates, so an infinite hidden bias gives
    h = 1 and a finite loss, with the parameter stuck at inf (its gradient is 0)."""
    model = VAE(5, 2, hidden=(4,), dtype="float64", seed=0)
    model.params["enc.0.b"][1] = np.inf
    rng = np.random.default_rng(0)
    loss, grads, _ = model.loss_and_grads(rng.uniform(size=(3, 5)), rng.standard_normal((3, 2)))
    assert np.isfinite(loss) and grads["enc.0.b"][1] == 0.0
