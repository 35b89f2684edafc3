"""Tests for minivae/kernels.py: every fast kernel equals the plain function it stands in for (NumPy here, CuPy
in the GPU-marked cases), the dispatch picks a kernel only where one exists, and switching kernels off gives the
plain path."""
import numpy as np
import pytest

from minivae import kernels
from minivae.backend import get_device, to_host
from minivae.optim import Adam, adam_update

SHAPES = [(), (7,), (5, 3), (64, 33)]
TOL = {"float64": 1e-13, "float32": 2e-6}


def _adam_args(device, shape, dtype, seed):
    r = np.random.default_rng(seed)
    p, g, m = (device.asarray(r.standard_normal(shape), dtype=dtype) for _ in range(3))
    v = device.asarray(r.uniform(0.0, 2.0, size=shape), dtype=dtype)        # a second moment is >= 0
    return p, g, m, v


def _copy(device, a, dtype):
    return device.asarray(to_host(a), dtype=dtype)


@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("device_name", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_adam_kernel_equals_plain_update(monkeypatch, device_name, dtype, shape, blocks):
    """On one thread and split over blocks of elements (NumPy: THREADS blocks once a parameter has PARALLEL_MIN
    elements; here every size is split)."""
    monkeypatch.setattr(kernels, "THREADS", blocks)
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 1)
    monkeypatch.setattr(kernels, "_STEP_BLOCKS", None)          # no step ran before: Adam splits
    if device_name == "gpu":
        pytest.importorskip("cupy")
        try:
            device = get_device("gpu")
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"no CuPy/CUDA GPU: {e}")
    else:
        device = get_device(device_name)
    kernel = kernels.lookup("adam_update", device.asarray(np.zeros(1)))
    assert kernel is not None
    p, g, m, v = _adam_args(device, shape, dtype, seed=len(shape))
    fast = [_copy(device, a, dtype) for a in (p, m, v)]
    plain = [_copy(device, a, dtype) for a in (p, m, v)]
    scratch = device.xp.empty_like(p)
    for t in range(1, 6):                       # several steps: the moments carry over
        step_size, sqrt_bc2 = 1e-2 / (1 - 0.9 ** t), (1 - 0.999 ** t) ** 0.5
        kernel(fast[0], g, fast[1], fast[2], 0.9, 0.999, step_size, sqrt_bc2, 1e-8, scratch)
        adam_update(plain[0], g, plain[1], plain[2], 0.9, 0.999, step_size, sqrt_bc2, 1e-8)
        g = g * 0.5 + 0.1
    for a, b, name in zip(fast, plain, ("p", "m", "v"), strict=True):
        assert a.dtype == b.dtype and tuple(a.shape) == shape, name
        np.testing.assert_allclose(to_host(a), to_host(b), rtol=TOL[dtype], atol=TOL[dtype], err_msg=name)


def test_lookup_finds_a_kernel_only_where_one_exists(monkeypatch):
    assert kernels.lookup("adam_update", np.zeros(2)) is not None
    assert kernels.lookup("adam_update", get_device("strict").asarray(np.zeros(2))) is None
    assert kernels.lookup("no_such_kernel", np.zeros(2)) is None
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert kernels.lookup("adam_update", np.zeros(2)) is None


@pytest.mark.parametrize("chunk_bytes", [kernels.CHUNK_BYTES, 56])
@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_update_many_equals_plain_update_of_each(monkeypatch, dtype, blocks, chunk_bytes):
    """adam_update_many (every parameter of a step in one call, their elements end to end split into blocks,
    each block in cache-sized chunks) against adam_update on each parameter: the block and chunk bounds fall
    inside parameters and across them (56 bytes: chunks of 7 and 14 elements), a 0-d and a strided parameter are
    updated whole, and every element gets the same update."""
    monkeypatch.setattr(kernels, "THREADS", blocks)
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 1)
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(kernels, "_STEP_BLOCKS", None)          # no step ran before: Adam splits
    many = kernels.lookup("adam_update_many", np.zeros(1))
    assert many is not None
    device = get_device("cpu")
    shapes = [(64, 33), (7,), (), (5, 3), (1,)]
    params = [_adam_args(device, shape, dtype, seed=i) for i, shape in enumerate(shapes)]
    strided = _adam_args(device, (6, 8), dtype, seed=9)
    params.append(tuple(a[:, ::2] for a in strided))                         # not C-contiguous
    fast = [[a.copy() for a in (p, m, v)] for p, g, m, v in params]
    plain = [[a.copy() for a in (p, m, v)] for p, g, m, v in params]
    scratch = [np.empty_like(p) for p, _, _, _ in params]
    for t in range(1, 5):
        step_size, sqrt_bc2 = 1e-2 / (1 - 0.9 ** t), (1 - 0.999 ** t) ** 0.5
        many([(f[0], params[i][1], f[1], f[2], scratch[i]) for i, f in enumerate(fast)],
             0.9, 0.999, step_size, sqrt_bc2, 1e-8)
        for i, q in enumerate(plain):
            adam_update(q[0], params[i][1], q[1], q[2], 0.9, 0.999, step_size, sqrt_bc2, 1e-8)
    for i, (f, q) in enumerate(zip(fast, plain, strict=True)):
        assert np.all(f[0] != params[i][0])                                   # every element moved
        for a, b, name in zip(f, q, ("p", "m", "v"), strict=True):
            np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"{name} of parameter {i}")


@pytest.mark.parametrize("batch, pooled", [(8, False), (16, True)])
def test_adam_stays_on_one_thread_after_a_whole_step(monkeypatch, batch, pooled):
    """Adam follows the step: after a step that ran whole (batch 8 < 2 ROWS_MIN) it runs on the calling thread
    alone; after one on two row blocks (batch 16) it splits over the pool too. Either way the same update."""
    from minivae.model import VAE
    monkeypatch.setattr(kernels, "THREADS", 2)
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 1)
    monkeypatch.setattr(kernels, "ROWS_MIN", 8)
    model = VAE(12, 3, hidden=(8,), dtype="float64")
    r = np.random.default_rng(0)
    x, eps = (r.random((batch, 12)) < 0.5).astype(np.float64), r.standard_normal((batch, 3))
    _, grads, _ = model.loss_and_grads(x, eps)
    assert kernels._STEP_BLOCKS == (2 if pooled else 1)
    real, calls = kernels._on_blocks, []
    monkeypatch.setattr(kernels, "_on_blocks", lambda fn, bounds: calls.append(len(bounds) - 1) or real(fn, bounds))
    fast, plain = ({k: v.copy() for k, v in model.params.items()} for _ in range(2))
    Adam(fast, lr=0.01).step(grads)
    assert calls == ([2] if pooled else [])                 # a lone block runs in chunks, without _on_blocks
    monkeypatch.setattr(kernels, "ENABLED", False)
    Adam(plain, lr=0.01).step(grads)
    for k in fast:
        np.testing.assert_allclose(fast[k], plain[k], rtol=1e-13, atol=1e-15, err_msg=k)


def test_adam_with_and_without_kernels_agree(monkeypatch, rng):
    """The optimizer as a whole: kernels on and off give the same parameters after several steps, and the
    kernel path allocates its scratch arrays once."""
    theta0 = {"W": rng.standard_normal((6, 4)), "b": rng.standard_normal(4), "s": np.array(0.3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in theta0.items()} for _ in range(8)]
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        params = {k: v.copy() for k, v in theta0.items()}
        opt = Adam(params, lr=0.05)
        opt.step(grads[0])
        work = dict(opt._work)
        for g in grads[1:]:
            opt.step(g)
        assert set(work) == (set(theta0) if enabled else set())       # scratch only where a kernel ran
        assert all(opt._work[k] is work[k] for k in work)              # made once, reused
        results[enabled] = params
    for k in theta0:
        np.testing.assert_allclose(results[True][k], results[False][k], rtol=1e-13, atol=1e-15)


ROW_CONFIGS = {
    "bernoulli-relu": dict(hidden=(8,), activation="relu", likelihood="bernoulli"),
    "gaussian-per-element": dict(hidden=(6,), activation="tanh", likelihood="gaussian",
                                 gaussian_variance="per-element"),
    "categorical": dict(hidden=(5,), activation="softplus", likelihood="categorical", levels=4),
    "flow-vamp": dict(hidden=(6,), activation="tanh", likelihood="bernoulli", posterior="flow", flow_steps=2,
                      prior="vamp", pseudo_inputs=3),
    "made-mog": dict(hidden=(6,), activation="tanh", likelihood="bernoulli", decoder="made", made_hidden=(9,),
                     prior="mog", prior_components=3),
}


@pytest.mark.parametrize("blocks", [2, 3])
@pytest.mark.parametrize("objective", ["elbo", "elbo-beta", "iw3"])
@pytest.mark.parametrize("config", list(ROW_CONFIGS), ids=list(ROW_CONFIGS))
def test_loss_and_grads_on_row_blocks_equals_the_whole_batch(monkeypatch, config, objective, blocks):
    """The step's kernel (the chain on row blocks, one per thread, gradients added) against the chain on the whole
    batch, for every kind of part: the loss, every gradient and the stats agree to float64 rounding, and the
    kernel really split the batch (its chain ran once per block, on blocks of the batch's rows)."""
    from minivae.model import VAE
    from minivae.objectives import ELBO, IWBound
    model = VAE(7, 2, dtype="float64", seed=1, **ROW_CONFIGS[config])
    r = np.random.default_rng(2)
    for p in model.params.values():
        p += 0.3 * r.standard_normal(p.shape)            # off the initial values: every term is exercised
    n, k = 23, 3 if objective == "iw3" else 1
    x = r.integers(0, 4, size=(n, 7)) / 3.0 if config == "categorical" else r.uniform(size=(n, 7))
    eps = r.standard_normal((k, n, 2))
    obj = {"elbo": ELBO(), "elbo-beta": ELBO(beta=0.4), "iw3": IWBound(beta=0.7)}[objective]
    monkeypatch.setattr(kernels, "ENABLED", False)
    loss0, grads0, stats0 = model.loss_and_grads(x, eps, obj)
    monkeypatch.setattr(kernels, "ENABLED", True)
    monkeypatch.setattr(kernels, "THREADS", blocks)
    monkeypatch.setattr(kernels, "ROWS_MIN", 1)
    seen = []
    chain = model._chain
    monkeypatch.setattr(model, "_chain", lambda xb, eb, o: seen.append(xb.shape[0]) or chain(xb, eb, o))
    loss1, grads1, stats1 = model.loss_and_grads(x, eps, obj)
    assert sorted(seen) == sorted(n * (i + 1) // blocks - n * i // blocks for i in range(blocks))
    np.testing.assert_allclose(loss1, loss0, rtol=1e-13)
    for key in ("nll", "kl"):
        np.testing.assert_allclose(stats1[key], stats0[key], rtol=1e-13, err_msg=key)
    assert set(grads1) == set(grads0)
    for name in grads0:
        np.testing.assert_allclose(grads1[name], grads0[name], rtol=1e-11, atol=1e-13 * np.abs(grads0[name]).max(),
                                   err_msg=name)


@pytest.mark.parametrize("config", list(ROW_CONFIGS), ids=list(ROW_CONFIGS))
def test_forward_terms_on_row_blocks_equal_the_whole_batch(monkeypatch, config):
    """elbo_terms and log_weights (evaluation's forward) on row blocks against the whole batch: every example's
    terms agree to float64 rounding and come back in the batch's order."""
    from minivae.model import VAE
    model = VAE(7, 2, dtype="float64", seed=1, **ROW_CONFIGS[config])
    r = np.random.default_rng(4)
    n = 19
    x = r.integers(0, 4, size=(n, 7)) / 3.0 if config == "categorical" else r.uniform(size=(n, 7))
    eps1, eps3 = r.standard_normal((n, 2)), r.standard_normal((3, n, 2))
    monkeypatch.setattr(kernels, "ENABLED", False)
    whole = model.elbo_terms(x, eps1), model.log_weights(x, eps3)
    monkeypatch.setattr(kernels, "ENABLED", True)
    monkeypatch.setattr(kernels, "THREADS", 3)
    monkeypatch.setattr(kernels, "ROWS_MIN", 1)
    seen = []
    forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda xb, eb, c: seen.append(xb.shape[0]) or forward(xb, eb, c))
    blocks = model.elbo_terms(x, eps1), model.log_weights(x, eps3)
    assert sorted(seen) == [6, 6, 6, 6, 7, 7]        # both calls split into three blocks
    for a, b, name in zip(blocks[0], whole[0], ("nll", "kl"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, err_msg=name)
    np.testing.assert_allclose(blocks[1], whole[1], rtol=1e-13)


def test_row_blocks_run_under_the_callers_errstate(monkeypatch):
    """The blocks on the pool's threads keep the caller's np.errstate: the command runs training under
    errstate(over="ignore", invalid="ignore") and reports a non-finite loss itself, so an overflow in a block must
    not print a RuntimeWarning (nor raise under errstate(all="raise"))."""
    import warnings
    from minivae.model import VAE
    model = VAE(7, 2, hidden=(5,), dtype="float32", seed=1)
    for p in model.params.values():
        p *= 1e30                                           # the forward overflows
    r = np.random.default_rng(3)
    x, eps = r.uniform(size=(40, 7)).astype(np.float32), r.standard_normal((40, 2)).astype(np.float32)
    monkeypatch.setattr(kernels, "THREADS", 2)
    monkeypatch.setattr(kernels, "ROWS_MIN", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a warning on any thread would raise
        with np.errstate(over="ignore", invalid="ignore"):
            loss, _, _ = model.loss_and_grads(x, eps)
            model.elbo_terms(x, eps)
    assert not np.isfinite(loss)
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        model.loss_and_grads(x, eps)


def test_loss_and_grads_keeps_a_batch_coupled_objective_whole(monkeypatch):
    """Free bits charge the batch's mean KL above a floor: not a mean of per-example terms, so the kernel runs
    the chain once on the whole batch; and a batch below ROWS_MIN rows per block stays whole too."""
    from minivae.model import VAE
    from minivae.objectives import ELBO
    model = VAE(7, 2, hidden=(5,), dtype="float64", seed=1)
    r = np.random.default_rng(3)
    x, eps = r.uniform(size=(40, 7)), r.standard_normal((40, 2))
    monkeypatch.setattr(kernels, "THREADS", 2)
    seen = []
    chain = model._chain
    monkeypatch.setattr(model, "_chain", lambda xb, eb, o: seen.append(xb.shape[0]) or chain(xb, eb, o))
    monkeypatch.setattr(kernels, "ROWS_MIN", 1)
    model.loss_and_grads(x, eps, ELBO(free_bits=0.5))
    assert seen == [40]
    model.loss_and_grads(x, eps, ELBO())
    assert sorted(seen[1:]) == [20, 20]
    monkeypatch.setattr(kernels, "ROWS_MIN", 21)
    model.loss_and_grads(x, eps, ELBO())
    assert seen[3:] == [40]


def test_retain_freed_memory_stops_page_faults_between_steps():
    """In a fresh process: after retain_freed_memory(), freeing and re-allocating the same large arrays (as every
    training step does) costs no new page faults. Linux with glibc only."""
    import subprocess
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    code = (
        "import resource, numpy as np\n"
        "from minivae import kernels\n"
        "ok = kernels.retain_freed_memory()\n"
        "def step():\n"
        "    a = [np.ones((2048, 784), np.float32) for _ in range(6)]\n"
        "    del a\n"
        "step(); step()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): step()\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("mallopt is not available here (not glibc)")
    assert int(out[1]) < 100, out          # without it: about 6 x 1,500 faults per step



@pytest.mark.parametrize("malloc", ["retain", "default"])
def test_a_library_step_does_not_page_fault(malloc):
    """In a fresh process that uses minivae as a library (no command, no allocator call of its own): after a
    warm-up, training steps at batch 1024 on the reference model page-fault nothing, because the first NumPy
    kernel applied retain_freed_memory(); with MINIVAE_MALLOC=default glibc's defaults stay and the same steps
    fault thousands of times (the check can fail). Linux with glibc only."""
    import os
    import subprocess
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    code = (
        "import resource, numpy as np\n"
        "from minivae.model import VAE\n"
        "from minivae.optim import Adam\n"
        "m = VAE(784, 20, hidden=(400,), activation='relu', dtype='float32')\n"
        "opt = Adam(m.params)\n"
        "r = np.random.default_rng(0)\n"
        "x, eps = r.random((1024, 784), dtype=np.float32), r.standard_normal((1024, 20), dtype=np.float32)\n"
        "def step():\n"
        "    loss, grads, _ = m.loss_and_grads(x, eps)\n"
        "    opt.step(grads)\n"
        "for _ in range(3): step()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MINIVAE_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    faults = int(out.stdout.split()[-1])
    if malloc == "retain":
        assert faults < 100, out.stdout        # five steps
    else:
        assert faults > 1000, out.stdout       # glibc's defaults: the freed top of the heap is faulted in again

# ---- the Bernoulli NLL pair -----------------------------------------------------------------------------------

def assert_nll_close(nll, plain_nll):
    """Bit for bit in float64; within 5 ulp relative in float32 (the kernel's Goldberg log1p), inf equal to inf."""
    assert nll.dtype == plain_nll.dtype
    if nll.dtype == np.float64:
        np.testing.assert_array_equal(nll, plain_nll)
    else:
        np.testing.assert_allclose(nll, plain_nll, rtol=5 * np.finfo(np.float32).eps, atol=0)


def test_float32_log1p_in_goldbergs_form_is_accurate_to_a_few_ulp():
    """The kernel's float32 log1p(e) for e = exp(-|a|) at 10^6 logits over [-104, 104] (e from 1 down to the
    smallest subnormal, and 0), against log1p in float64 rounded to float32: within 5 ulp everywhere (the SIMD
    log's own few ulp, plus half an ulp for each of the product and the quotient; 4.0 measured on Zen 3, where
    the plain op's libm log1p is within 1), and equal to e itself where 1 + e rounds to 1."""
    a = np.concatenate([np.linspace(-104.0, 104.0, 1_000_000), [0.0, 1e-8, 17.0, 17.4, 88.0, 103.9, 200.0]])
    a = a.astype(np.float32)
    forward, _ = kernels.lookup("bernoulli_nll", np.zeros(1))
    x = np.zeros_like(a)[:, None]
    nll, _ = forward(x, a[:, None])                  # x = 0: nll = max(a, 0) + log1p(e); a <= 0 leaves log1p(e)
    neg = a <= 0
    e = np.exp(-np.abs(a[neg])).astype(np.float64)  # the float32 e the kernel takes log1p of
    want = np.log1p(e).astype(np.float32)
    ulp = np.spacing(np.maximum(want, np.finfo(np.float32).smallest_subnormal))
    assert np.all(np.abs(nll[neg].astype(np.float64) - want) <= 5 * ulp)
    tiny = np.float32(1.0) + e.astype(np.float32) == 1.0                  # where u = 1: log1p(e) is e
    assert tiny.sum() > 1000 and np.array_equal(nll[neg][tiny], e[tiny].astype(np.float32))
    assert nll[a == 0.0][0] == np.float32(np.log(2.0))


def _bernoulli_case(n, dtype, binary, seed=0):
    r = np.random.default_rng(seed)
    logits = (8.0 * r.standard_normal((n, 37))).astype(dtype)
    logits[0, :6] = [0.0, 20.0, -20.0, 90.0, -90.0, 1e-8]                  # zero, saturated, tiny
    x = (r.random((n, 37)) < 0.5) if binary else r.random((n, 37))
    x = x.astype(dtype)
    x[0, :6] = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    return x, logits, r.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("chunk_bytes", [kernels.CHUNK_BYTES, 900])
@pytest.mark.parametrize("blocks", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [1, 5, 64])
def test_bernoulli_kernel_equals_the_plain_pair_for_binary_data(monkeypatch, blocks, dtype, n, chunk_bytes):
    """The kernel does the plain op's arithmetic and keeps its sigmoid: the backward agrees bit for bit, on one
    thread or split over row blocks, whole or in chunks of rows (900 bytes: 3 rows of 37 float64, 6 of float32,
    a shorter last one), and so does the nll in float64; in float32, where log1p(e) is Goldberg's
    e log(u) / (u - 1), each term is within a few ulp of the plain log1p, so the nll (a sum of positive
    terms) is within 5 ulp of the plain op's, relative (assert_nll_close)."""
    from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
    monkeypatch.setattr(kernels, "THREADS", blocks)
    monkeypatch.setattr(kernels, "PARALLEL_MIN", 1)
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk_bytes)
    forward, backward = kernels.lookup("bernoulli_nll", np.zeros(1))
    x, logits, dnll = _bernoulli_case(n, dtype, binary=True)
    x0, logits0 = x.copy(), logits.copy()
    nll, cache = forward(x, logits)
    plain_nll, plain_cache = bernoulli_nll_forward(x, logits)
    assert_nll_close(nll, plain_nll)
    np.testing.assert_array_equal(backward(dnll, cache), bernoulli_nll_backward(dnll, plain_cache))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(logits, logits0)                          # inputs untouched


@pytest.mark.parametrize("chunk_bytes", [kernels.CHUNK_BYTES, 900])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bernoulli_kernel_equals_the_plain_pair_for_grey_levels_and_infinite_logits(monkeypatch, dtype,
                                                                                       chunk_bytes):
    """Fractional x and infinite logits: the kernel does the plain op's arithmetic, so inf stays inf (not
    inf - inf = NaN), the backward agrees bit for bit and the nll as in the binary case."""
    from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk_bytes)
    forward, backward = kernels.lookup("bernoulli_nll", np.zeros(1))
    x, logits, dnll = _bernoulli_case(64, dtype, binary=False)
    logits[3, :2] = [np.inf, -np.inf]
    nll, cache = forward(x, logits)
    plain_nll, plain_cache = bernoulli_nll_forward(x, logits)
    assert np.isposinf(nll[3])
    assert_nll_close(nll, plain_nll)
    np.testing.assert_array_equal(backward(dnll, cache), bernoulli_nll_backward(dnll, plain_cache))


def test_bernoulli_kernel_propagates_nan():
    forward, backward = kernels.lookup("bernoulli_nll", np.zeros(1))
    x, logits, dnll = _bernoulli_case(4, "float64", binary=True)
    logits[2, 3] = np.nan
    nll, cache = forward(x, logits)
    assert np.isnan(nll[2]) and np.isfinite(nll[[0, 1, 3]]).all()
    assert np.isnan(backward(dnll, cache)[2, 3])


def test_the_model_uses_the_bernoulli_kernel_and_gives_the_plain_loss(monkeypatch):
    """The whole step with the kernel and with kernels off: the same loss and gradients (binary data)."""
    from minivae.model import VAE
    r = np.random.default_rng(1)
    x = (r.random((16, 12)) < 0.5).astype(np.float64)
    eps = r.standard_normal((16, 3))
    model = VAE(12, 3, hidden=(8,), dtype="float64")
    calls = []
    real = kernels._KERNELS[("numpy", "bernoulli_nll")]
    monkeypatch.setitem(kernels._KERNELS, ("numpy", "bernoulli_nll"),
                        (lambda *a: calls.append(1) or real[0](*a), real[1]))
    loss, grads, _ = model.loss_and_grads(x, eps)
    assert calls
    monkeypatch.setattr(kernels, "ENABLED", False)
    plain_loss, plain_grads, _ = model.loss_and_grads(x, eps)
    assert loss == plain_loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], plain_grads[k], err_msg=k)
