"""Time whole training epochs: the ``minivae train`` command against the same model in a plain PyTorch loop, on
the real Fashion-MNIST (784-400-(20)-400-784, ReLU, Bernoulli logits on the intensities, float32, Adam lr 1e-3,
batch 128). An epoch is what the command does in one: shuffle the 60,000 training images, take every step, then
the held-out negative ELBO of the 10,000 test images (one draw per example); the seconds are the command's own,
from ``metrics.json`` (``history[i]["seconds"]``).

    python benchmarks/bench_epoch.py --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/bench_epoch.py --data-dir ... --epochs 3 --rounds 3 --threads 2

The PyTorch loop is DataLoader-free (a permutation and slices of one tensor), with the data on the same threads
(``torch.set_num_threads``; minivae's BLAS through OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, its row blocks through
minivae.kernels.THREADS = the cores it may use). The two run in separate processes, one after the other, ``--rounds``
times in alternating order; the report is the median epoch over all rounds and epochs but each run's first (a
warm-up) and the ratio of the medians. Writes ``<out>/bench_epoch.json``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TORCH_LOOP = r"""
import json, math, sys, time
import numpy as np
import torch
from minivae.data import load_dataset
data_dir, epochs, threads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(seed)
data = load_dataset("fashion-mnist", data_dir)
x_train = torch.from_numpy(data.x_train.astype(np.float32))
x_test = torch.from_numpy(data.x_test.astype(np.float32))
D, H, Z, B = 784, 400, 20, 128
enc, mu_head, lv_head = torch.nn.Linear(D, H), torch.nn.Linear(H, Z), torch.nn.Linear(H, Z)
dec, out = torch.nn.Linear(Z, H), torch.nn.Linear(H, D)
params = [p for m in (enc, mu_head, lv_head, dec, out) for p in m.parameters()]
opt = torch.optim.Adam(params, lr=1e-3)

def terms(x):
    h = torch.relu(enc(x))
    mu, logvar = mu_head(h), lv_head(h)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = out(torch.relu(dec(z)))
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    kl = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(1)
    return nll, kl

seconds = []
for epoch in range(epochs):
    t0 = time.perf_counter()
    order = torch.randperm(x_train.shape[0])
    for start in range(0, x_train.shape[0], B):
        xb = x_train[order[start:start + B]]
        nll, kl = terms(xb)
        loss = (nll + kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        total = sum(float((lambda t: (t[0] + t[1]).sum())(terms(x_test[s:s + 1000]))) for s in range(0, 10000, 1000))
    seconds.append(time.perf_counter() - t0)
    assert math.isfinite(total)
print(json.dumps({"seconds": seconds, "heldout_neg_elbo": total / x_test.shape[0]}))
"""


def thread_env(threads):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MINIVAE_THREADS"] = str(threads)
    return env


def run_minivae(data_dir, epochs, threads, seed):
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "minivae", "train", "--dataset", "fashion-mnist", "--data-dir", data_dir,
               "--hidden", "400", "--z-dim", "20", "--activation", "relu", "--batch-size", "128",
               "--epochs", str(epochs), "--seed", str(seed), "--out", os.path.join(out, "run")]
        subprocess.run(cmd, check=True, env=thread_env(threads), capture_output=True, text=True)
        with open(os.path.join(out, "run", "metrics.json")) as f:
            history = json.load(f)["history"]
    return {"seconds": [h["seconds"] for h in history], "heldout_neg_elbo": history[-1]["heldout_neg_elbo"]}


def run_torch(data_dir, epochs, threads, seed):
    done = subprocess.run([sys.executable, "-c", TORCH_LOOP, data_dir, str(epochs), str(threads), str(seed)],
                          check=True, env=thread_env(threads), capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the folder of the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, default=2, help="threads for BLAS, the row blocks and PyTorch")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of rest between runs")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    runs = {"minivae": [], "torch": []}
    for r in range(args.rounds):
        for name in (("minivae", "torch") if r % 2 == 0 else ("torch", "minivae")):
            time.sleep(args.settle)
            run = (run_minivae if name == "minivae" else run_torch)(args.data_dir, args.epochs, args.threads, r)
            runs[name].append(run)
            print(f"round {r + 1} {name:8s} epochs {' '.join(f'{s:.2f}' for s in run['seconds'])} s, "
                  f"held-out -ELBO {run['heldout_neg_elbo']:.2f}", flush=True)
    med = {k: statistics.median(s for run in v for s in run["seconds"][1:]) for k, v in runs.items()}
    print(f"median epoch: minivae {med['minivae']:.2f} s, PyTorch {med['torch']:.2f} s, "
          f"minivae / PyTorch {med['minivae'] / med['torch']:.3f} (target <= 1.0)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_epoch.json"), "w") as f:
        json.dump({"threads": args.threads, "epochs": args.epochs, "rounds": args.rounds, "runs": runs,
                   "median_seconds": med, "ratio": med["minivae"] / med["torch"]}, f, indent=1)


if __name__ == "__main__":
    main()
