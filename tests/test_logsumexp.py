"""Tests for minivae/logsumexp.py against SciPy's logsumexp, at the values where the naive form fails."""
import math

import numpy as np
import pytest
import scipy.special

from _extremes import DTYPES, RTOL
from minivae.backend import to_host
from minivae.logsumexp import logsumexp

CASES = [
    [[1000.0, 1000.0]],                      # exp overflows
    [[np.log(1e-40)] * 5],                   # exp underflows in float32
    [[-np.inf, -np.inf]],                    # log(0)
    [[np.inf, 1.0]], [[np.inf, np.inf]], [[np.inf, -np.inf]],
    [[np.nan, 1.0]],
    [[0.0, -np.inf, 3.0], [1000.0, -1000.0, 0.5], [-np.inf, -np.inf, -np.inf]],   # mixed rows
    [[-745.0, -746.0, -800.0]],
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("axis", [0, 1])
def test_matches_scipy(device, case, axis):
    a = np.array(case)
    with np.errstate(all="ignore"):
        ref = scipy.special.logsumexp(a, axis=axis)
        got = to_host(logsumexp(device.asarray(a), axis=axis))
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)


def test_random_values_and_float32(rng):
    a = rng.standard_normal((7, 50)) * 30
    np.testing.assert_allclose(logsumexp(a, axis=1), scipy.special.logsumexp(a, axis=1), rtol=1e-14)
    a32 = a.astype(np.float32)
    out = logsumexp(a32, axis=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, scipy.special.logsumexp(a, axis=1), rtol=1e-6)


# ---- at the edges ----------------------------------------------------------------------------------------

LSE_CASES = {
    "float32 [1000, 1000]": [[1000.0, 1000.0]],
    "1e5 copies of log(1e-40)": [[math.log(1e-40)] * 100_000],
    "all -inf": [[-np.inf] * 4],
    "+inf": [[np.inf, -np.inf, 3.0]],
    "NaN with +inf": [[np.nan, np.inf]],
    "NaN with -inf": [[-np.inf, np.nan]],
    "mixed rows": [[0.0, -np.inf, 3.0], [np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0], [-1e30, -1e30, -np.inf]],
}


@pytest.mark.edge
@pytest.mark.parametrize("case", LSE_CASES, ids=list(LSE_CASES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_in_both_dtypes_matches_scipy(case, dtype):
    """The cases of the issue in float32 as well as float64 (CASES above run in float64 only): the
    dtype is kept, and the value is SciPy's (computed in float64 from the same inputs) to the dtype's
    tolerance; NaN rows give NaN, +inf rows +inf, all -inf rows -inf."""
    a = np.array(LSE_CASES[case], dtype=dtype)
    with np.errstate(all="ignore"):
        got = logsumexp(a, axis=1)
        ref = scipy.special.logsumexp(a.astype(np.float64), axis=1)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, ref, rtol=RTOL[dtype] * 10, atol=0)


@pytest.mark.edge
def test_logsumexp_over_a_leading_axis_of_a_3d_array():
    a = np.random.default_rng(0).standard_normal((5, 3, 4)) * 300
    a[0, 0, :] = -np.inf
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(logsumexp(a, axis=0), scipy.special.logsumexp(a, axis=0), rtol=1e-14)
        np.testing.assert_allclose(logsumexp(a, axis=-1), scipy.special.logsumexp(a, axis=-1), rtol=1e-14)
