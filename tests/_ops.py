"""The op registry (PyTorch's OpInfo, scikit-learn's ``check_estimator``): every public forward/backward pair of
minivae, from minivae/ops.py (the same list ``minivae gradcheck`` checks), with what tests/test_ops.py needs to
run every generic check on each of them: the sizes to call it at, its inputs on a device, and helpers for looking
inside caches. A pair added to minivae is found by ``pairs()`` and gets every check; nothing here lists pairs.

What a pair needs to be called (its arguments' shapes in named dimensions, which ones are differentiated, the
value ranges) is its ``Spec`` in minivae/ops.py: an op that does not fit the fallback spec gets an entry there.
"""
import numpy as np

from minivae.ops import make_inputs, pairs, shape_of  # noqa: F401 (make_inputs, shape_of: for the tests)

PAIRS = list(pairs())
PAIR_IDS = [p.key for p in PAIRS]

# Sizes of the named dimensions (ops.py: N examples, D data dimensions, L levels, A -> B a layer's widths, Z latent
# dimensions, C mixture components, K samples) the gradient check calls every pair at:
# - "ones": every size 1 (L 2), where a sum over a wrong axis or a broadcast that should not happen hides nowhere;
# - "distinct": sizes that differ within every op, so a transposed or mis-summed gradient cannot have the right
#   shape; small enough for the slow strict device;
# - "drawn": sizes 1-4 drawn per pair (ops.py: draw_dims), different for each pair.
# The planar flows' moderate ranges keep w^T u_hat > -1 for Z <= 4 (ops.py): no size here exceeds 4 but L.
CASES = {
    "ones": dict(N=1, D=1, L=2, A=1, B=1, Z=1, C=1, K=1),
    "distinct": dict(N=3, D=4, L=5, A=4, B=2, Z=2, C=4, K=2),
    "drawn": None,
}
DEVICE_CASES = ("distinct",)   # on the strict device: one case proves no host transfer and equal results


def case_inputs(pair, case, dtype="float64", seed=0):
    """``pair``'s inputs for the CASES entry ``case``: host arrays of ``dtype`` from the moderate ranges, drawn
    with a seed of its own per pair and case."""
    rng = np.random.default_rng([seed, PAIR_IDS.index(pair.key), list(CASES).index(case)])
    inputs, _ = make_inputs(pair, rng, dtype, dims=CASES[case])
    return inputs


def on_device(device, inputs):
    """Host inputs onto ``device`` (a Python float, such as sigma_min, stays one)."""
    return tuple(a if isinstance(a, float) else device.asarray(a) for a in inputs)


def as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


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
