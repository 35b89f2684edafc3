"""The op list the tests run over: every public forward/backward pair of minivae, from minivae/ops.py (the same
list ``minivae gradcheck`` checks), and helpers for looking inside caches."""
import numpy as np

from minivae.ops import make_inputs, pairs, shape_of  # noqa: F401 (make_inputs, shape_of: for the tests)

PAIRS = list(pairs())
PAIR_IDS = [p.key for p in PAIRS]


def as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


def arrays_in(obj):
    """The arrays inside a (nested) cache, in order."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for item in obj for a in arrays_in(item)]
    if isinstance(obj, dict):
        return [a for k in sorted(obj) for a in arrays_in(obj[k])]
    return []


def fingerprint(obj):
    """Bytes, dtype and shape of every array in ``obj`` (and the repr of everything else): equal fingerprints
    mean nothing was mutated."""
    if isinstance(obj, np.ndarray):
        return (obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, (tuple, list)):
        return tuple(fingerprint(o) for o in obj)
    if isinstance(obj, dict):
        return tuple((k, fingerprint(obj[k])) for k in sorted(obj))
    return repr(obj)
