"""Shared by the tests of values at the edges (tests/test_likelihoods.py, tests/test_reparam.py): the dtypes, a
closeness test with an absolute floor, and a grid of extreme log-variances."""
import numpy as np

DTYPES = ["float32", "float64"]
RTOL = {"float32": 1e-6, "float64": 1e-12}


def close(got, ref, dtype):
    """|got - ref| <= rtol |ref| + the dtype's smallest normal number."""
    tiny = float(np.finfo(dtype).tiny)
    return abs(float(got) - ref) <= RTOL[dtype] * abs(ref) + tiny


LOGVARS = [-100.0, -50.0, -30.0, 0.0, 30.0, 50.0, 100.0]
MUS = [0.0, 1e3, -1e3]


def logvar_grid(dtype):
    lv = np.array([v for v in LOGVARS for _ in MUS], dtype=dtype)[:, None]              # (21, 1)
    mu = np.array([m for _ in LOGVARS for m in MUS], dtype=dtype)[:, None]
    return mu, lv
