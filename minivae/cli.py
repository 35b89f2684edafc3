"""The ``minivae`` command: ``minivae train`` and ``minivae evaluate CHECKPOINT``.

Bad input gives a non-zero exit and one line on stderr naming the problem, never a traceback.
"""
import argparse
import json
import sys

from .backend import DeviceError
from .checkpoint import CheckpointError
from .train import TrainConfig, TrainingError

DEFAULTS = TrainConfig()


def _hidden(text):
    """'256' -> (256,);  '400,200' -> (400, 200);  '' or 'none' -> () (linear encoder and decoder)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 400,200; got {text!r}")
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive; got {text!r}")
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(prog="minivae", description="A hand-derived variational autoencoder "
                                     "on NumPy/CuPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (default: the 8x8 digits, under a minute on a CPU)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", default=DEFAULTS.dataset, help="dataset name")
    t.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate")
    t.add_argument("--optimizer", default=DEFAULTS.optimizer, help="adam or sgd")
    t.add_argument("--z-dim", type=int, default=DEFAULTS.z_dim, help="latent dimension")
    t.add_argument("--hidden", type=_hidden, default=",".join(map(str, DEFAULTS.hidden)),
                   help="hidden layer sizes, comma-separated; 'none' for linear")
    t.add_argument("--activation", default=DEFAULTS.activation, help="tanh, relu, sigmoid, softplus, identity")
    t.add_argument("--likelihood", default=DEFAULTS.likelihood, help="bernoulli or gaussian")
    t.add_argument("--beta", type=float, default=DEFAULTS.beta, help="weight on the KL term")
    t.add_argument("--seed", type=int, default=DEFAULTS.seed)
    t.add_argument("--device", default=DEFAULTS.device, help="cpu, gpu (CuPy) or strict (array-api-strict)")
    t.add_argument("--dtype", default=DEFAULTS.dtype, help="float32 or float64")
    t.add_argument("--out", default=DEFAULTS.out, help="folder for checkpoint.npz and metrics.json")

    e = sub.add_parser("evaluate", help="held-out negative ELBO of a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("checkpoint")
    e.add_argument("--device", default="cpu", help="cpu, gpu (CuPy) or strict (array-api-strict)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


def _train(args):
    from .train import train
    config = TrainConfig(**{f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f in (
        "dataset", "epochs", "batch_size", "lr", "optimizer", "z_dim", "hidden", "activation", "likelihood",
        "beta", "seed", "device", "dtype", "out")})
    import numpy as np
    with np.errstate(over="ignore", invalid="ignore"):    # a non-finite loss is caught and reported by train
        train(config)
    return 0


def _evaluate(args):
    from .checkpoint import atomic_write, load_model
    from .data import check_data, load_dataset
    from .evaluate import evaluate_elbo
    model, ckpt = load_model(args.checkpoint, device=args.device)
    x_test = load_dataset(ckpt["train"].get("dataset", "digits")).x_test
    check_data(x_test, model.likelihood, "held-out data")
    result = evaluate_elbo(model, model.device.asarray(x_test, dtype=model.dtype_name), seed=args.seed)
    print(f"held-out ({x_test.shape[0]} examples), nats per example")
    print(f"  negative ELBO      {result['neg_elbo']:10.4f}")
    print(f"  reconstruction NLL {result['nll']:10.4f}")
    print(f"  KL(q(z|x) || p(z)) {result['kl']:10.4f}")
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate}[args.command](args)
    except (ValueError, DeviceError, CheckpointError, TrainingError, OSError) as e:
        print(f"minivae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minivae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
