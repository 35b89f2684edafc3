"""Checks at the API boundary: each raises a ValueError that names the argument (scikit-learn's ``check_scalar``
is the model). Shapes and dtypes only for arrays: nothing here moves data off a device.
Tests: tests/test_model.py, tests/test_bad_input.py.
"""
import numpy as np

from .backend import array_namespace


def check_positive_int(value, name):
    """``value`` as an int if it is a positive Python or NumPy integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_batch(a, name, device, dtype_name, n_cols, col_name):
    """``a`` must be a non-empty (N, n_cols) array of ``device``'s array module with dtype ``dtype_name``."""
    try:
        xp = array_namespace(a)
    except TypeError:
        raise ValueError(f"{name} must be an array, got {type(a).__name__}") from None
    if xp is not device.xp:
        raise ValueError(f"{name} is a {xp.__name__} array but the model lives on {device.name} "
                         f"({device.xp.__name__}); move it with Device.asarray")
    if a.ndim != 2 or a.shape[1] != n_cols:
        raise ValueError(f"{name} must have shape (N, {col_name}={n_cols}), got {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if a.dtype != device.dtype(dtype_name):
        raise ValueError(f"{name} must have dtype {dtype_name} like the model, got {a.dtype}")
    return a


def check_int(value, name, minimum):
    """``value`` as an int if it is a Python or NumPy integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else (
            "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_number(value, name, minimum=None, strict=False):
    """``value`` as a float if it is a finite real number (not a bool), >= ``minimum`` (> when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return float(value)


def check_choice(value, name, choices):
    """``value`` if it is one of ``choices`` (names, or a registry's keys)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
