"""Does an idle BLAS or OpenMP worker left spinning by one contender steal the other's core?

    python benchmarks/bench_isolation.py [--batches 128,2048] [--rounds 7]

OpenBLAS keeps its worker threads spinning for a while after each call (OPENBLAS_THREAD_TIMEOUT, 2^N cycles, N
= 28 by default: about 0.1 s) and libgomp, which PyTorch uses, spins too before it sleeps. When minivae (NumPy,
OpenBLAS) and PyTorch (OpenMP) alternate on 2 cores, one runtime's spinning workers can hold the cores the other
needs. This script times minivae's step and PyTorch's step (default Adam) in five set-ups:

    one-process          both in one process, alternating (OpenBLAS and OpenMP pools side by side)
    one-process-timeout  the same with OPENBLAS_THREAD_TIMEOUT=4 (the shortest spin OpenBLAS allows)
    one-process-passive  the same with OMP_WAIT_POLICY=PASSIVE as well (OpenMP threads sleep at once)
    processes-no-settle  each runtime in its own process, switching with no pause
    processes            each in its own process, with a pause before each switch (what bench_step.py does)

and prints the medians side by side, so the report can say which set-up the numbers come from and why.
"""
import argparse
import json
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_step  # noqa: E402
import workloads  # noqa: E402

SETUPS = {
    "one-process": dict(groups=[["minivae", "torch-adam"]], env={}, settle=0.0),
    "one-process-timeout": dict(groups=[["minivae", "torch-adam"]], env={"OPENBLAS_THREAD_TIMEOUT": "4"}, settle=0.0),
    "one-process-passive": dict(groups=[["minivae", "torch-adam"]],
                                env={"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}, settle=0.0),
    "processes-no-settle": dict(groups=[["minivae"], ["torch-adam"]], env={}, settle=0.0),
    "processes": dict(groups=[["minivae"], ["torch-adam"]], env={}, settle=0.3),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[128, 2048])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--turn", type=float, default=0.08)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--quiet", type=float, default=0.15)
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_isolation.json"))
    args = p.parse_args(argv)
    if not workloads.torch_available():
        sys.exit("bench_isolation: needs PyTorch (pip install torch); it compares two runtimes")
    dims = {"x_dim": workloads.REFERENCE["x_dim"], "z_dim": workloads.REFERENCE["z_dim"]}
    hidden = workloads.REFERENCE["hidden"]
    results = []
    for name in args.setups.split(","):
        setup = SETUPS[name]
        margs = types.SimpleNamespace(rounds=args.rounds, turn=args.turn, warmup=0.3, settle=setup["settle"],
                                      quiet=args.quiet, max_wait=120.0)
        workers = [bench_step.Worker(f"g{i}", g, "cpu", args.threads, dims, env=setup["env"])
                   for i, g in enumerate(setup["groups"])]
        try:
            for n in args.batches:
                rows, _ = bench_step.measure(workers, n, hidden, margs, "cpu")
                med = {r["contender"]: r["median_ms"] for r in rows}
                results.append({"setup": name, "batch": n, "env": setup["env"], "settle_s": setup["settle"],
                                "median_ms": med, "background_load": rows[0]["background_load"],
                                "quartiles_ms": {r["contender"]: [r["p25_ms"], r["p75_ms"]] for r in rows},
                                "page_faults_per_step": {r["contender"]: r["page_faults_per_step"] for r in rows}})
                print(f"{name:22s} batch {n:5d}: minivae {med['minivae']:8.2f} ms   torch-adam "
                      f"{med['torch-adam']:8.2f} ms   ratio {med['minivae'] / med['torch-adam']:.2f}", flush=True)
        finally:
            for w in workers:
                w.close()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"date": bench_step.datetime.date.today().isoformat(), "threads": args.threads,
                   "results": results}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
