"""Tests for benchmarks/: the benchmark's smoke mode (benchmarks/bench_step.py --quick) runs end to end on tiny
sizes, as its own process with its worker processes, and writes JSON of the documented structure and the plots;
with PyTorch installed its contenders run too, on the same model, weights and data. Timings are never asserted:
only that they and the ratios exist and are positive. The harness's modules are imported by file path, so
nothing from benchmarks/ enters sys.path or shadows a module name for the rest of the session."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_step.py")


# The harness as its own process with PyTorch hidden (as where it is not installed, CI included): its parent
# would otherwise import torch (2 s) only to learn that it may, even under --no-torch.
HIDE_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_quick(tmp_path, *extra):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-c", HIDE_TORCH, BENCH, "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "bench_step.json") as f:
        return json.load(f), out, proc.stdout


def check_structure(res, contenders):
    assert {"meta", "timings", "ratios", "memory", "unsupported", "targets"} <= set(res)
    assert res["meta"]["quick"] is True and res["meta"]["threads"] >= 1
    for pools in res["meta"]["workers"].values():
        assert "numpy" in pools
    seen = set()
    for r in res["timings"]:
        seen.add(r["contender"])
        assert r["device"] == "cpu" and r["batch"] > 0 and r["hidden"] > 0
        assert r["n"] >= 1 and len(r["times_ms"]) == r["n"] and r["rounds_discarded"] >= 0
        assert 0 < r["min_ms"] <= r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
    assert contenders <= seen
    configs = {(r["batch"], r["hidden"]) for r in res["timings"]}
    assert {(r["batch"], r["hidden"]) for r in res["ratios"]} == configs
    for r in res["ratios"]:
        assert {"minivae / gemm", "minivae-fwdbwd / gemm", "minivae-plain / minivae"} <= set(r["ratios"])
        assert all(v > 0 and math.isfinite(v) for v in r["ratios"].values())
    assert res["memory"] and all(m["peak_bytes"] > 0 and m["state_bytes"] > 0 for m in res["memory"])


def test_quick_benchmark(tmp_path):
    """One smoke run, one thread per runtime: every minivae contender and the GEMM floor in their worker, the
    ratios, the memory grid and the plots."""
    res, out, stdout = run_quick(tmp_path, "--threads", "1")
    check_structure(res, {"minivae", "minivae-fwdbwd", "minivae-plain", "gemm"})
    assert not [r for r in res["timings"] if r["contender"].startswith("torch")]      # PyTorch was hidden
    assert "ratios:" in stdout
    assert (out / "bench_step_time.png").stat().st_size > 0 and (out / "bench_step_memory.png").stat().st_size > 0


def test_the_torch_contenders_compute_minivaes_loss():
    """PyTorch (optional: skipped where it is not installed) builds the same VAE with minivae's initial weights
    and the same data, so its loss is minivae's; each contender's step runs."""
    pytest.importorskip("torch")
    workloads = benchmark_module("workloads")
    (mv,) = workloads.minivae_contenders(16, 32, 64, 4, names=["minivae"])
    torch_side = workloads.torch_contenders(16, 32, 64, 4, names=["torch-adam", "torch-fwdbwd", "gemm-torch"])
    for c in torch_side[:2]:
        assert c.info["loss"] == pytest.approx(mv.info["loss"], rel=1e-5), c.name     # float32 sums
    for c in (mv, *torch_side):
        c.run()
        c.sync()


def benchmark_module(name):
    """benchmarks/<name>.py imported from its file, under a private name (sys.path and sys.modules untouched)."""
    spec = importlib.util.spec_from_file_location(f"_benchmarks_{name}", os.path.join(ROOT, "benchmarks",
                                                                                    f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gemm_count_of_the_reference_model():
    """5 forward products, 5 dW and 4 dx (none for the data): 14 in all."""
    path = list(sys.path)
    workloads = benchmark_module("workloads")
    assert sys.path == path and "workloads" not in sys.modules
    shapes = workloads.gemm_shapes(128, 784, 400, 20)
    kinds = [k for k, *_ in shapes]
    assert (kinds.count("fwd"), kinds.count("dW"), kinds.count("dx")) == (5, 5, 4)
    assert workloads.gemm_flops(128, 784, 400, 20) == 2 * 128 * (2 * (784 * 400 + 2 * 400 * 20 + 20 * 400
                                                                      + 400 * 784) + (2 * 400 * 20 + 20 * 400
                                                                                      + 400 * 784))
