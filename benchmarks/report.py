"""Markdown tables from bench_step.py's JSON, as pasted into benchmarks/RESULTS.md:

    python benchmarks/report.py benchmarks/results/bench_step.json [more.json ...]
    python benchmarks/report.py --across run1.json run2.json ...    # one ratio per run, and the median
"""
import json
import sys

COLUMNS = ["minivae", "minivae-fwdbwd", "minivae-plain", "minivae@baseline", "torch-adam", "torch-fused",
           "torch-fwdbwd", "gemm", "gemm-torch"]
RATIOS = ["minivae / torch-adam", "minivae / torch-fused", "minivae / gemm", "minivae-fwdbwd / gemm",
          "torch-adam / gemm", "torch-fused / gemm", "torch-fwdbwd / gemm", "gemm-torch / gemm",
          "minivae@baseline / minivae"]


def tables(res):
    rows = {}
    for t in res["timings"]:
        rows.setdefault((t["device"], t["batch"], t["hidden"]), {})[t["contender"]] = t
    ref_h = res["meta"]["model"]["hidden"]
    order = sorted(rows, key=lambda k: (k[0], k[2] != ref_h, k[2], k[1]))
    cols = [c for c in COLUMNS if any(c in d for d in rows.values())]
    out = ["| device | batch | H | " + " | ".join(cols) + " |", "|" + " --- |" * 3 + " ---: |" * len(cols)]
    for key in order:
        d = rows[key]
        cells = []
        for c in cols:
            if c not in d:
                cells.append("")
                continue
            t = d[c]
            cells.append(f"{t['median_ms']:.2f} ({t['p25_ms']:.2f}-{t['p75_ms']:.2f})")
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    rat = {(r["device"], r["batch"], r["hidden"]): r["ratios"] for r in res["ratios"]}
    names = [n for n in RATIOS if any(n in r for r in rat.values())]
    out += ["", "| device | batch | H | " + " | ".join(names) + " |", "|" + " --- |" * 3 + " ---: |" * len(names)]
    for key in order:
        r = rat.get(key, {})
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(f"{r[n]:.2f}" if n in r else "" for n in names)
                   + " |")
    faults = [(k, d["minivae"].get("page_faults_per_step"), d.get("torch-adam", {}).get("page_faults_per_step"))
              for k, d in ((k, rows[k]) for k in order) if "minivae" in d]
    if any(f is not None for _, f, _ in faults):
        out += ["", "| device | batch | H | page faults per step: minivae | torch-adam |",
                "| --- | --- | --- | ---: | ---: |"]
        out += [f"| {k[0]} | {k[1]} | {k[2]} | {f:.0f} | {'' if g is None else f'{g:.0f}'} |" for k, f, g in faults
                if f is not None]
    return "\n".join(out)


def targets(res):
    out = ["| device | batch | ratio | measured | target | |", "| --- | --- | --- | ---: | ---: | --- |"]
    for t in res.get("targets", []):
        out.append(f"| {t['device']} | {t['batch']} | {t['ratio']} | {t['value']:.2f} | <= {t['limit']:.2f} | "
                   f"{'met' if t['met'] else 'not met'} |")
    return "\n".join(out)


def across(paths):
    """The ratios of the reference model (hidden = the reference width) in several runs side by side, with their
    median: how much a ratio moves from one run to the next on the same machine."""
    runs = []
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        ref_h = res["meta"]["model"]["hidden"]
        runs.append({(r["batch"], n): v for r in res["ratios"] if r["hidden"] == ref_h for n, v in r["ratios"].items()})
    keys = sorted({k for r in runs for k in r}, key=lambda k: (RATIOS.index(k[1]) if k[1] in RATIOS else 99, k[0]))
    out = ["| ratio | batch | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |",
           "| --- | --- |" + " ---: |" * (len(runs) + 1)]
    summary = {}
    for k in keys:
        vals = [r[k] for r in runs if k in r]
        med = sorted(vals)[len(vals) // 2] if len(vals) % 2 else sum(sorted(vals)[len(vals) // 2 - 1:][:2]) / 2
        summary[f"{k[1]} @ {k[0]}"] = {"runs": vals, "median": med}
        out.append(f"| {k[1]} | {k[0]} | " + " | ".join(f"{r[k]:.2f}" if k in r else "" for r in runs)
                   + f" | {med:.2f} |")
    return "\n".join(out), summary


if __name__ == "__main__":
    if sys.argv[1] == "--across":
        text, summary = across(sys.argv[2:])
        print(text)
        sys.exit(0)
    for path in sys.argv[1:]:
        with open(path) as f:
            res = json.load(f)
        m = res["meta"]
        print(f"## {path}: {m['date']}, malloc {m.get('malloc')}, {m['threads']} threads, {m['rounds']} rounds, "
              f"load average before {m.get('load_average_before')}\n")
        print(tables(res))
        print()
        print(targets(res))
        print()
