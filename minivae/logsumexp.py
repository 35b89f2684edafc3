"""A stable log-sum-exp: log sum_i exp(a_i) = m + log sum_i exp(a_i - m), m = max_i a_i.

Shifting by the maximum keeps every exponent <= 0, so nothing overflows and at least one term is exactly 1.
Rows that are all -inf give -inf, a +inf gives +inf, a NaN gives NaN (as SciPy's ``logsumexp``).
Used by the importance-weighted bound and the exact log p(x) (minivae/evaluate.py).
Derivation: derivations/evaluation.md#log-sum-exp. Tests: tests/test_logsumexp.py.
"""
import numpy as np

from .checks import check_arrays


def logsumexp(a, axis):
    """log sum_i exp(a_i) along ``axis`` (the axis is removed).  derivations/evaluation.md#log-sum-exp"""
    xp = check_arrays("logsumexp", a=a)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -a.ndim <= axis < a.ndim:
        raise ValueError(f"logsumexp: axis must be an integer in [{-a.ndim}, {a.ndim}) for an array of shape "
                         f"{tuple(a.shape)}, got {axis!r}")
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)             # an all -inf row or a +inf: shift by 0 instead
    s = xp.sum(xp.exp(a - m), axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):               # log(0) = -inf is the right answer, not a warning
        return xp.squeeze(xp.log(s) + m, axis=axis)
