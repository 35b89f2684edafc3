"""Count the array operations of one training step: on a GPU each is (at least) one kernel launch, and at small
batch sizes a CuPy step is bound by launches, not arithmetic.

    python benchmarks/count_ops.py [--hidden 400] [--batch 128]

The step runs on NumPy with every array wrapped in an ndarray subclass whose ``__array_ufunc__`` counts the
ufunc calls (arithmetic, in-place operators, exp/log/..., matmul, reductions) and whose array functions count the
rest (where, astype, ...). On CuPy each counted operation is one elementwise or reduction kernel, and a matmul
is one cuBLAS call. The Adam update is counted twice: as the plain formula (minivae.optim.adam_update), and as
minivae.kernels' fused CuPy kernel, which is one launch per parameter.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402


class Counted(np.ndarray):
    counts = collections.Counter()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        Counted.counts[ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"] += 1
        outs = kwargs.get("out")
        if outs:
            kwargs["out"] = _unwrap(outs)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if outs:                                  # in place (a += b) or out=: the caller's own array back
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        Counted.counts[func.__name__] += 1
        return _wrap(super().__array_function__(func, tuple(t for t in types if t is not Counted) or (np.ndarray,),
                                                _unwrap(args), _unwrap(kwargs)))

    def astype(self, *a, **k):
        Counted.counts["astype"] += 1
        return _wrap(self.view(np.ndarray).astype(*a, **k))


def _wrap(x):
    return x.view(Counted) if isinstance(x, np.ndarray) and not isinstance(x, Counted) else x


def _unwrap(x):
    if isinstance(x, Counted):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def count(batch, hidden, x_dim, z_dim):
    from minivae import kernels
    from minivae.model import VAE
    from minivae.optim import Adam

    model = VAE(x_dim, z_dim, hidden=(hidden,), activation="relu", dtype="float32", seed=0)
    for k in model.params:
        model.params[k] = model.params[k].view(Counted)
    hx, heps = workloads.data(batch, x_dim, z_dim)
    x, eps = hx.view(Counted), heps.view(Counted)
    enabled, kernels.ENABLED = kernels.ENABLED, False          # count the plain Adam formula
    try:
        opt = Adam(model.params)
        Counted.counts.clear()
        _, grads, _ = model.loss_and_grads(x, eps)
        fwdbwd = sum(Counted.counts.values())
        by_op = dict(Counted.counts)
        Counted.counts.clear()
        opt.step(grads)
        adam_plain = sum(Counted.counts.values())
    finally:
        kernels.ENABLED = enabled
    n_params = len(model.params)
    return {"batch": batch, "hidden": hidden, "fwd_bwd_ops": fwdbwd, "matmuls": by_op.get("matmul", 0),
            "adam_plain_ops": adam_plain, "adam_fused_cupy_launches": n_params, "parameters": n_params,
            "step_plain": fwdbwd + adam_plain, "step_with_fused_adam": fwdbwd + n_params, "fwd_bwd_by_op": by_op}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=workloads.REFERENCE["hidden"])
    p.add_argument("--json", help="also write the counts here")
    a = p.parse_args(argv)
    c = count(a.batch, a.hidden, workloads.REFERENCE["x_dim"], workloads.REFERENCE["z_dim"])
    print(f"one step of 784-{a.hidden}-(20)-{a.hidden}-784 (relu, bernoulli): {c['fwd_bwd_ops']} array operations "
          f"in forward + backward ({c['matmuls']} of them matmuls); Adam over {c['parameters']} parameters: "
          f"{c['adam_plain_ops']} operations as the plain formula, {c['adam_fused_cupy_launches']} launches with "
          f"the fused CuPy kernel; the step: {c['step_plain']} -> {c['step_with_fused_adam']}")
    print("forward + backward by operation: " + ", ".join(f"{k} {v}" for k, v in sorted(
        c["fwd_bwd_by_op"].items(), key=lambda kv: -kv[1])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(c, f, indent=1)


if __name__ == "__main__":
    main()
