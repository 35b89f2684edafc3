"""The contenders that ``bench_step.py`` times: one training step of the reference VAE, or a part of one, built
for a batch size N and a hidden width H.

The reference model is 784-H-(20)-H-784 with ReLU and a Bernoulli likelihood on logits, float32, trained by
Adam (lr 1e-3), on random binary data x and noise eps ~ N(0, I) drawn once from a fixed seed. Every contender
is a ``Contender``: a zero-argument ``run`` that does the work once and a ``sync`` that waits for the device
(a no-op on the CPU), so the clock is read only when the work is done.

    minivae            loss_and_grads + Adam.step (NumPy, or CuPy on the GPU)
    minivae-fwdbwd     loss_and_grads alone: forward and backward, no optimizer
    minivae-plain      the step with minivae.kernels turned off (the plain Adam formula)
    torch-adam         the same model in PyTorch eager: autograd, torch.optim.Adam with its default implementation
    torch-fused        the same with torch.optim.Adam(fused=True)
    torch-fwdbwd       PyTorch forward and backward alone
    gemm               the GEMM floor: only the matrix products of one step, same shapes and layouts as minivae
    gemm-torch         the same products through torch.mm (for context: another BLAS)

The GEMM floor counts the products from the architecture (``gemm_shapes``): per affine layer y = x W + b one
product forward (x W), and backward dW = x^T dy and dx = dy W^T, except dx of the first encoder layer, whose
input is the data (minivae skips it, and so does autograd: x does not require a gradient). For 784-400-(20)-
400-784 that is 5 forward products (x->h, h->mu, h->logvar, z->h', h'->logits), 5 dW and 4 dx: 14 in all.
The floor is the same for the full step and for forward + backward alone (Adam has no matrix products).
"""
import os
import sys

import numpy as np

REFERENCE = dict(x_dim=784, z_dim=20, hidden=400)
SEED = 0


class Contender:
    """``run()`` does the work once; ``sync()`` waits until the device has finished it."""

    def __init__(self, name, run, sync=lambda: None, info=None, memory=None):
        self.name, self.run, self.sync, self.info, self.memory = name, run, sync, info or {}, memory


def layer_shapes(x_dim, hidden, z_dim):
    """(name, D_in, D_out, needs_dx) of every affine layer of the VAE, in forward order."""
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    layers, d = [], x_dim
    for i, h in enumerate(hidden):
        layers.append((f"enc.{i}", d, h, i > 0))
        d = h
    deep = len(hidden) > 0
    layers += [("enc.mu", d, z_dim, deep), ("enc.logvar", d, z_dim, deep)]
    d = z_dim
    for i, h in enumerate(hidden):
        layers.append((f"dec.{i}", d, h, True))
        d = h
    layers.append(("dec.out", d, x_dim, True))
    return layers


def gemm_shapes(n, x_dim, hidden, z_dim):
    """(what, layer, (M, K), (K, N')) of every matrix product of one training step, as minivae lays them out:
    forward x @ W, backward x.T @ dy and dy @ W.T."""
    out = []
    for name, d_in, d_out, needs_dx in layer_shapes(x_dim, hidden, z_dim):
        out.append(("fwd", name, (n, d_in), (d_in, d_out)))
        out.append(("dW", name, (d_in, n), (n, d_out)))
        if needs_dx:
            out.append(("dx", name, (n, d_out), (d_out, d_in)))
    return out


def gemm_flops(n, x_dim, hidden, z_dim):
    """Floating-point operations of the step's matrix products (2 M K N' each)."""
    return sum(2 * a[0] * a[1] * b[1] for _, _, a, b in gemm_shapes(n, x_dim, hidden, z_dim))


def data(n, x_dim, z_dim):
    """Random binary x: (N, D) and eps ~ N(0, I): (N, Z), float32, on the host, the same for every contender."""
    r = np.random.default_rng(SEED)
    x = (r.random((n, x_dim)) < 0.5).astype(np.float32)
    eps = r.standard_normal((n, z_dim)).astype(np.float32)
    return x, eps


# ---- minivae -------------------------------------------------------------------------------------------------

def _sync_for(device_name):
    if device_name == "gpu":
        import cupy
        return cupy.cuda.Device().synchronize
    return lambda: None


def minivae_contenders(n, hidden, x_dim, z_dim, device="cpu", names=("minivae", "minivae-fwdbwd", "minivae-plain")):
    """minivae's step, its forward + backward alone, and the step without the fast kernels."""
    from minivae import kernels
    from minivae.model import VAE
    from minivae.optim import Adam

    model = VAE(x_dim, z_dim, hidden=(hidden,), activation="relu", likelihood="bernoulli", dtype="float32",
                device=device, seed=SEED)
    opt = Adam(model.params, lr=1e-3)
    hx, heps = data(n, x_dim, z_dim)
    x, eps = model.device.asarray(hx, dtype="float32"), model.device.asarray(heps, dtype="float32")
    sync = _sync_for(model.device.name)

    def step():
        loss, grads, stats = model.loss_and_grads(x, eps)
        opt.step(grads)

    def fwdbwd():
        model.loss_and_grads(x, eps)

    def plain_step():
        enabled, kernels.ENABLED = kernels.ENABLED, False
        try:
            step()
        finally:
            kernels.ENABLED = enabled

    state_bytes = sum(int(a.nbytes) for d in (model.params, opt.m, opt.v) for a in d.values())
    info = {"params": int(sum(int(np.prod(p.shape)) for p in model.params.values())),
            "state_bytes": state_bytes, "data_bytes": int(x.nbytes + eps.nbytes),
            "loss": None}
    loss, _, _ = model.loss_and_grads(x, eps)
    from minivae.backend import to_host
    info["loss"] = float(to_host(loss))
    make = {"minivae": step, "minivae-fwdbwd": fwdbwd, "minivae-plain": plain_step}
    out = []
    for name in names:
        out.append(Contender(name, make[name], sync, info,
                             memory=(lambda f=make[name]: _peak_memory(f, model.device.name))))
    return out


def _peak_memory(run, device_name):
    """Peak bytes allocated during one call of ``run`` above what was allocated before it: NumPy allocations
    traced by tracemalloc on the CPU, the CuPy memory pool's allocations (a memory hook) on the GPU."""
    if device_name == "gpu":
        return _cupy_peak(run)
    import tracemalloc
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def _cupy_peak(run):
    import cupy
    from cupy.cuda import memory_hook

    class Peak(memory_hook.MemoryHook):
        name = "minivae-peak"

        def __init__(self):
            self.now = self.peak = 0
            self.sizes = {}

        def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
            self.sizes[mem_ptr] = mem_size
            self.now += mem_size
            self.peak = max(self.peak, self.now)

        def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
            self.now -= self.sizes.pop(mem_ptr, mem_size)

    hook = Peak()
    cupy.cuda.Device().synchronize()
    with hook:
        run()
        cupy.cuda.Device().synchronize()
    return int(hook.peak)


def gemm_contender(n, hidden, x_dim, z_dim, device="cpu"):
    """The GEMM floor on NumPy (or CuPy): the step's matrix products and nothing else, on operands made once."""
    if device == "gpu":
        import cupy as xp
    else:
        xp = np
    r = np.random.default_rng(SEED + 1)
    ops = []
    for what, _, a_shape, b_shape in gemm_shapes(n, x_dim, hidden, z_dim):
        # lay the operands out as minivae does: x.T @ dy reads a transposed view, dy @ W.T a transposed W
        a = xp.asarray(r.standard_normal(a_shape[::-1] if what == "dW" else a_shape).astype(np.float32))
        b = xp.asarray(r.standard_normal(b_shape[::-1] if what == "dx" else b_shape).astype(np.float32))
        ops.append((a.T if what == "dW" else a, b.T if what == "dx" else b))

    def run():
        for a, b in ops:
            a @ b

    return Contender("gemm", run, _sync_for(device),
                     {"gemms": len(ops), "flops": gemm_flops(n, x_dim, hidden, z_dim)})


# ---- PyTorch ---------------------------------------------------------------------------------------------------

def torch_contenders(n, hidden, x_dim, z_dim, device="cpu",
                     names=("torch-adam", "torch-fused", "torch-fwdbwd", "gemm-torch")):
    """The same VAE in PyTorch eager (nn.Linear, autograd), with minivae's initial weights, so both compute the
    same loss; and the GEMM floor through torch.mm. A contender this torch cannot run is reported, not built."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if device == "gpu" else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    class TorchVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(x_dim, hidden)
            self.mu = torch.nn.Linear(hidden, z_dim)
            self.logvar = torch.nn.Linear(hidden, z_dim)
            self.dec = torch.nn.Linear(z_dim, hidden)
            self.out = torch.nn.Linear(hidden, x_dim)

        def forward(self, x, eps):
            h = torch.relu(self.enc(x))
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * eps
            logits = self.out(torch.relu(self.dec(z)))
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kl = 0.5 * torch.sum(torch.exp(logvar) + mu * mu - 1.0 - logvar)
            return (nll + kl) / x.shape[0]

    def build():
        from minivae.model import VAE
        ref = VAE(x_dim, z_dim, hidden=(hidden,), activation="relu", dtype="float32", seed=SEED).params
        m = TorchVAE()
        with torch.no_grad():
            for mod, key in ((m.enc, "enc.0"), (m.mu, "enc.mu"), (m.logvar, "enc.logvar"), (m.dec, "dec.0"),
                             (m.out, "dec.out")):
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(ref[key + ".W"].T)))
                mod.bias.copy_(torch.from_numpy(ref[key + ".b"]))
        return m.to(dev)

    hx, heps = data(n, x_dim, z_dim)
    x, eps = torch.from_numpy(hx).to(dev), torch.from_numpy(heps).to(dev)
    out = []
    for name in names:
        if name == "gemm-torch":
            r = np.random.default_rng(SEED + 1)
            ops = []
            for what, _, a_shape, b_shape in gemm_shapes(n, x_dim, hidden, z_dim):
                a = torch.from_numpy(r.standard_normal(a_shape[::-1] if what == "dW" else a_shape)
                                     .astype(np.float32)).to(dev)
                b = torch.from_numpy(r.standard_normal(b_shape[::-1] if what == "dx" else b_shape)
                                     .astype(np.float32)).to(dev)
                ops.append((a.T if what == "dW" else a, b.T if what == "dx" else b))

            def run(ops=ops):
                for a, b in ops:
                    torch.mm(a, b)
            out.append(Contender(name, run, sync, {"gemms": len(ops)}))
            continue
        model = build()
        loss0 = float(model(x, eps).detach().cpu())
        if name == "torch-fwdbwd":
            def run(model=model):
                model.zero_grad(set_to_none=True)
                model(x, eps).backward()
        else:
            try:
                opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=(name == "torch-fused"))
                model(x, eps).backward()
                opt.step()                       # fails here if this build has no fused Adam on this device
                model = build()
                opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=(name == "torch-fused"))
            except Exception as e:              # noqa: BLE001 - reported in the results, not hidden
                out.append(Contender(name, None, sync, {"unsupported": f"{type(e).__name__}: {e}"}))
                continue

            def run(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                model(x, eps).backward()
                opt.step()
        memory = None
        if dev.type == "cuda":
            def memory(run=run):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                run()
                torch.cuda.synchronize()
                return int(torch.cuda.max_memory_allocated() - base)
        out.append(Contender(name, run, sync, {"loss": loss0}, memory=memory))
    return out


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def gpu_available():
    try:
        from minivae.backend import get_device
        get_device("gpu")
        return True
    except Exception:  # noqa: BLE001 - any failure means: no GPU here
        return False


def versions():
    """Library versions and thread pools of this process."""
    import platform
    out = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
           "machine": platform.machine(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            out["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        out["cpu"] = None
    try:
        import threadpoolctl
        out["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
                              for p in threadpoolctl.threadpool_info()]
    except ImportError:
        out["threadpools"] = None
    for mod in ("torch", "cupy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = m.__version__
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    return out

