"""Property-based tests (hypothesis) over shapes and values for every forward/backward pair (collected by
minivae/ops.py, so a pair added later is covered too):

1. Finite in, finite out, where the math is finite: inputs drawn from each op's ``wide`` range (up to 1e300 in
   float64 where nothing can overflow, bounded where the exact result would exceed the dtype: 4 terms of 1e300
   sum to inf), in float32 and float64; the forward output and every gradient (for a finite upstream gradient)
   are finite.
2. The gradient check holds in float64: central differences (h = 1e-5) against backward, for a random upstream
   gradient, on the ``moderate`` ranges where finite differences are well conditioned: |x| of a few units, so
   that outputs stay below ~100, derivatives do not vanish (tanh within +-4, sigmoid +-8, softplus above -8;
   relu's inputs kept 1e-3 away from its kink) and the third derivative stays small, making the truncation
   error h^2 f'''/6 ~ 1e-9. Each element must agree to 1e-6 relative, plus the rounding noise of the finite
   difference itself, 8 eps sum_k |dout_k| max(1, |f|) / h (~1e-8 here): that floor only matters for a
   gradient element near 0 (x exactly at sigmoid(a), a residual exactly 0), which hypothesis does find and a
   relative test cannot judge.

The profile is fixed (tests/conftest.py): derandomize=True, a bounded max_examples, no deadline, no database, so
the suite is deterministic and its time bounded.
"""
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from _ops import PAIR_IDS, PAIRS, as_tuple, shape_of  # noqa: E402
from minivae.gradcheck import numerical_gradient  # noqa: E402

H = 1e-5
EPS64 = float(np.finfo(np.float64).eps)


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
            lo, hi = arg.moderate if where == "moderate" else (arg.wide32 if dtype == "float32" else arg.wide64)
            avoid = arg.avoid if where == "moderate" else 0.0
            out.append(draw(arrays(dtype, shape, elements=_floats(lo, hi, dtype, avoid))))
    return tuple(out)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(data=st.data())
def test_finite_in_finite_out(pair, dtype, data):
    inputs = data.draw(op_inputs(pair, dtype, "wide"))
    with np.errstate(under="ignore"):
        out, cache = pair.forward(*inputs)
        assert np.all(np.isfinite(out)), (pair.key, inputs, out)
        dout = data.draw(arrays(dtype, out.shape, elements=_floats(-10.0, 10.0, dtype)))
        for g in as_tuple(pair.backward(dout, cache)):
            assert np.all(np.isfinite(g)), (pair.key, inputs, g)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@settings(max_examples=25)
@given(data=st.data())
def test_gradient_check(pair, data):
    inputs = [np.array(a) if isinstance(a, np.ndarray) else a for a in data.draw(op_inputs(pair, "float64",
                                                                                           "moderate"))]
    out, cache = pair.forward(*inputs)
    dout = np.random.default_rng(0).standard_normal(out.shape)
    grads = as_tuple(pair.backward(dout, cache))
    noise = 8 * EPS64 * np.sum(np.abs(dout)) * max(1.0, float(np.max(np.abs(out), initial=0.0))) / H
    for j, g in zip(pair.spec.wrt, grads, strict=True):
        num = numerical_gradient(lambda: pair.forward(*inputs)[0], inputs[j], dout, H)
        err = np.abs(g - num)
        tol = 1e-6 * (np.abs(g) + np.abs(num)) + noise
        assert np.all(err <= tol), (pair.key, j, float(np.max(err / tol)), inputs)
