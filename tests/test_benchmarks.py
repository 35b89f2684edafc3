"""The benchmark's smoke mode (benchmarks/bench_step.py --quick) runs end to end on tiny sizes and writes JSON
of the documented structure and the plots. Timings are never asserted: only that they and the ratios exist and
are positive."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_step.py")


def run_quick(tmp_path, *extra):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--out", str(out), *extra],
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


def test_quick_benchmark_numpy_only(tmp_path):
    res, out, stdout = run_quick(tmp_path, "--no-torch")
    check_structure(res, {"minivae", "minivae-fwdbwd", "minivae-plain", "gemm"})
    assert "ratios:" in stdout
    assert (out / "bench_step_time.png").stat().st_size > 0 and (out / "bench_step_memory.png").stat().st_size > 0


def test_quick_benchmark_with_torch(tmp_path):
    pytest.importorskip("torch")
    res, _, _ = run_quick(tmp_path, "--threads", "1", "--no-plot", "--no-memory", "--batches", "8", "--widths", "32")
    for r in res["timings"]:
        if r["contender"].startswith("torch") and "loss" in r["info"]:
            mv = next(m for m in res["timings"] if m["contender"] == "minivae" and m["batch"] == r["batch"])
            # the same model, the same weights and data: the same loss
            assert r["info"]["loss"] == pytest.approx(mv["info"]["loss"], rel=1e-4)
    assert any(r["contender"] == "torch-adam" for r in res["timings"])
    for r in res["ratios"]:
        assert r["ratios"]["minivae / torch-adam"] > 0


def test_gemm_count_of_the_reference_model(monkeypatch):
    """5 forward products, 5 dW and 4 dx (none for the data): 14 in all."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))      # for this test only, not the session
    import workloads
    shapes = workloads.gemm_shapes(128, 784, 400, 20)
    kinds = [k for k, *_ in shapes]
    assert (kinds.count("fwd"), kinds.count("dW"), kinds.count("dx")) == (5, 5, 4)
    assert workloads.gemm_flops(128, 784, 400, 20) == 2 * 128 * (2 * (784 * 400 + 2 * 400 * 20 + 20 * 400
                                                                      + 400 * 784) + (2 * 400 * 20 + 20 * 400
                                                                                      + 400 * 784))
