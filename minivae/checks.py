"""What minivae checks of what it is given, and where: the one validation module (scikit-learn's
``utils/validation.py`` and ``check_scalar`` are the model). The policy, which README.md#bad-input repeats:

- **Types, shapes and dtypes are checked by every public function, the ops included.** These checks read no
  data, so they cost no pass over an array and no device-to-host transfer. A wrong type (None, a list, a float
  where an array belongs) is a ``TypeError``; a wrong shape, dtype or value a ``ValueError``. Each message names
  the function and the argument, and says what was expected. No op broadcasts a shape that does not match.
- **Values (finite; Bernoulli and categorical targets in [0, 1]) are checked where they cost no device-to-host
  transfer**: on host (NumPy) arrays at the data boundary, i.e. the datasets, ``fit``, ``train``, ``evaluate``,
  and the model's public methods when they are given NumPy arrays (``check_input=False`` skips it where the
  data was checked once already, as the training loop does). Arrays on a GPU or the strict device get the type,
  shape and dtype checks only. The ops never read values: NaN in gives NaN out, never a finite number.
- Nothing is changed before every check has passed: an optimizer step checks every gradient before it moves
  any parameter, a checkpoint is read and checked whole before anything uses it.

Tests: tests/test_checks.py (the helpers, then the battery of bad calls), tests/test_model.py.
"""
import numpy as np

from .backend import array_namespace

# ---- scalars: options and arguments ------------------------------------------------------------------------

def check_int(value, name, minimum):
    """``value`` as an int if it is a Python or NumPy integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else (
            "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_positive_int(value, name):
    """``value`` as an int if it is a positive Python or NumPy integer (not a bool)."""
    return check_int(value, name, 1)


def check_number(value, name, minimum=None, strict=False, maximum=None):
    """``value`` as a float if it is a finite real number (not a bool), >= ``minimum`` (> when ``strict``) and
    < ``maximum`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    if maximum is not None and value >= maximum:
        raise ValueError(f"{name} must be < {maximum:g}, got {value!r}")
    return float(value)


def check_choice(value, name, choices):
    """``value`` if it is one of ``choices`` (names, or a registry's keys)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


# ---- arrays: types, dtypes and shapes (no data read) --------------------------------------------------------

def _shape_text(shape):
    return "(" + ", ".join("*" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))     # NumPy's dtype objects are singletons


def _namespace(where, name, a):
    """The array module of ``a``, or a TypeError naming ``where``'s argument ``name``."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):                   # None, a Python number, a list
        raise TypeError(f"{where}: {name} must be an array, got {type(a).__name__}")
    try:
        return array_namespace(a)
    except TypeError:
        raise TypeError(f"{where}: {name} must be an array, got {type(a).__name__}") from None


def check_arrays(where, **arrays):
    """The array module shared by ``arrays`` (argument name -> array), each a float32 or float64 array, all of one
    dtype. A TypeError names ``where``'s argument that is not an array, or is of another array module; a
    ValueError one of another dtype. Used in place of ``array_namespace`` at the top of an op: it reads only
    types and dtypes (about a microsecond per array for NumPy), never values."""
    xp = first = dtype = None
    for name, a in arrays.items():
        xp_a = np if type(a) is np.ndarray else _namespace(where, name, a)
        if xp is None:
            xp, first, dtype = xp_a, name, a.dtype
            if not (dtype in _NUMPY_FLOATS if xp is np else (dtype == xp.float32 or dtype == xp.float64)):
                raise ValueError(f"{where}: {name} must have dtype float32 or float64, got {dtype}")
        elif xp_a is not xp:
            raise TypeError(f"{where}: {name} is a {xp_a.__name__} array but {first} is a {xp.__name__} array")
        elif a.dtype != dtype:
            raise ValueError(f"{where}: {name} has dtype {a.dtype} but {first} has {dtype}; give every array "
                             f"one dtype")
    return xp


def check_shape(where, name, a, shape, like=None):
    """``a.shape`` must equal ``shape`` (a None entry matches any length): a ValueError naming ``where``'s
    argument ``name`` otherwise (``like``: where the expected shape comes from, for the message)."""
    got = a.shape
    if len(got) == len(shape):
        for s, g in zip(shape, got, strict=True):
            if s is not None and s != g:
                break
        else:
            return
    source = f" ({like})" if like else ""
    raise ValueError(f"{where}: {name} must have shape {_shape_text(shape)}{source}, got {_shape_text(tuple(got))}")


def check_batch(a, name, device, dtype_name, n_cols, col_name):
    """``a`` must be a non-empty (N, n_cols) array of ``device``'s array module with dtype ``dtype_name``."""
    try:
        xp = array_namespace(a)
    except TypeError:
        xp = None
    if xp is None or not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if xp is not device.xp:
        raise TypeError(f"{name} is a {xp.__name__} array but the model lives on {device.name} "
                        f"({device.xp.__name__}); move it with Device.asarray")
    if a.ndim != 2 or a.shape[1] != n_cols:
        raise ValueError(f"{name} must have shape (N, {col_name}={n_cols}), got {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if a.dtype != device.dtype(dtype_name):
        raise ValueError(f"{name} must have dtype {dtype_name} like the model, got {a.dtype}")
    return a


# ---- values: host arrays only ------------------------------------------------------------------------------

def is_host(a):
    """True for a NumPy array: its values can be read without a device-to-host transfer."""
    return isinstance(a, np.ndarray)


def check_finite(a, name):
    """A ValueError naming ``name`` if the host array ``a`` holds NaN or infinite values."""
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(f"{name} contains {int(a.size - np.count_nonzero(finite))} NaN or infinite value(s)")


def check_unit_interval(a, name, hint=""):
    """A ValueError naming ``name`` if the host array ``a`` has values outside [0, 1] (``hint``: what to do)."""
    if a.size and (np.min(a) < 0.0 or np.max(a) > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]{hint}, got values in [{np.min(a):g}, {np.max(a):g}]")
