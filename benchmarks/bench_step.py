"""Time one training step of the reference VAE (784-400-(20)-400-784, ReLU, Bernoulli logits, float32, Adam):
minivae against PyTorch eager and against the GEMM floor, over batch sizes and hidden widths.

    python benchmarks/bench_step.py            # the full run, a few minutes on 2 cores
    python benchmarks/bench_step.py --quick    # a smoke run on tiny sizes (seconds)

Method (see benchmarks/RESULTS.md):
- Each runtime runs in its own worker process: NumPy-side contenders (minivae, the GEMM floor) in one, PyTorch in
  another (CuPy and PyTorch CUDA likewise on a GPU), so that an idle BLAS or OpenMP worker left spinning by one
  runtime cannot share a process with the other. Before every turn the parent waits ``--settle`` seconds
  (longer than OpenBLAS's and libgomp's spin before they sleep), so a worker left spinning by the previous turn
  cannot steal a core from the next one: not only across processes, but within one too, since minivae's step
  runs its BLAS on one thread per row block while the GEMM floor and the plain step use the BLAS's own threads
  (which spin for about 0.1 s after their last call). benchmarks/bench_isolation.py measures
  what happens without these precautions.
- Threads are pinned in every worker (threadpoolctl for the BLAS and OpenMP pools, torch.set_num_threads) and
  printed. Each contender is warmed up; then ``--rounds`` rounds alternate the contenders (the order rotates
  every round), each turn running untimed steps for ``--lead`` seconds (the pools waking from the settle pause:
  the scheduler needs ~50 ms to move a woken pool thread off its waker's core) and then timing several single
  steps; the median, the quartiles and the minimum are reported.
- On a GPU the device is synchronised before every clock read.
- Peak memory of one minivae step: the NumPy allocations traced by tracemalloc above what was allocated before
  the step (CuPy: the memory pool's allocations; PyTorch CUDA: max_memory_allocated).

Writes ``<out>/bench_step.json`` and the plots ``<out>/bench_step_time.png`` and ``<out>/bench_step_memory.png``
(``--name`` changes the prefix).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

try:
    import resource                                     # page faults per step (Unix)
except ImportError:
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402

# ---- targets ---------------------------------------------------------------------------------------------------

# the goals live in targets.json, beside the harness: {device, ratio, limit, batches (null: every batch)}
with open(os.path.join(HERE, "targets.json")) as _f:
    TARGETS = json.load(_f)["targets"]

MALLOC_RETAIN = {"MALLOC_TRIM_THRESHOLD_": str(256 * 2**20), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}

RATIOS = [("minivae", "torch-adam"), ("minivae", "torch-fused"), ("minivae", "gemm"), ("minivae-fwdbwd", "gemm"),
          ("torch-adam", "gemm"), ("torch-fused", "gemm"), ("torch-fwdbwd", "gemm"), ("gemm-torch", "gemm"),
          ("minivae-plain", "minivae"), ("minivae@baseline", "minivae")]


# ---- the worker: builds and times the contenders of one process ------------------------------------------------

def worker_main(spec):
    """Serve the parent: one JSON request per line on stdin, one JSON answer per line on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                   # anything a library prints goes to stderr, not the protocol
    if spec.get("sys_path"):
        sys.path.insert(0, spec["sys_path"])
    for name in list(sys.modules):                  # a baseline tree must not reuse an imported minivae
        if name == "minivae" or name.startswith("minivae."):
            del sys.modules[name]
    threads, device = spec["threads"], spec["device"]
    torch_needed = any(c.startswith(("torch", "gemm-torch")) for c in spec["contenders"])
    if torch_needed:
        import torch
        torch.set_num_threads(threads)
    import numpy  # noqa: F401  (load the BLAS before pinning it)
    if device == "gpu" and not torch_needed:
        import cupy  # noqa: F401
    try:
        from threadpoolctl import threadpool_limits
        _limits = threadpool_limits(limits=threads)      # kept alive: the limits hold while it lives
    except ImportError:
        _limits = None                                    # the parent also set the *_NUM_THREADS variables
    dims = spec["dims"]
    contenders = {}

    def answer(obj):
        proto.write(json.dumps(obj) + "\n")

    def setup(batch, hidden, warmup_s, only=None):
        contenders.clear()
        base = [c.split("@")[0] for c in spec["contenders"] if only is None or c in only]
        suffix = {c.split("@")[0]: c for c in spec["contenders"]}
        built = []
        mv = [c for c in base if c.startswith("minivae")]
        if mv:
            built += workloads.minivae_contenders(batch, hidden, dims["x_dim"], dims["z_dim"], device, names=mv)
        if "gemm" in base:
            built.append(workloads.gemm_contender(batch, hidden, dims["x_dim"], dims["z_dim"], device))
        th = [c for c in base if c.startswith("torch") or c == "gemm-torch"]
        if th:
            built += workloads.torch_contenders(batch, hidden, dims["x_dim"], dims["z_dim"], device, names=th)
        out = {}
        for c in built:
            name = suffix[c.name]
            if c.run is None:
                out[name] = {"info": c.info}
                continue
            contenders[name] = c
            steps, t0 = [], time.perf_counter()
            while len(steps) < 3 or time.perf_counter() - t0 < warmup_s:   # warm-up: caches, allocator, clocks
                t = time.perf_counter()
                c.run()
                c.sync()
                steps.append(time.perf_counter() - t)
            out[name] = {"info": c.info, "estimate_s": statistics.median(steps[len(steps) // 2:])}
        return out

    def run(name, reps, lead_s=0.0):
        c = contenders[name]
        times = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < lead_s:                # untimed: the pools wake from the settle pause
            c.run()
        c.sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0
        for _ in range(reps):
            t0 = time.perf_counter()
            c.run()
            c.sync()                                             # the device has finished before the clock is read
            times.append(time.perf_counter() - t0)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) if resource else None
        return {"times": times, "page_faults": faults}

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "info":
                answer({"ok": workloads.versions()})
            elif req["cmd"] == "setup":
                answer({"ok": setup(req["batch"], req["hidden"], req["warmup_s"], req.get("only"))})
            elif req["cmd"] == "run":
                answer({"ok": run(req["name"], req["reps"], req.get("lead_s", 0.0))})
            elif req["cmd"] == "memory":
                c = contenders[req["name"]]
                answer({"ok": {"peak_bytes": c.memory() if c.memory else None,
                               "state_bytes": c.info.get("state_bytes")}})
            elif req["cmd"] == "quit":
                answer({"ok": True})
                return
        except Exception as e:  # noqa: BLE001 - sent to the parent, which stops with the message
            import traceback
            answer({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


class Worker:
    """A worker process hosting some contenders, driven over pipes."""

    def __init__(self, group, contenders, device, threads, dims, env=None, sys_path=None):
        self.group, self.contenders = group, list(contenders)
        spec = {"contenders": self.contenders, "device": device, "threads": threads, "dims": dims,
                "sys_path": sys_path}
        full_env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            full_env[var] = str(threads)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env,
                                     cwd=HERE)

    def call(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.group} exited (status {self.proc.wait()}); see its stderr above")
        ans = json.loads(line)
        if "error" in ans:
            raise RuntimeError(f"worker {self.group}: {ans['error']}\n{ans.get('traceback', '')}")
        return ans["ok"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call(cmd="quit")
            except (RuntimeError, BrokenPipeError, OSError):
                pass
            self.proc.wait(timeout=30)


# ---- the parent: rounds, statistics, ratios, targets -----------------------------------------------------------

def quantile(xs, q):
    xs = sorted(xs)
    i = q * (len(xs) - 1)
    lo = int(i)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def _busy_jiffies():
    """CPU time used on the machine so far, all CPUs together, and the total elapsed CPU capacity (jiffies)."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def _own_jiffies(pids):
    """CPU time (user + system, all threads) used so far by the processes ``pids``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])          # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


class LoadMeter:
    """The share of all CPUs used by *other* processes (anything but this benchmark and its workers) between
    ``start()`` and ``stop()``: a round during which someone else computed is not a clean measurement."""

    def __init__(self, pids):
        self.pids = [os.getpid()] + list(pids)

    def start(self):
        try:
            self.t0, self.own0 = _busy_jiffies(), _own_jiffies(self.pids)
        except (OSError, ValueError):
            self.t0 = None

    def stop(self):
        if self.t0 is None:
            return None
        (b0, c0), (b1, c1) = self.t0, _busy_jiffies()
        other = (b1 - b0) - (_own_jiffies(self.pids) - self.own0)
        return max(0.0, other / max(c1 - c0, 1))


def background_load(seconds=0.5):
    """The share of all CPUs busy over ``seconds`` while this benchmark waits (other people's work). None where
    /proc/stat is missing."""
    meter = LoadMeter([])
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def wait_for_quiet(limit, max_wait):
    """Wait (at most ``max_wait`` s) until other processes use less than ``limit`` of the CPUs; returns the last
    measured background load."""
    t0 = time.perf_counter()
    load = background_load()
    while load is not None and load > limit and time.perf_counter() - t0 < max_wait:
        time.sleep(2.0)
        load = background_load()
    return load


def measure(workers, batch, hidden, args, device):
    """Set up every worker for (batch, hidden), then alternate the contenders for ``args.rounds`` rounds.

    Each round gives every contender one turn (the order rotates from round to round). A round during which
    other processes used more than ``args.quiet`` of the CPUs is thrown away and run again, after waiting for
    quiet, up to ``args.rounds`` extra times; the rows say how many rounds were discarded and the largest
    outside load of the rounds kept."""
    found, unsupported = {}, {}
    for w in workers:
        for name, r in w.call(cmd="setup", batch=batch, hidden=hidden, warmup_s=args.warmup).items():
            if "estimate_s" in r:
                found[name] = (w, r)
            else:
                unsupported[name] = r["info"].get("unsupported", "not built")
    # enough single-step repetitions per turn that a turn lasts about --turn seconds
    reps = {name: max(1, min(200, round(args.turn / max(r["estimate_s"], 1e-6)))) for name, (w, r) in found.items()}
    groups = [w for w in workers if any(found.get(n, (None,))[0] is w for n in found)]
    meter = LoadMeter([w.proc.pid for w in workers])
    times = {name: [] for name in found}
    faults = {name: [] for name in found}
    kept, discarded, worst, last_discarded = 0, 0, 0.0, False
    last = None
    k = 0
    while kept < args.rounds:
        if args.quiet < 1.0 and (k == 0 or last_discarded):
            wait_for_quiet(args.quiet, args.max_wait)
        order = groups[k % len(groups):] + groups[:k % len(groups)]
        this = {name: [] for name in found}
        meter.start()
        for w in order:
            names = [n for n in w.contenders if n in found]
            names = names[k % len(names):] + names[:k % len(names)]
            for n in names:
                if last is not None:
                    time.sleep(args.settle)             # let the previous turn's pools go to sleep
                this[n] = w.call(cmd="run", name=n, reps=reps[n], lead_s=args.lead)   # {"times": [...], ...}
                last = w
        load = meter.stop()
        k += 1
        last_discarded = load is not None and load > args.quiet and discarded < args.rounds
        if last_discarded:
            discarded += 1                              # someone else computed during this round: run it again
            continue
        kept += 1
        worst = max(worst, load or 0.0)
        for n, r in this.items():
            times[n] += r["times"]
            if r["page_faults"] is not None:
                faults[n].append(r["page_faults"] / len(r["times"]))
    rows = []
    for name, ts in times.items():
        ms = [t * 1e3 for t in ts]
        rows.append({"device": device, "batch": batch, "hidden": hidden, "contender": name,
                     "median_ms": statistics.median(ms), "p25_ms": quantile(ms, 0.25), "p75_ms": quantile(ms, 0.75),
                     "min_ms": min(ms), "n": len(ms), "reps_per_turn": reps[name], "info": found[name][1]["info"],
                     "background_load": worst, "rounds_discarded": discarded,
                     "page_faults_per_step": statistics.median(faults[name]) if faults[name] else None,
                     "times_ms": [round(t, 4) for t in ms]})
    return rows, unsupported


def ratios_for(rows):
    med = {r["contender"]: r["median_ms"] for r in rows}
    out = {}
    for a, b in RATIOS:
        if a in med and b in med:
            out[f"{a} / {b}"] = med[a] / med[b]
    return out


def check_targets(ratio_rows, batches):
    out = []
    for t in TARGETS:
        device, name, limit = t["device"], t["ratio"], t["limit"]
        for r in ratio_rows:
            if r["device"] == device and r["hidden"] == r["reference_hidden"] and r["batch"] in batches \
                    and (t["batches"] is None or r["batch"] in t["batches"]) and name in r["ratios"]:
                v = r["ratios"][name]
                out.append({"device": device, "batch": r["batch"], "ratio": name, "value": v, "limit": limit,
                            "met": v <= limit})
    return out


def linearity(rows, contender, device, hidden, above=512):
    """Step time against batch above ``above``: time per example at each batch relative to the smallest one
    (1.0 = exactly linear, < 1: the fixed costs still amortise, > 1: worse than linear)."""
    pts = sorted((r["batch"], r["median_ms"]) for r in rows
                 if r["contender"] == contender and r["device"] == device and r["hidden"] == hidden
                 and r["batch"] >= above)
    if len(pts) < 2:
        return None
    n0, t0 = pts[0]
    return {"batches": [n for n, _ in pts], "per_example_vs_first": [(t / n) / (t0 / n0) for n, t in pts]}


def memory_linearity(mem):
    """Fit the peak memory of a step with a + b N + c H + d N H (linear in the batch N for a fixed width H and
    in H for a fixed N: activations grow like N (D + H), gradients like H D); the largest relative deviation of
    a measured point from the fit says how far from that the peak is (0 = exactly bilinear)."""
    import numpy as np
    n, h, y = (np.array([m[k] for m in mem], dtype=float) for k in ("batch", "hidden", "peak_bytes"))
    if len(y) < 5:
        return None
    A = np.stack([np.ones_like(n), n, h, n * h], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.max(np.abs(A @ coef - y) / y))


def fmt_row(r):
    pf = r.get("page_faults_per_step")
    return (f"  {r['contender']:18s} {r['median_ms']:9.3f} ms  [{r['p25_ms']:.3f} .. {r['p75_ms']:.3f}]"
            f"  min {r['min_ms']:.3f}  (n={r['n']}{'' if pf is None else f', {pf:.0f} page faults/step'})")


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def git_state():
    try:
        root = os.path.dirname(HERE)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "minivae"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
        return f"{head}{' + uncommitted changes in minivae/' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model and sizes, one short round each")
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="batch sizes of the main sweep (default 64,128,512,2048; on a GPU also 8192,32768)")
    p.add_argument("--widths", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="hidden widths of the width sweep (default 100,200,400,800,1600)")
    p.add_argument("--width-batch", type=int, default=None, help="batch size of the width sweep (default 128)")
    p.add_argument("--rounds", type=int, default=None, help="rounds alternating the contenders (default 7)")
    p.add_argument("--turn", type=float, default=None, help="seconds of steps per contender per round (default 0.08)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per contender (default 0.3)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds to wait before every turn (default 0.3)")
    p.add_argument("--lead", type=float, default=None,
                   help="seconds of untimed steps at the start of every turn (default 0.06): after the settle pause "
                        "the scheduler first runs a sleeping pool thread on the core of the thread that woke it and "
                        "moves it off some 50 ms later, so the first steps of a turn measure that, not training, "
                        "which runs its steps back to back (RESULTS.md, the turn's first steps)")
    p.add_argument("--quiet", type=float, default=None,
                   help="a round during which other processes used more than this share of the CPUs is discarded "
                        "and run again after a wait for quiet (default 0.05; 1 turns the check off)")
    p.add_argument("--max-wait", type=float, default=120.0, help="longest wait for quiet, seconds (default 120)")
    p.add_argument("--malloc", choices=("default", "retain"), default="default",
                   help="glibc's allocator in every worker: its defaults, or 'retain' (MALLOC_TRIM_THRESHOLD_ 256 MiB, "
                        "MALLOC_MMAP_THRESHOLD_ 32 MiB, what minivae.kernels.retain_freed_memory sets: freed memory "
                        "is kept for reuse instead of going back to the system and being page-faulted in again at "
                        "the next step). minivae's first NumPy kernel applies the same setting in either case, as "
                        "it does in any program, unless MINIVAE_MALLOC=default is in the environment")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per runtime (default: all cores)")
    p.add_argument("--device", choices=("cpu", "gpu", "all"), default="all",
                   help="cpu, gpu, or all (the GPU only where CuPy and a CUDA GPU are usable)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even where it is installed")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory grid")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--baseline", metavar="SRC",
                   help="also time the minivae package found in SRC (e.g. an export of an older commit)")
    p.add_argument("--out", default=None,
                   help="folder for the JSON and the plots (default benchmarks/results; with --quick a temporary "
                        "folder, so that a smoke run never overwrites the recorded results)")
    p.add_argument("--name", default="bench_step",
                   help="file names: <name>.json, <name>_time.png, <name>_memory.png (default bench_step)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    quick = a.quick
    defaults = dict(quiet=1.0 if quick else 0.05, rounds=2 if quick else 7, turn=0.005 if quick else 0.08,
                    warmup=0.0 if quick else 0.3, settle=0.0 if quick else 0.3, lead=0.0 if quick else 0.06,
                    width_batch=16 if quick else 128,
                    widths=[16, 32] if quick else [100, 200, 400, 800, 1600])
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.dims = dict(x_dim=64, z_dim=4, hidden=32) if quick else dict(workloads.REFERENCE)
    if a.out is None:
        import tempfile
        a.out = os.path.join(tempfile.gettempdir(), "minivae-bench-quick") if quick else os.path.join(HERE, "results")
    return a


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    devices = ["cpu"]
    if args.device in ("gpu", "all") and workloads.gpu_available():
        devices.append("gpu")
    if args.device == "gpu":
        if "gpu" not in devices:
            sys.exit("bench_step: --device gpu, but CuPy or a CUDA GPU is not usable here")
        devices = ["gpu"]
    use_torch = workloads.torch_available() and not args.no_torch
    dims = {"x_dim": args.dims["x_dim"], "z_dim": args.dims["z_dim"]}
    ref_h = args.dims["hidden"]
    os.makedirs(args.out, exist_ok=True)

    results = {"meta": {"date": datetime.date.today().isoformat(), "load_average_before": load_average(),
                        "git": git_state(), "threads": args.threads, "rounds": args.rounds, "turn_s": args.turn,
                        "warmup_s": args.warmup, "settle_s": args.settle, "lead_s": args.lead, "quick": args.quick,
                        "isolation": "one worker process per runtime; settle pause before every turn",
                        "malloc": args.malloc, "quiet": args.quiet,
                        "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY",
                                                                "GOMP_SPINCOUNT", "MINIVAE_KERNELS")},
                        "model": {**dims, "hidden": ref_h, "activation": "relu", "likelihood": "bernoulli",
                                  "dtype": "float32", "optimizer": "adam lr 1e-3"},
                        "workers": {}},
               "timings": [], "ratios": [], "unsupported": {}, "memory": [], "targets": []}
    print(f"bench_step: model {dims['x_dim']}-{ref_h}-({dims['z_dim']})-{ref_h}-{dims['x_dim']} relu bernoulli "
          f"float32; {args.threads} threads per runtime; {args.rounds} rounds; devices {', '.join(devices)}; "
          f"torch {'yes' if use_torch else 'no'}")
    for device in devices:
        groups = [("numpy" if device == "cpu" else "cupy",
                   ["minivae", "minivae-fwdbwd", "minivae-plain", "gemm"], None)]
        if args.baseline:
            groups.append(("baseline", ["minivae@baseline"], os.path.abspath(args.baseline)))
        if use_torch:
            groups.append(("torch" if device == "cpu" else "torch-cuda",
                           ["torch-adam", "torch-fused", "torch-fwdbwd", "gemm-torch"], None))
        env = MALLOC_RETAIN if args.malloc == "retain" else {}
        workers = [Worker(g, cs, device, args.threads, dims, env=env, sys_path=sp) for g, cs, sp in groups]
        try:
            for w in workers:
                info = w.call(cmd="info")
                results["meta"]["workers"][f"{device}:{w.group}"] = info
                pools = ", ".join(f"{p['internal_api']} {p['version']} x{p['num_threads']}"
                                  for p in (info.get("threadpools") or []))
                extra = f", torch {info['torch']} x{info['torch_threads']}" if "torch" in info else ""
                print(f"  worker {device}:{w.group}: numpy {info['numpy']}{extra}; pools: {pools or 'n/a'}")
            batches = args.batches or ([8, 16] if args.quick else
                                       [64, 128, 512, 2048] + ([8192, 32768] if device == "gpu" else []))
            configs = [(n, ref_h) for n in batches] + [(args.width_batch, h) for h in args.widths
                                                       if (args.width_batch, h) not in [(n, ref_h) for n in batches]]
            for n, h in configs:
                rows, unsupported = measure(workers, n, h, args, device)
                results["timings"] += rows
                results["unsupported"].update({f"{device}:{k}": v for k, v in unsupported.items()})
                rat = ratios_for(rows)
                results["ratios"].append({"device": device, "batch": n, "hidden": h, "reference_hidden": ref_h,
                                          "ratios": rat})
                bg = rows[0]["background_load"] if rows else None
                print(f"\n[{device}] batch {n}, hidden {h}: median [quartiles] per step"
                      + (f"   (other processes: <= {100 * bg:.0f}% of the CPUs in the rounds kept; "
                         f"{rows[0]['rounds_discarded']} rounds discarded)" if bg is not None else ""))
                for r in sorted(rows, key=lambda r: r["median_ms"]):
                    print(fmt_row(r))
                for k, v in unsupported.items():
                    print(f"  {k:18s} not run: {v}")
                print("  ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in rat.items()))
            if not args.no_memory:
                mv = next(w for w in workers if "minivae" in w.contenders)
                mem_batches = batches[:4]
                widths = sorted(set(args.widths) | {ref_h})
                for n in mem_batches:
                    for h in widths:
                        mv.call(cmd="setup", batch=n, hidden=h, warmup_s=0.0, only=["minivae"])
                        results["memory"].append({"device": device, "batch": n, "hidden": h, "contender": "minivae",
                                                  **mv.call(cmd="memory", name="minivae")})
                tp = next((w for w in workers if w.group == "torch-cuda"), None)
                if tp is not None:
                    for n in mem_batches:
                        tp.call(cmd="setup", batch=n, hidden=ref_h, warmup_s=0.0, only=["torch-adam"])
                        results["memory"].append({"device": device, "batch": n, "hidden": ref_h,
                                                  "contender": "torch-adam",
                                                  **tp.call(cmd="memory", name="torch-adam")})
        finally:
            for w in workers:
                w.close()

    results["meta"]["load_average_after"] = load_average()
    all_batches = set(args.batches or ([8, 16] if args.quick else [64, 128, 512, 2048, 8192, 32768]))
    if not args.quick:
        results["targets"] = check_targets(results["ratios"], all_batches)
    for device in devices:
        lin = linearity(results["timings"], "minivae", device, ref_h)
        if lin:
            results.setdefault("linearity", {})[device] = lin
    mem = [m for m in results["memory"] if m["contender"] == "minivae" and m["device"] == "cpu"]
    if mem:
        results["memory_max_deviation_from_linear"] = memory_linearity(mem)
    summary(results)
    path = os.path.join(args.out, f"{args.name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {path}")
    if not args.no_plot:
        import plot
        for p in plot.plot_all(results, args.out, args.name):
            print(f"wrote {p}")
    return 0


def summary(results):
    if results["targets"]:
        print("\ntargets:")
        for t in results["targets"]:
            print(f"  [{t['device']}] batch {t['batch']:6d}  {t['ratio']:24s} {t['value']:6.2f}  "
                  f"(<= {t['limit']:.2f})  {'met' if t['met'] else 'NOT met'}")
    for device, lin in results.get("linearity", {}).items():
        print(f"  [{device}] step time per example relative to batch {lin['batches'][0]}: "
              + ", ".join(f"{n}: {v:.2f}" for n, v in zip(lin["batches"], lin["per_example_vs_first"], strict=True)))
    if results.get("memory_max_deviation_from_linear") is not None:
        print(f"  peak memory of a step: largest deviation from a + b N + c H + d N H fitted to all points: "
              f"{100 * results['memory_max_deviation_from_linear']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
