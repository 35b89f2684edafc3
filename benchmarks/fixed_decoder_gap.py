"""The posterior gap for one fixed generative model (the experiment behind the README's z = 2 flow paragraph).

The decoder of a trained z = 2 checkpoint is frozen and a fresh encoder (seed 1) is trained on the digits for
EPOCHS epochs of Adam (lr 1e-3, batches of 64, the "train" noise stream of seed 0): diagonal (K = 0) or a planar
flow of K steps. log p(x) is then the same for every encoder; the gap log p(x) - ELBO on the held-out digits
compares the posterior families on one p(x, z). Prints and writes a JSON of the held-out numbers.

    python benchmarks/fixed_decoder_gap.py CHECKPOINT K EPOCHS OUT.json
"""
import json
import sys

import numpy as np

from minivae.checkpoint import load_model
from minivae.data import load_dataset
from minivae.evaluate import evaluate_elbo, exact_log_px, iw_bound
from minivae.model import VAE
from minivae.objectives import ELBO
from minivae.optim import Adam
from minivae.rng import RNG


def main(checkpoint, steps, epochs, out):
    base, _ = load_model(checkpoint)
    if base.z_dim != 2:
        raise SystemExit(f"{checkpoint}: needs a z = 2 model for the exact log p(x), got z = {base.z_dim}")
    data = load_dataset("digits")
    x_train, x_test = data.x_train.astype(np.float32), data.x_test.astype(np.float32)
    model = VAE(base.x_dim, 2, hidden=base.hidden, posterior="flow" if steps else "diagonal",
                flow_steps=max(steps, 1), seed=1)
    for name, value in base.params.items():
        if name.startswith("dec."):
            model.params[name] = value.copy()                  # the frozen decoder
    encoder = {k: v for k, v in model.params.items() if k.startswith("enc.")}
    optimizer, rng = Adam(encoder, lr=1e-3), RNG(0, stream="train")
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(x_train), 64):
            xb = x_train[order[start:start + 64]]
            _, grads, _ = model.loss_and_grads(xb, rng.normal((len(xb), 2), model.device, "float32"), ELBO())
            optimizer.step({k: grads[k] for k in encoder})     # the decoder's gradients are dropped
    exact, elbo, lk = exact_log_px(model, x_test), evaluate_elbo(model, x_test, samples=100), iw_bound(model, x_test)
    result = {"flow_steps": steps, "epochs": epochs, "neg_log_px": -exact["log_px"], "neg_elbo": elbo["neg_elbo"],
              "neg_elbo_se": elbo["neg_elbo_se"], "gap": exact["gap"], "gap_se": exact["elbo_se"],
              "neg_iw_bound": -lk["iw_bound"], "neg_iw_bound_se": lk["se"]}
    print(json.dumps(result))
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
