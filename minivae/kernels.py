"""Optional fast kernels: the same math as a plain op, written for one array module to run faster there.

This is the one place where minivae has more than one implementation of a formula. Each kernel here does
exactly what a plain function elsewhere does, with the same signature, and ``tests/test_kernels.py`` checks the
two against each other (CuPy kernels in GPU-marked tests). The plain function stays the reference that the
derivation notes describe; a kernel only changes how many passes over memory and how many allocations (NumPy)
or kernel launches (CuPy) the same arithmetic takes.

    adam_update    the Adam update of one parameter, in place (plain: minivae.optim.adam_update)
                   NumPy: ufuncs with ``out=``, no temporary arrays; CuPy: one fused ElementwiseKernel

``ENABLED = False`` (or the environment variable ``MINIVAE_KERNELS=0``) turns every kernel off, so that the
plain path runs everywhere: the benchmark uses it to measure what the kernels gain.

Not a kernel, but the same kind of switch: ``retain_freed_memory()`` asks glibc's malloc to keep freed memory for
reuse. A NumPy training step allocates and frees its activations every step; with glibc's defaults the freed
top of the heap goes back to the system and the next step page-faults it in again (at batch 2048 on the
reference model, about 3,800 faults and 15 MB per step). It is process-wide, so an application calls it (a
training command), never a library import.
"""
import ctypes
import os
import sys

import numpy as np

from .backend import array_namespace

ENABLED = os.environ.get("MINIVAE_KERNELS", "1") != "0"


def lookup(name, *arrays):
    """The kernel ``name`` for the array module of ``arrays``, or None where there is none (or kernels are
    off): the caller then runs its plain function."""
    if not ENABLED:
        return None
    xp = array_namespace(*arrays)
    return _KERNELS.get((xp.__name__, name))


# ---- Adam ----------------------------------------------------------------------------------------------------

def _adam_update_numpy(p, g, m, v, b1, b2, step_size, sqrt_bc2, eps, scratch):
    """minivae.optim.adam_update with NumPy's ``out=``: the same update, written into ``scratch`` (an array like
    ``p``) instead of fresh temporaries: eleven passes over memory and no allocation. The two bias corrections
    are folded into host scalars, step_size m / (sqrt(v) / c + eps) = (step_size c) m / (sqrt(v) + eps c) with
    c = sqrt_bc2, which saves a pass.   derivations/adam.md#update"""
    np.multiply(g, 1.0 - b1, out=scratch)
    m *= b1
    m += scratch                                         # m = beta1 m + (1 - beta1) g
    np.multiply(g, g, out=scratch)
    scratch *= 1.0 - b2
    v *= b2
    v += scratch                                         # v = beta2 v + (1 - beta2) g^2
    np.sqrt(v, out=scratch)
    scratch += eps * sqrt_bc2                            # sqrt(v) + eps sqrt(1 - beta2^t)
    np.divide(m, scratch, out=scratch)
    scratch *= step_size * sqrt_bc2
    p -= scratch                                         # theta -= lr m_hat / (sqrt(v_hat) + eps)


_CUPY_ADAM = None


def _adam_update_cupy(p, g, m, v, b1, b2, step_size, sqrt_bc2, eps, scratch):
    """minivae.optim.adam_update as one CuPy ElementwiseKernel: one launch per parameter instead of about ten,
    each element read and written once. ``scratch`` is not needed.   derivations/adam.md#update"""
    global _CUPY_ADAM
    if _CUPY_ADAM is None:
        import cupy
        _CUPY_ADAM = cupy.ElementwiseKernel(
            "T g, T b1, T b2, T step_size, T sqrt_bc2, T eps",
            "T p, T m, T v",
            """
            m = b1 * m + (1 - b1) * g;
            v = b2 * v + (1 - b2) * g * g;
            p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps);
            """,
            "minivae_adam_update")
    t = p.dtype.type                                     # scalars in the parameter's precision
    _CUPY_ADAM(g, t(b1), t(b2), t(step_size), t(sqrt_bc2), t(eps), p, m, v)


_KERNELS = {
    ("numpy", "adam_update"): _adam_update_numpy,
    ("cupy", "adam_update"): _adam_update_cupy,
}


# ---- the allocator ---------------------------------------------------------------------------------------------

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameters (malloc.h)


def retain_freed_memory(trim_threshold=256 * 2**20, mmap_threshold=32 * 2**20):
    """Make glibc keep up to ``trim_threshold`` bytes of freed memory at the top of the heap (instead of
    returning it to the system after every step) and serve blocks below ``mmap_threshold`` from the heap (instead
    of a fresh mmap each, which is unmapped on free and faulted in again). Both must be set: fixing the trim
    threshold alone turns off glibc's adaptive mmap threshold, and every large array is then mmapped afresh.
    The environment variables MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_ do the same before start-up.
    Returns True where it took effect (Linux with glibc), False elsewhere (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
