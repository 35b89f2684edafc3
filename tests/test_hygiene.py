"""Backward hygiene of every forward/backward pair (collected from the package by minivae/ops.py, so a pair added
later is covered without editing this file), in float32 and float64 on the CPU:

- a zero upstream gradient gives exactly zero gradients;
- backward is linear in the upstream gradient;
- two runs are bitwise identical;
- each gradient has the shape and dtype of its input, and the forward keeps the input dtype;
- neither forward nor backward mutates its inputs, its cache or the upstream gradient, and backward can be
  called twice on one cache with the same result.

relu's derivative at exactly 0 is pinned in tests/test_layers.py::test_relu_derivative_at_zero_is_zero and its
gradient is checked away from 0 there and in tests/test_properties.py.
"""
import numpy as np
import pytest

from _ops import PAIR_IDS, PAIRS, as_tuple, fingerprint, make_inputs

DTYPES = ["float32", "float64"]
RTOL = {"float32": 2e-5, "float64": 1e-12}


def run(pair, seed, dtype):
    """Inputs, forward output, cache and an upstream gradient (N(0, 1), not all ones) for ``pair``."""
    rng = np.random.default_rng(seed)
    inputs, _ = make_inputs(pair, rng, dtype)
    out, cache = pair.forward(*inputs)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return inputs, out, cache, dout


@pytest.fixture(params=PAIRS, ids=PAIR_IDS)
def pair(request):
    return request.param


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
    for x1, x2, x12 in zip(g1, g2, g12, strict=True):
        expect = a.astype(np.float64) * x1 + b.astype(np.float64) * x2
        scale = np.max(np.abs(a * x1)) + np.max(np.abs(b * x2)) if x1.size else 0.0
        np.testing.assert_allclose(x12, expect, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=pair.key)
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
def test_gradient_shapes_and_dtypes_equal_the_inputs(pair, dtype):
    inputs, out, cache, dout = run(pair, 4, dtype)
    assert out.dtype == np.dtype(dtype), (pair.key, out.dtype)
    grads = as_tuple(pair.backward(dout, cache))
    assert len(grads) == len(pair.spec.wrt), pair.key
    for i, g in zip(pair.spec.wrt, grads, strict=True):
        assert g.shape == inputs[i].shape and g.dtype == inputs[i].dtype, (pair.key, i, g.shape, g.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_cache_and_upstream_gradient_are_not_mutated(pair, dtype):
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
