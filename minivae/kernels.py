"""Optional fast kernels: the same math as a plain op, written for one array module to run faster there.

This is the one place where minivae has more than one implementation of a formula. Each kernel here does
exactly what a plain function elsewhere does, with the same signature, and ``tests/test_kernels.py`` checks the
two against each other (CuPy kernels in GPU-marked tests). The plain function stays the reference that the
derivation notes describe; a kernel only changes how many passes over memory and how many allocations (NumPy)
or kernel launches (CuPy) the same arithmetic takes.

    adam_update    the Adam update of one parameter, in place (plain: minivae.optim.adam_update)
                   NumPy: ufuncs with ``out=``, no temporary arrays; CuPy: one fused ElementwiseKernel
    adam_update_many  the same for every parameter of a step at once (plain: adam_update on each): NumPy only,
                   the elements of all parameters split once over the cores (after a step on row blocks)
    bernoulli_nll  the Bernoulli NLL's forward and backward as a pair (plain: minivae.likelihoods'
                   bernoulli_nll_forward / _backward): NumPy: the forward keeps sigmoid(a) so the backward takes
                   two passes instead of nine, every pass into preallocated arrays, the rows split over the cores;
                   in float32 log1p on NumPy's SIMD log (Goldberg's form), to a few ulp of the plain op
    loss_and_grads the whole forward and backward of a step (plain: VAE.loss_and_grads' chain, ``_chain``) on row
                   blocks of the batch, one per core, each with one BLAS thread, their gradients added: NumPy,
                   objectives that are a mean of per-example terms (``objective.per_example``)
    terms          the forward alone (plain: VAE._forward's nll and kl, for elbo_terms and log_weights) on row
                   blocks the same way, the blocks' terms joined: NumPy

``THREADS`` (the environment variable ``MINIVAE_THREADS``; default: the cores the process may use, at most 4)
is how many row blocks the NumPy kernels split large arrays into, run at once on a small thread pool. Work that
stays on one thread runs in chunks of ``CHUNK_BYTES`` per array, which stay in the core's cache between passes.

``ENABLED = False`` (or the environment variable ``MINIVAE_KERNELS=0``) turns every kernel off, so that the
plain path runs everywhere: the benchmark uses it to measure what the kernels gain.

Not a kernel, but part of the fast NumPy path: ``retain_freed_memory()`` asks glibc's malloc to keep freed memory
for reuse. A NumPy training step allocates and frees its activations every step; with glibc's defaults the freed
top of the heap goes back to the system and the next step page-faults it in again (at batch 2048 on the
reference model, about 3,800 faults and 15 MB per step, measured earlier; 770 with the row blocks). The first
NumPy kernel to run applies it, once, so a program that uses minivae as a library gets it too (importing
minivae changes nothing); ``MINIVAE_MALLOC=default`` leaves glibc's allocator as it is.
"""
import contextlib
import contextvars
import ctypes
import itertools
import os
import sys
import threading

import numpy as np

from .backend import array_namespace
from .checks import check_arrays, check_shape

ENABLED = os.environ.get("MINIVAE_KERNELS", "1") != "0"


def lookup(name, *arrays):
    """The kernel ``name`` for the array module of ``arrays``, or None where there is none (or kernels are
    off): the caller then runs its plain function."""
    if not ENABLED:
        return None
    xp = array_namespace(*arrays)
    kernel = _KERNELS.get((xp.__name__, name))
    if kernel is not None and xp.__name__ == "numpy" and not _RETAINED:
        _retain_once()
    return kernel


# ---- Adam ----------------------------------------------------------------------------------------------------

def _adam_update_numpy(p, g, m, v, b1, b2, step_size, sqrt_bc2, eps, scratch):
    """minivae.optim.adam_update with NumPy's ``out=``: the same update, written into ``scratch`` (an array like
    ``p``) instead of fresh temporaries: eleven passes over memory and no allocation, a large parameter split over
    the cores. The two bias corrections are folded into host scalars,
    step_size m / (sqrt(v) / c + eps) = (step_size c) m / (sqrt(v) + eps c) with c = sqrt_bc2, which saves a pass.
    derivations/adam.md#update"""
    _adam_update_many_numpy([(p, g, m, v, scratch)], b1, b2, step_size, sqrt_bc2, eps)


def _adam_update_many_numpy(slots, b1, b2, step_size, sqrt_bc2, eps):
    """The update of every parameter at once: ``slots`` is a list of (p, g, m, v, scratch). The elements of all
    parameters, end to end, are split into one block per thread (``_on_row_blocks``), so a step hands work to the
    other cores once, not once per parameter, and small parameters (biases, the 20-wide heads) share the blocks
    (on one thread: cache-sized chunks). After a step that ran whole, Adam stays on one thread: on a 2-core Xeon,
    in the step, 1.9 ms on one thread against 2.2 on two at batch 128 (whole), 2.6-2.8 against 1.7-2.0 at 512
    and 2048 (row blocks). Each element sees exactly ``_adam_block``'s arithmetic, whichever block or chunk it
    falls in."""
    flat, whole, offsets, total = [], [], [], 0
    for arrays in slots:
        if arrays[0].ndim == 0 or not all(a.flags.c_contiguous for a in arrays):
            whole.append(arrays)                         # a 0-d or strided parameter: updated as it is
            continue
        flat.append([a.reshape(-1) for a in arrays])     # views: the updates land in p, m, v
        offsets.append(total)
        total += arrays[0].size
    for arrays in whole:
        _adam_block(*arrays, b1, b2, step_size, sqrt_bc2, eps)

    def block(start, stop):                              # [start, stop) of the parameters' elements end to end
        for arrays, offset in zip(flat, offsets, strict=True):
            lo, hi = max(start - offset, 0), min(stop - offset, arrays[0].size)
            if lo < hi:
                _adam_block(*(a[lo:hi] for a in arrays), b1, b2, step_size, sqrt_bc2, eps)

    # after a step that ran whole (a small batch), the pool thread has slept since the last step, and waking it
    # costs more than the second core gains: Adam then stays on this thread, in chunks (benchmarks/RESULTS.md)
    split = _STEP_BLOCKS is None or _STEP_BLOCKS >= 2
    _on_row_blocks(block, total, total if split else 0, CHUNK_BYTES // flat[0][0].itemsize if flat else None)


def _adam_block(p, g, m, v, scratch, b1, b2, step_size, sqrt_bc2, eps):
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


# ---- the Bernoulli NLL: forward and backward in fewer passes, the rows on every core ------------------------

def _threads():
    """MINIVAE_THREADS if set, else the cores this process may run on (at most 4)."""
    if os.environ.get("MINIVAE_THREADS"):
        return max(1, int(os.environ["MINIVAE_THREADS"]))
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


THREADS = _threads()
PARALLEL_MIN = 1 << 18       # elements below which the rows stay on one thread, in cache-sized chunks
CHUNK_BYTES = 1 << 18        # bytes of one array's chunk: a kernel's five or six chunks stay in a core's L2 cache
_POOL = None


def _on_row_blocks(fn, n_rows, n_elements, chunk=None):
    """Call ``fn(start, stop)`` on row blocks of ``range(n_rows)``: one block per thread of ``THREADS`` when the
    work is large enough, else one. NumPy releases the GIL inside its ufuncs, so the blocks run at once.

    A lone block (one thread at work, not inside one of the step's row blocks) runs in pieces of ``chunk`` rows,
    which stay in the core's cache between passes; blocks running beside each other run whole: each ufunc call
    takes the GIL back from the other thread, and more, shorter calls cost more than the cache saves
    (measured on a 2-core Xeon, benchmarks/RESULTS.md: the Bernoulli forward at 1024 x 784, one thread, 5.6 ms
    whole, 4.1 in 64-row chunks; two such blocks at once, 6.1 whole, 7.6 in chunks)."""
    blocks = THREADS if n_elements >= PARALLEL_MIN and n_rows >= THREADS else 1
    if blocks == 1 and chunk and not getattr(_INSIDE, "block", False):
        for i, j in _chunks(0, n_rows, chunk):
            fn(i, j)
        return
    _on_blocks(fn, [n_rows * i // blocks for i in range(blocks + 1)])


def _chunks(start, stop, size):
    """(i, j) bounds that cover [start, stop) in pieces of ``size`` (at least 1), the last one shorter."""
    size = max(1, size)
    return ((i, min(i + size, stop)) for i in range(start, stop, size))


def _chunk_rows(a):
    """Rows of the (N, D) array ``a`` in a chunk of about ``CHUNK_BYTES``. On a Xeon with 2 MiB of L2 per core a
    pass over a (1024, 784) float32 array took 0.25 ms whole and 0.09 ms in 64-row chunks."""
    return max(1, CHUNK_BYTES // max(1, a.shape[1] * a.itemsize))


_INSIDE = threading.local()  # .block: this thread runs one block already: what it calls stays on it


def _on_blocks(fn, bounds):
    """``[fn(bounds[i], bounds[i + 1]) for each i]``, the first block on the calling thread, the others on the pool
    at once. Inside a block everything runs on its own thread: a nested split would wait for a pool thread that is
    busy with the outer one's block."""
    global _POOL
    if len(bounds) == 2 or getattr(_INSIDE, "block", False):
        return [fn(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(THREADS - 1, thread_name_prefix="minivae-rows")

    def inside(i, j):
        _INSIDE.block = True
        try:
            return fn(i, j)
        finally:
            _INSIDE.block = False

    # each block runs in a copy of the caller's context: NumPy's errstate (np.errstate) holds there too
    futures = [_POOL.submit(contextvars.copy_context().run, inside, bounds[i], bounds[i + 1])
               for i in range(1, len(bounds) - 1)]
    first = inside(bounds[0], bounds[1])                 # the calling thread takes the first block
    return [first] + [f.result() for f in futures]


def _bernoulli_nll_forward_numpy(x, logits):
    """minivae.likelihoods.bernoulli_nll_forward, keeping sigmoid(a) for the backward (which then takes two
    passes instead of nine), the rows split over the cores, or on one thread in chunks that stay in its cache
    (``_on_row_blocks``): with m = min(a, 0) and M = max(a, 0), one of which is 0,

        e = exp(m - M) = exp(-|a|),  s = exp(m) / (1 + e) = sigmoid(a),
        nll = sum_d (1 - x) M - x m + log1p(e)

    the plain op's arithmetic term for term (no select, no branch; -x m = x max(-a, 0) exactly, and of
    (1 - x) M and x max(-a, 0) one is 0, so adding them is exact in any order), so the two agree bit for bit,
    but for one pass in float32: NumPy's float32 log1p has no SIMD loop (on Zen 3 it took 5.6 of the forward's
    ~17 ms at 1024 x 784), so there log1p(e) is Goldberg's form (Higham 2002, Accuracy and Stability of
    Numerical Algorithms, 1.14.1) on the SIMD log,

        log1p(e) = e log(u) / (u - 1),  u = 1 + e   (u - 1 exact for u in [1, 2]),

    accurate to a few ulp wherever log is; where u = 1 (e below half an ulp of 1) it is 0 / 0, and
    fmin(NaN, e) = e, itself log1p(e) to rounding (and a NaN e stays NaN). The float32 nll then agrees with the
    plain op's to a few ulp of the sum (tests/test_kernels.py), s and the backward still bit for bit. In float64
    NumPy's log1p is as fast as this, and the kernel keeps it. 20 passes over three scratch arrays and s, and 2
    backward (the plain pair: 13 and 9).  cache = (x, s).
    derivations/likelihoods.md#bernoulli-forward"""
    check_arrays("bernoulli_nll_forward", x=x, logits=logits)
    check_shape("bernoulli_nll_forward", "logits", logits, (None, None))
    check_shape("bernoulli_nll_forward", "x", x, tuple(logits.shape), "logits' shape")
    n, d = logits.shape
    nll, s = np.empty(n, dtype=logits.dtype), np.empty_like(logits)
    goldberg = logits.dtype == np.float32

    def rows(i, j):
        a, xr, t = logits[i:j], x[i:j], s[i:j]          # s's rows hold the nll's terms until s is made
        m, big, e = (np.empty((j - i, d), dtype=logits.dtype) for _ in range(3))    # scratch
        np.minimum(a, 0.0, out=m)                        # m = min(a, 0)
        np.maximum(a, 0.0, out=big)                      # M = max(a, 0)
        np.subtract(m, big, out=e)
        np.exp(e, out=e)                                 # e = exp(m - M) = exp(-|a|) in (0, 1]
        np.subtract(1.0, xr, out=t)
        t *= big                                         # (1 - x) max(a, 0)
        np.multiply(xr, m, out=big)
        t -= big                                         # + x max(-a, 0): no term negative, nothing cancels
        if goldberg:                                     # log1p(e) = e log(u) / (u - 1), u = 1 + e
            np.add(e, 1.0, out=big)
            np.log(big, out=m)
            m *= e
            big -= 1.0                                   # u - 1, exact
            with np.errstate(invalid="ignore"):          # 0 / 0 where u = 1: fmin takes e there
                np.divide(m, big, out=m)
            np.fmin(m, e, out=m)
        else:
            np.log1p(e, out=m)
        t += m                                           # softplus(a) - x a
        np.sum(t, axis=1, out=nll[i:j])
        np.minimum(a, 0.0, out=m)
        np.exp(m, out=m)                                 # exp(min(a, 0)): 1 for a >= 0, e for a < 0
        np.add(e, 1.0, out=big)
        np.divide(m, big, out=t)                         # s = sigmoid(a) = exp(min(a, 0)) / (1 + e)

    _on_row_blocks(rows, n, logits.size, _chunk_rows(logits))
    return nll, (x, s)


def _bernoulli_nll_backward_numpy(dnll, cache):
    """minivae.likelihoods.bernoulli_nll_backward from the kept sigmoid: dlogits = dnll (s - x), two passes.
    derivations/likelihoods.md#bernoulli-backward"""
    x, s = cache
    check_arrays("bernoulli_nll_backward", dnll=dnll, cache=s)
    check_shape("bernoulli_nll_backward", "dnll", dnll, (s.shape[0],), "one per example")
    out = np.empty_like(s)

    def rows(i, j):
        np.subtract(s[i:j], x[i:j], out=out[i:j])
        out[i:j] *= dnll[i:j, None]

    _on_row_blocks(rows, s.shape[0], s.size, _chunk_rows(s))
    return out


# ---- the whole step on row blocks ----------------------------------------------------------------------------

ROWS_MIN = 96       # rows per block below which a batch stays whole: 128 whole, 256 split (on a 2-core Xeon
                    # 128 took 4.2 ms whole, 5.1 split; a Zen 5 had 3.40 and 3.27: benchmarks/RESULTS.md)


class _Share:
    """An objective's loss and upstream gradients times ``weight``: a block of n_b of the batch's N rows, reduced
    by a per-example mean over its own rows, carries weight n_b / N of the batch's loss and gradient."""

    def __init__(self, objective, weight):
        self.objective, self.weight = objective, weight
        self.closed_form_kl = objective.closed_form_kl

    def forward(self, nll, kl):
        loss, cache = self.objective.forward(nll, kl)
        return loss * self.weight, cache

    def backward(self, cache):
        dnll, dkl = self.objective.backward(cache)
        return dnll * self.weight, dkl * self.weight


_STEP_BLOCKS = None  # row blocks of the last step (_loss_and_grads_numpy); None: no step has run here


def _loss_and_grads_numpy(chain, x, eps, objective):
    """VAE.loss_and_grads on row blocks: ``chain(x_b, eps_b, share_b)`` (the model's one chain, forward and backward)
    on one block of rows per thread at once, each with one BLAS thread, then the blocks' gradients added. For a loss
    that is a mean of per-example terms, L = sum_b (n_b / N) L_b, and so are its gradient and the stats; every
    matrix product and every elementwise pass of the step then runs on all cores (NumPy's elementwise work alone
    uses one), and no BLAS thread spins beside them. Equal to the chain on the whole batch up to the order of
    the sums (tests/test_kernels.py). eps: (K, N, Z), split on N."""
    global _STEP_BLOCKS
    n = x.shape[0]
    blocks = min(THREADS, n // ROWS_MIN)
    if blocks < 2 or not getattr(objective, "per_example", False) or getattr(_INSIDE, "block", False):
        _STEP_BLOCKS = 1
        return chain(x, eps, objective)
    _STEP_BLOCKS = blocks
    bounds = [n * i // blocks for i in range(blocks + 1)]
    with _one_blas_thread():
        parts = _on_blocks(lambda i, j: chain(x[i:j], eps[:, i:j], _Share(objective, (j - i) / n)), bounds)
    weights = [(j - i) / n for i, j in itertools.pairwise(bounds)]
    loss, grads, _ = parts[0]                            # loss and grads came weighted out of _Share
    for part_loss, part_grads, _ in parts[1:]:
        loss = loss + part_loss
        for k, g in part_grads.items():
            grads[k] += g
    stats = {k: sum(w * stats[k] for w, (_, _, stats) in zip(weights, parts, strict=True)) for k in parts[0][2]}
    return loss, grads, stats


def _terms_numpy(forward, x, eps):
    """The model's forward terms on row blocks: ``forward(x_b, eps_b) -> (nll_b, kl_b)``, (K, n_b) each, on one
    block of rows per thread at once, each with one BLAS thread, joined along the examples. Every example's terms
    are computed exactly as on the whole batch (a row of a matrix product does not depend on the other rows'
    count in exact arithmetic; BLAS may block it differently, so the last bits can differ). eps: (K, N, Z)."""
    n = x.shape[0]
    blocks = min(THREADS, n // ROWS_MIN)
    if blocks < 2 or getattr(_INSIDE, "block", False):
        return forward(x, eps)
    bounds = [n * i // blocks for i in range(blocks + 1)]
    with _one_blas_thread():
        parts = _on_blocks(lambda i, j: forward(x[i:j], eps[:, i:j]), bounds)
    return tuple(np.concatenate([part[t] for part in parts], axis=1) for t in range(2))


_BLAS = None


def _one_blas_thread():
    """threadpoolctl's limit of the BLAS to one thread (while the row blocks run), or nothing where threadpoolctl
    is missing. The controller (a scan of the loaded libraries) is made once."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController().select(user_api="blas")
        except ImportError:
            _BLAS = False
    return _BLAS.limit(limits=1) if _BLAS else contextlib.nullcontext()


_KERNELS = {
    ("numpy", "adam_update"): _adam_update_numpy,
    ("numpy", "adam_update_many"): _adam_update_many_numpy,
    ("cupy", "adam_update"): _adam_update_cupy,
    ("numpy", "loss_and_grads"): _loss_and_grads_numpy,
    ("numpy", "terms"): _terms_numpy,
    ("numpy", "bernoulli_nll"): (_bernoulli_nll_forward_numpy, _bernoulli_nll_backward_numpy),
}


# ---- the allocator ---------------------------------------------------------------------------------------------

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameters (malloc.h)
_RETAINED = False


def _retain_once():
    """retain_freed_memory() the first time a NumPy kernel is looked up, unless MINIVAE_MALLOC=default."""
    global _RETAINED
    _RETAINED = True
    if os.environ.get("MINIVAE_MALLOC", "retain") != "default":
        retain_freed_memory()


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
