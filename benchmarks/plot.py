"""The plots of bench_step.py, drawn from its JSON (``python benchmarks/plot.py results/bench_step.json`` redraws
them): step time against batch size per contender and device, step time against hidden width, and the peak
memory of a minivae step against batch size and width."""
import os
import sys

STYLE = {  # contender -> (label, line style)
    "minivae": ("minivae step", "-o"),
    "minivae-fwdbwd": ("minivae fwd+bwd", ":o"),
    "minivae@baseline": ("minivae step, before (baseline)", "-x"),
    "torch-adam": ("PyTorch step, Adam", "-s"),
    "torch-fused": ("PyTorch step, Adam fused", "--s"),
    "gemm": ("GEMM floor", "--k"),
}


def _series(timings, contender, device, key, fixed, fixed_value):
    pts = sorted((r[key], r["median_ms"], r["p25_ms"], r["p75_ms"]) for r in timings
                 if r["contender"] == contender and r["device"] == device and r[fixed] == fixed_value)
    return [list(col) for col in zip(*pts, strict=True)] if pts else None


def plot_all(results, out, stem="bench_step"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timings = results["timings"]
    ref_h = results["meta"]["model"]["hidden"]
    devices = sorted({r["device"] for r in timings})
    width_batches = sorted({r["batch"] for r in timings if r["hidden"] != ref_h})
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    ax = axes[0]
    for device in devices:
        for name, (label, style) in STYLE.items():
            s = _series(timings, name, device, "batch", "hidden", ref_h)
            if s is None:
                continue
            n, med, lo, hi = s
            line, = ax.plot(n, med, style, label=f"{label} ({device})", ms=4,
                            alpha=1.0 if device == "cpu" else 0.6)
            ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="time per step (ms)",
           title=f"one training step, hidden {ref_h}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    for device in devices:
        for wb in width_batches:
            for name, (label, style) in STYLE.items():
                s = _series(timings, name, device, "hidden", "batch", wb)
                if s is None:
                    continue
                h, med, lo, hi = s
                ax.plot(h, med, style, label=f"{label} ({device}, batch {wb})", ms=4)
    ax.set(xscale="log", yscale="log", xlabel="hidden width H", ylabel="time per step (ms)",
           title="width sweep")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out, f"{stem}_time.png"))
    fig.savefig(paths[-1])
    plt.close(fig)

    mem = [m for m in results.get("memory", []) if m["contender"] == "minivae" and m.get("peak_bytes")]
    if mem:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
        for device in sorted({m["device"] for m in mem}):
            for h in sorted({m["hidden"] for m in mem if m["device"] == device}):
                pts = sorted((m["batch"], m["peak_bytes"] / 2**20) for m in mem
                             if m["hidden"] == h and m["device"] == device)
                axes[0].plot(*zip(*pts, strict=True), "-o", ms=4, label=f"H = {h} ({device})")
            xs = [m["batch"] * m["hidden"] for m in mem if m["device"] == device]
            ys = [m["peak_bytes"] / 2**20 for m in mem if m["device"] == device]
            axes[1].plot(xs, ys, "o", ms=4, label=device)
        axes[0].set(xlabel="batch size N", ylabel="peak memory of one step (MiB)",
                    title="minivae: peak above the resident state")
        axes[1].set(xscale="log", yscale="log", xlabel="batch x width (N H)", ylabel="peak memory (MiB)",
                    title="the same points against N x H")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(os.path.join(out, f"{stem}_memory.png"))
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


if __name__ == "__main__":
    import json
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "bench_step.json")
    with open(path) as f:
        res = json.load(f)
    stem = os.path.splitext(os.path.basename(path))[0]
    for p in plot_all(res, os.path.dirname(os.path.abspath(path)), stem):
        print(f"wrote {p}")
