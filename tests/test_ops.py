"""Every generic check, on every forward/backward pair of minivae (tests/_ops.py: the registry, from
minivae/ops.py: pairs(); a pair added to the package is found there and gets every check below). The module
files (tests/test_layers.py, ...) keep each op's forward against an independent reference and its own behaviours.

1. The gradient check: central differences (h = 1e-5) of the forward against backward, in float64, for a random
   upstream gradient and every differentiated input, relative error <= 1e-6 (minivae/gradcheck.py:
   check_backward), at the sizes of _ops.CASES (all 1; distinct; drawn), on every device. The strict device
   (slow) runs one case and must give the CPU's numbers; the GPU runs every case and must give them to rounding.
2. The dtype axis: forward and backward keep the dtype, the shapes and the array type (on every device), and in
   float32 they agree with float64 to float32's rounding (torch.testing's float32 tolerance: 1e-5 + 1.3e-6 |x|).
3. Hygiene, in float32 and float64: a zero upstream gradient gives exactly zero; backward is linear in the upstream
   gradient; two runs are bitwise identical; nothing mutates its inputs, its cache or the upstream gradient.
4. NaN in, NaN out: a NaN in any input reaches the forward's output, a NaN upstream reaches every gradient.
5. Finite in, finite out, on each input's ``wide`` range (up to 1e300 where nothing can overflow): at the
   corners of the ranges, and at values drawn by hypothesis.
6. The gradient check at shapes and values drawn by hypothesis (float64, the ``moderate`` ranges).

The hypothesis profile is fixed (tests/conftest.py: derandomize=True, no deadline, no database), so the suite is
deterministic; each property sets max_examples to what the mutants of ``tests/test_ops.py``'s report need.
"""
import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from _ops import (CASES, DEVICE_CASES, PAIR_IDS, PAIRS, as_tuple, case_inputs, fingerprint, make_inputs,
                  on_device, shape_of)
from minivae.backend import to_host
from minivae.gradcheck import check_backward, numerical_gradient

LIMIT = 1e-6                                        # the float64 gradient check's relative error
F32_ATOL, F32_RTOL = 1e-5, 1.3e-6                   # torch.testing's defaults for float32
DTYPES = ["float32", "float64"]


@pytest.fixture(scope="module", params=PAIRS, ids=PAIR_IDS)   # not per function: hypothesis reruns the test body
def pair(request):
    return request.param


# ---- 1. the gradient check, on every device -------------------------------------------------------------------

def test_gradient_check(pair, device):
    """Every case on the CPU and the GPU, DEVICE_CASES on the strict device; off the CPU the forward output and
    the gradients also equal the CPU's, to 1e-12 relative (bitwise on the strict device, NumPy underneath)."""
    cpu = device.name == "cpu"
    for case in CASES if device.name != "strict" else DEVICE_CASES:
        inputs = case_inputs(pair, case)
        errors = check_backward(pair.forward, pair.backward, list(on_device(device, inputs)), wrt=pair.spec.wrt)
        assert max(errors) <= LIMIT, (pair.key, case, errors)
        if cpu:
            continue
        out, cache = pair.forward(*inputs)
        dout = np.random.default_rng(1).standard_normal(out.shape)
        grads = as_tuple(pair.backward(dout, cache))
        dev_out, dev_cache = pair.forward(*on_device(device, inputs))
        dev_grads = as_tuple(pair.backward(device.asarray(dout), dev_cache))
        for got, ref in zip((dev_out,) + dev_grads, (out,) + grads, strict=True):
            np.testing.assert_allclose(to_host(got), ref, rtol=1e-12, atol=1e-12 * np.max(np.abs(ref), initial=0),
                                       err_msg=f"{pair.key} {case}")


# ---- 2. dtypes, shapes and array types -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_shapes_and_array_type_are_kept(pair, device, dtype):
    """The forward's output has the inputs' dtype and array type; backward returns one gradient per
    differentiated input, each with that input's shape, dtype and array type."""
    inputs = on_device(device, case_inputs(pair, "distinct", dtype))
    out, cache = pair.forward(*inputs)
    kind = type(inputs[pair.spec.wrt[0]])
    assert type(out) is kind and out.dtype == device.dtype(dtype), (pair.key, type(out), out.dtype)
    dout = device.asarray(np.random.default_rng(2).standard_normal(tuple(out.shape)), dtype)
    grads = as_tuple(pair.backward(dout, cache))
    assert len(grads) == len(pair.spec.wrt), pair.key
    for i, g in zip(pair.spec.wrt, grads, strict=True):
        assert type(g) is kind and g.shape == inputs[i].shape and g.dtype == inputs[i].dtype, (pair.key, i)


@pytest.mark.parametrize("case", CASES)
def test_float32_agrees_with_float64(pair, case):
    """Inputs rounded to float32: the float32 output and gradients equal the float64 ones (same inputs, same
    upstream gradient) within 1e-5 + 1.3e-6 |x| per element. A float32 path that loses more than rounding (a
    constant, an accumulator or a branch of lower precision) fails."""
    inputs32 = case_inputs(pair, case, "float32")
    inputs64 = tuple(a if isinstance(a, float) else a.astype(np.float64) for a in inputs32)
    out32, cache32 = pair.forward(*inputs32)
    out64, cache64 = pair.forward(*inputs64)
    dout = np.random.default_rng(3).standard_normal(out64.shape).astype(np.float32)
    got = (out32,) + as_tuple(pair.backward(dout, cache32))
    ref = (out64,) + as_tuple(pair.backward(dout.astype(np.float64), cache64))
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=F32_RTOL, atol=F32_ATOL, err_msg=f"{pair.key} {case}")


# ---- 3. hygiene ------------------------------------------------------------------------------------------------

HYGIENE_RTOL = {"float32": 2e-5, "float64": 1e-12}


def run(pair, seed, dtype):
    """Inputs (sizes drawn from ``seed``), forward output, cache and an upstream gradient (N(0, 1), not all
    ones) for ``pair``."""
    rng = np.random.default_rng(seed)
    inputs, _ = make_inputs(pair, rng, dtype)
    out, cache = pair.forward(*inputs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return inputs, out, cache, dout


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_upstream_gradient_gives_exact_zero(pair, dtype):
    _, out, cache, _ = run(pair, 0, dtype)
    for g in as_tuple(pair.backward(np.zeros_like(out), cache)):
        assert np.all(g == 0), (pair.key, g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_is_linear_in_the_upstream_gradient(pair, dtype):
    """backward(a d1 + b d2) = a backward(d1) + b backward(d2), to rounding; exactly for a = -1 (negation)."""
    _, out, cache, d1 = run(pair, 1, dtype)
    d2 = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    a, b = np.asarray(0.75, dtype), np.asarray(-2.5, dtype)
    g1, g2 = as_tuple(pair.backward(d1, cache)), as_tuple(pair.backward(d2, cache))
    g12 = as_tuple(pair.backward(a * d1 + b * d2, cache))
    rtol = HYGIENE_RTOL[dtype]
    for x1, x2, x12 in zip(g1, g2, g12, strict=True):
        expect = a.astype(np.float64) * x1 + b.astype(np.float64) * x2
        scale = np.max(np.abs(a * x1)) + np.max(np.abs(b * x2)) if x1.size else 0.0
        np.testing.assert_allclose(x12, expect, rtol=rtol, atol=rtol * scale, err_msg=pair.key)
    for g, gneg in zip(g1, as_tuple(pair.backward(-d1, cache)), strict=True):
        np.testing.assert_array_equal(gneg, -g, err_msg=pair.key)


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_runs_are_bitwise_identical(pair, dtype):
    first, second = run(pair, 3, dtype), run(pair, 3, dtype)
    np.testing.assert_array_equal(first[1], second[1])
    again = as_tuple(pair.backward(second[3], second[2]))
    for g, h in zip(as_tuple(pair.backward(first[3], first[2])), again, strict=True):
        assert g.tobytes() == h.tobytes(), pair.key


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_cache_and_upstream_gradient_are_not_mutated(pair, dtype):
    """Neither forward nor backward writes into its inputs, its cache or the upstream gradient, and backward can
    be called twice on one cache with the same result."""
    rng = np.random.default_rng(5)
    inputs, _ = make_inputs(pair, rng, dtype)
    before = fingerprint(inputs)
    out, cache = pair.forward(*inputs)
    assert fingerprint(inputs) == before, f"{pair.key}: forward mutated its inputs"
    dout = rng.standard_normal(out.shape).astype(dtype)
    cache_before, dout_before, out_before = fingerprint(cache), fingerprint(dout), fingerprint(out)
    grads = [np.copy(g) for g in as_tuple(pair.backward(dout, cache))]
    assert fingerprint(cache) == cache_before, f"{pair.key}: backward mutated its cache"
    assert fingerprint(dout) == dout_before, f"{pair.key}: backward mutated the upstream gradient"
    assert fingerprint(inputs) == before and fingerprint(out) == out_before, f"{pair.key}: backward mutated data"
    for g, again in zip(grads, as_tuple(pair.backward(dout, cache)), strict=True):
        assert g.tobytes() == again.tobytes(), f"{pair.key}: a second backward on one cache differs"


# ---- 4. NaN in, NaN out ---------------------------------------------------------------------------------------

@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_any_input_reaches_the_output(pair, dtype):
    """A NaN in any array input of any forward gives a NaN output (SciPy's convention too; minivae never turns
    it into a finite number). Backward may still be finite where the local derivative does not depend on the
    value (the identity, relu's mask, dz/dmu = 1), so the NaN is reported by the forward's output: the loss."""
    for i, arg in enumerate(pair.spec.args):
        if arg.kind == "scalar":
            continue
        inputs, _ = make_inputs(pair, np.random.default_rng(i), dtype)
        inputs = list(inputs)
        inputs[i] = inputs[i].copy()
        inputs[i].reshape(-1)[0] = np.nan
        with np.errstate(invalid="ignore"):
            out, _ = pair.forward(*inputs)
        assert np.any(np.isnan(out)), (pair.key, i)


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_upstream_gradient_reaches_every_gradient(pair, dtype):
    inputs, _ = make_inputs(pair, np.random.default_rng(0), dtype)
    out, cache = pair.forward(*inputs)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    dout.reshape(-1)[0] = np.nan
    with np.errstate(invalid="ignore"):
        for j, g in enumerate(as_tuple(pair.backward(dout, cache))):
            assert np.any(np.isnan(g)), (pair.key, j)


# ---- 5. finite in, finite out -------------------------------------------------------------------------------

def wide_range(arg, dtype):
    return arg.wide32 if dtype == "float32" else arg.wide64


def corner_values(arg, dtype):
    """The values an argument takes at the corners: each end of its range, filled in (and, for a real array, the
    ends mixed); a one-hot target has one value."""
    if arg.kind == "scalar":
        return arg.moderate
    if arg.kind == "unit":
        return (0.0, 1.0)
    if arg.kind == "onehot":
        return (None,)
    return wide_range(arg, dtype) + ("mixed",)


def corner_inputs(pair, values, dtype):
    rng = np.random.default_rng(0)
    inputs, dims = make_inputs(pair, rng, dtype, where="wide", dims=CASES["distinct"])
    out = []
    for arg, a, v in zip(pair.spec.args, inputs, values, strict=True):
        if v is None or arg.kind == "scalar":
            out.append(a if v is None else v)
        elif v == "mixed":
            lo, hi = wide_range(arg, dtype)
            out.append(np.where(rng.uniform(size=shape_of(arg, dims)) < 0.5, lo, hi).astype(dtype))
        else:
            out.append(np.full(shape_of(arg, dims), v, dtype=dtype))
    return tuple(out)


def assert_finite_forward_and_backward(pair, inputs, dout_for):
    with np.errstate(under="ignore"):
        out, cache = pair.forward(*inputs)
        assert np.all(np.isfinite(out)), (pair.key, inputs, out)
        for g in as_tuple(pair.backward(dout_for(out), cache)):
            assert np.all(np.isfinite(g)), (pair.key, inputs, g)


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_at_the_corners_of_the_wide_ranges(pair, dtype):
    """Every combination of each input at the low end, the high end or both mixed (a residual of 0 beside a
    variance of 1e-44, logits of 1e308 beside -1e308): the output and the gradients for an upstream gradient
    of 10 are finite."""
    for values in itertools.product(*(corner_values(a, dtype) for a in pair.spec.args)):
        inputs = corner_inputs(pair, values, dtype)
        assert_finite_forward_and_backward(pair, inputs, lambda out: np.full_like(out, 10.0))


def _floats(lo, hi, dtype, avoid=0.0):
    width = 32 if dtype == "float32" else 64
    lo, hi = (float(np.float32(lo)), float(np.float32(hi))) if width == 32 else (lo, hi)
    s = st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, width=width)
    if avoid:
        s = s.map(lambda v: v if abs(v) >= avoid else math.copysign(2 * avoid, v))
    return s


@st.composite
def op_inputs(draw, pair, dtype, where):
    """Inputs of ``pair``: named dimensions of 1-4, values from the ``where`` ("wide" or "moderate") ranges."""
    dims = {d: draw(st.integers(1, 4)) for d in "NDABZCKL"}
    dims["L"] = max(dims["L"], 2)
    out = []
    for arg in pair.spec.args:
        shape = shape_of(arg, dims)
        if arg.kind == "scalar":
            out.append(draw(st.floats(*arg.moderate)))
        elif arg.kind == "unit":
            out.append(draw(arrays(dtype, shape, elements=_floats(0.0, 1.0, dtype))))
        elif arg.kind == "onehot":
            k = draw(arrays(np.int64, shape[:-1], elements=st.integers(0, shape[-1] - 1)))
            out.append((k[..., None] == np.arange(shape[-1])).astype(dtype))
        else:
            lo, hi = arg.moderate if where == "moderate" else wide_range(arg, dtype)
            avoid = arg.avoid if where == "moderate" else 0.0
            out.append(draw(arrays(dtype, shape, elements=_floats(lo, hi, dtype, avoid))))
    return tuple(out)


@pytest.mark.edge
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30)
@given(data=st.data())
def test_finite_in_finite_out(pair, dtype, data):
    """Shapes and values drawn from the wide ranges, and an upstream gradient in [-10, 10]."""
    inputs = data.draw(op_inputs(pair, dtype, "wide"))
    assert_finite_forward_and_backward(
        pair, inputs, lambda out: data.draw(arrays(dtype, out.shape, elements=_floats(-10.0, 10.0, dtype))))


# ---- 6. the gradient check at drawn shapes and values ---------------------------------------------------------

H = 1e-5
EPS64 = float(np.finfo(np.float64).eps)


@settings(max_examples=25)
@given(data=st.data())
def test_gradient_check_at_drawn_shapes_and_values(pair, data):
    """Central differences (h = 1e-5) against backward, for a random upstream gradient, on the ``moderate``
    ranges, where finite differences are well conditioned: |x| of a few units, so that outputs stay below ~100,
    derivatives do not vanish (tanh within +-4, sigmoid +-8, softplus above -8; relu's inputs kept 1e-3 away
    from its kink) and the third derivative stays small, making the truncation error h^2 f'''/6 ~ 1e-9. Each
    element must agree to 1e-6 relative, plus the rounding noise of the finite difference itself,
    8 eps sum_k |dout_k| max(1, |f|) / h (~1e-8 here): that floor only matters for a gradient element near 0 (x
    exactly at sigmoid(a), a residual exactly 0), which hypothesis does find and a relative test cannot judge
    (test_gradient_check's fixed inputs have none)."""
    inputs = [np.array(a) if isinstance(a, np.ndarray) else a for a in data.draw(op_inputs(pair, "float64",
                                                                                           "moderate"))]
    out, cache = pair.forward(*inputs)
    dout = np.random.default_rng(0).standard_normal(out.shape)
    grads = as_tuple(pair.backward(dout, cache))
    noise = 8 * EPS64 * np.sum(np.abs(dout)) * max(1.0, float(np.max(np.abs(out), initial=0.0))) / H
    for j, g in zip(pair.spec.wrt, grads, strict=True):
        num = numerical_gradient(lambda: pair.forward(*inputs)[0], inputs[j], dout, H)
        err = np.abs(g - num)
        tol = LIMIT * (np.abs(g) + np.abs(num)) + noise
        assert np.all(err <= tol), (pair.key, j, float(np.max(err / tol)), inputs)


# ---- the registry itself ----------------------------------------------------------------------------------

def test_the_registry_holds_every_pair_of_the_package():
    """Read independently of minivae/ops.py's scan (ast, every file under minivae/, parts/ included): each
    public top-level ``f_forward`` with an ``f_backward`` beside it is a pair of the registry, once per variant;
    so no pair escapes the checks above."""
    root = Path(__file__).resolve().parents[1] / "minivae"
    found = set()
    for path in root.rglob("*.py"):
        names = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        found |= {f"{module}.{n[:-len('_forward')]}" for n in names
                  if n.endswith("_forward") and not n.startswith("_") and n[:-len("_forward")] + "_backward" in names}
    assert {key.split("[")[0] for key in PAIR_IDS} == found
    assert len(set(PAIR_IDS)) == len(PAIR_IDS)
