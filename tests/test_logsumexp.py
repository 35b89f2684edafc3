"""Tests for minivae/logsumexp.py against SciPy's logsumexp, at the values where the naive form fails."""
import numpy as np
import pytest
import scipy.special

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
