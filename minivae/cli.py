"""The ``minivae`` command: ``minivae train``, ``minivae evaluate CHECKPOINT``, and the pictures of a checkpoint
(``sample``, ``reconstruct``, ``interpolate``, ``latent``; minivae/plots.py).

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


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other minivae error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _OneLineParser(prog="minivae", description="A hand-derived variational autoencoder "
                                     "on NumPy/CuPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (default: the 8x8 digits, under a minute on a CPU)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", default=DEFAULTS.dataset, help="digits, mnist, fashion-mnist or synthetic")
    t.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="learning rate")
    t.add_argument("--optimizer", default=DEFAULTS.optimizer, help="adam or sgd")
    t.add_argument("--z-dim", type=int, default=DEFAULTS.z_dim, help="latent dimension")
    t.add_argument("--hidden", type=_hidden, default=",".join(map(str, DEFAULTS.hidden)),
                   help="hidden layer sizes, comma-separated; 'none' for linear")
    t.add_argument("--activation", default=DEFAULTS.activation, help="tanh, relu, sigmoid, softplus, identity")
    t.add_argument("--likelihood", default=DEFAULTS.likelihood, help="p(x|z): bernoulli, gaussian or categorical "
                   "(a softmax over --levels intensity levels)")
    t.add_argument("--gaussian-variance", default=DEFAULTS.gaussian_variance,
                   help="gaussian: fixed (at --sigma), shared (one learned value), per-dim (one per dimension) or "
                   "per-element (a second decoder head)")
    t.add_argument("--sigma", type=float, default=DEFAULTS.sigma,
                   help="gaussian-variance fixed: the standard deviation")
    t.add_argument("--sigma-min", type=float, default=DEFAULTS.sigma_min,
                   help="floor of a learned gaussian standard deviation: variance = sigma_min^2 + exp(raw) "
                   "(the likelihood is unbounded without it)")
    t.add_argument("--levels", type=int, default=DEFAULTS.levels,
                   help="categorical: number of intensity levels L, level = round(x (L - 1)); 17 for the digits, "
                   "256 for 8-bit images")
    t.add_argument("--beta", type=float, default=DEFAULTS.beta, help="weight on the KL term")
    t.add_argument("--kl-warmup-epochs", type=int, default=DEFAULTS.kl_warmup_epochs,
                   help="the KL weight rises linearly, step by step, from --kl-warmup-start to --beta over this "
                   "many epochs (0: no warm-up)")
    t.add_argument("--kl-warmup-start", type=float, default=DEFAULTS.kl_warmup_start,
                   help="the KL weight of the first step of a warm-up")
    t.add_argument("--iw-samples", type=int, default=DEFAULTS.iw_samples,
                   help="K > 1: train on the importance-weighted bound L_K with K samples per example")
    t.add_argument("--prior", default=DEFAULTS.prior, help="p(z): normal (N(0, I)) or mog (a learned mixture of "
                   "Gaussians)")
    t.add_argument("--prior-components", type=int, default=DEFAULTS.prior_components,
                   help="number of mixture components of --prior mog")
    t.add_argument("--seed", type=int, default=DEFAULTS.seed)
    t.add_argument("--device", default=DEFAULTS.device, help="cpu, gpu (CuPy) or strict (array-api-strict)")
    t.add_argument("--dtype", default=DEFAULTS.dtype, help="float32 or float64")
    t.add_argument("--out", default=DEFAULTS.out, help="folder for checkpoint.npz and metrics.json")
    t.add_argument("--data-dir", default=DEFAULTS.data_dir, help="folder of the mnist / fashion-mnist IDX files; "
                   "missing ones are downloaded there. None: $MINIVAE_DATA/<dataset> or "
                   "~/.cache/minivae/<dataset>")
    t.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every,
                   help="epochs between checkpoints (one is always written at the end and on Ctrl-C)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run saved in CHECKPOINT (only --epochs, --out, --device, --data-dir and "
                   "--checkpoint-every may change)")
    t.add_argument("--binarize", default=DEFAULTS.binarize, help="none, threshold (x > 0.5), sample (one fixed "
                   "Bernoulli sample) or dynamic (a fresh sample of each training batch)")

    e = sub.add_parser("evaluate", help="held-out negative ELBO of a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("checkpoint")
    e.add_argument("--device", default="cpu", help="cpu, gpu (CuPy) or strict (array-api-strict)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    e.add_argument("--k", type=int, default=1000, help="importance samples per example for the bound L_k")
    e.add_argument("--exact", choices=("auto", "yes", "no"), default="auto",
                   help="exact log p(x) by quadrature over z (z_dim 1 or 2; auto: when z_dim <= 2)")
    e.add_argument("--dtype", default="float64", help="dtype the evaluation computes in")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")

    # pictures (minivae/plots.py): each writes a PNG, by default beside the checkpoint, and prints its path
    def picture(name, help, default_file):
        p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("checkpoint")
        p.add_argument("--device", default="cpu", help="cpu, gpu (CuPy) or strict (array-api-strict)")
        if default_file:
            p.add_argument("--out", default=None, help=f"PNG file (default: {default_file} beside the checkpoint)")
        return p

    s = picture("sample", "a grid of images decoded from z ~ p(z), the model's prior", "samples.png")
    s.add_argument("--n", type=int, default=64, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws")
    s.add_argument("--from-likelihood", action="store_true",
                   help="also draw x ~ p(x|z) beside the decoder mean E[x|z]")

    r = picture("reconstruct", "held-out inputs above their reconstructions", "reconstructions.png")
    r.add_argument("--n", type=int, default=16, help="number of held-out inputs (the first n)")
    r.add_argument("--sampled", action="store_true", help="also decode one sampled z ~ q(z|x)")
    r.add_argument("--seed", type=int, default=0, help="seed of the sampled z")

    i = picture("interpolate", "decoded paths between the codes of held-out pairs", "interpolations.png")
    i.add_argument("--pairs", type=int, default=4, help="number of pairs (one row each)")
    i.add_argument("--steps", type=int, default=10, help="points on each path, both ends included")
    i.add_argument("--kind", default="both", help="linear, slerp (spherical) or both")
    i.add_argument("--seed", type=int, default=0, help="seed that picks the pairs")

    la = picture("latent", "2-D latent space only: the decoded manifold and the held-out codes", None)
    la.add_argument("--n", type=int, default=15, help="the manifold is an n x n grid")
    la.add_argument("--out-manifold", default=None, help="PNG file (default: manifold.png beside the checkpoint)")
    la.add_argument("--out-scatter", default=None,
                    help="PNG file (default: latent_scatter.png beside the checkpoint)")
    return parser


TRAIN_FIELDS = ("dataset", "epochs", "batch_size", "lr", "optimizer", "z_dim", "hidden", "activation",
                "likelihood", "gaussian_variance", "sigma", "sigma_min", "levels", "beta", "kl_warmup_epochs",
                "kl_warmup_start", "iw_samples", "prior", "prior_components", "seed", "device", "dtype", "out",
                "data_dir", "binarize", "checkpoint_every")


def _train(args):
    from .kernels import retain_freed_memory
    from .train import train
    import numpy as np
    retain_freed_memory()           # reuse freed step memory instead of page-faulting it in every step (glibc)
    if args.resume:
        defaults = build_parser().parse_args(["train"])
        changed = {f: getattr(args, f) for f in TRAIN_FIELDS if getattr(args, f) != getattr(defaults, f)}
        run = lambda: train(resume=args.resume, **changed)      # noqa: E731
    else:
        config = TrainConfig(**{f: getattr(args, f) for f in TRAIN_FIELDS})
        run = lambda: train(config)                              # noqa: E731
    with np.errstate(over="ignore", invalid="ignore"):    # a non-finite loss is caught and reported by train
        result = run()
    return 130 if result.interrupted else 0


EVALUATE_ROWS = [       # (key, label): each estimate prints with its standard error, key + "_se", where it has one
    ("neg_elbo", "negative ELBO (mean of {samples} draws)"), ("nll", "  reconstruction NLL (distortion)"),
    ("kl", "  KL(q(z|x) || p(z)) (rate)"), ("bits_per_dim", "negative ELBO, bits per dimension"),
    ("neg_iw_bound", "negative L_k, k = {k} (a bound in expectation)"),
    ("neg_log_px", "-log p(x) (quadrature)"), ("quadrature_neg_elbo", "negative ELBO (quadrature)"),
    ("posterior_gap", "log p(x) - ELBO = KL(q(z|x) || p(z|x))"),
    ("quadrature_error", "  quadrature error of log p(x)"), ("elbo_quadrature_error", "  quadrature error of the ELBO"),
    ("grid_points", "  grid points"), ("quadrature_converged", "  converged to tol"),
    ("active_units", "active units (Var_x E_q[z_j] > 0.01)"),
    ("mutual_information", "I_q(x; z) (mean of {samples} draws)"), ("marginal_kl", "KL(q(z) || p(z))"),
    ("true_neg_log_px", "-log p(x) of the true model"),
]


def _format_number(value):
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:d}"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _print_rows(result, keys):
    """The rows of EVALUATE_ROWS whose keys are among ``keys``, each as value ± standard error where there is one,
    flushed at once (so a section's numbers are on screen before the next, longer one starts)."""
    for key, label in EVALUATE_ROWS:
        if key in keys:
            se = result.get(f"{key}_se")
            text = f"{_format_number(result[key]):>12s}" + (f" ± {_format_number(se)}" if se is not None else "")
            print(f"  {label.format(**result):<48s} {text}", flush=True)


def _evaluate(args):
    """Prints each section of the evaluation as soon as it is computed (ELBO, L_k, quadrature, active units,
    ELBO surgery); on Ctrl-C or a memory error the sections already printed are also written to --json, with
    "complete": false."""
    from .checkpoint import atomic_write, load_model
    from .data import check_data, load_dataset
    from .evaluate import evaluate_sections
    import os
    if args.json and (os.path.isdir(args.json) or not os.path.isdir(os.path.dirname(os.path.abspath(args.json)))):
        raise ValueError(f"--json {args.json!r} must be a file in an existing folder")   # before the long evaluation
    model, ckpt = load_model(args.checkpoint, device=args.device, dtype=args.dtype)
    train_config = ckpt["train"]
    dataset = train_config.get("dataset", "digits")
    x_test = load_dataset(dataset, train_config.get("data_dir"),
                          train_config.get("binarize", "none")).x_test     # binarised as in training
    check_data(x_test, model.config["likelihood"], "held-out data")
    if args.exact == "yes" and model.z_dim > 2:
        raise ValueError(f"--exact yes needs z_dim 1 or 2; this model has z_dim {model.z_dim}")
    x = model.device.asarray(x_test, dtype=model.dtype_name)
    result = {}

    def save():
        if args.json:
            atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))

    print(f"{args.checkpoint}: held-out {dataset} ({x.shape[0]} examples), nats per example, "
          f"estimate ± standard error", flush=True)
    section = None                                      # the last section computed
    try:
        samples = getattr(args, "samples", 10)          # draws per example of the ELBO and the surgery
        for section, part in evaluate_sections(model, x, k=args.k, seed=args.seed, samples=samples,
                                               exact=None if args.exact == "auto" else args.exact == "yes"):
            result.update(part)
            _print_rows(result, part)
    except (KeyboardInterrupt, MemoryError) as e:
        result["complete"] = False
        save()
        if isinstance(e, KeyboardInterrupt):
            raise                                       # main: "interrupted", exit 130
        done = f"after the {section} section (the sections above are complete" if section else "(nothing computed"
        print(f"minivae evaluate: error: out of memory {done}{'; saved to ' + args.json if args.json else ''})",
              file=sys.stderr)
        return 2
    if dataset == "synthetic":
        from .data import synthetic_log_px
        result["true_neg_log_px"] = -float(synthetic_log_px(x_test).mean())
        _print_rows(result, ["true_neg_log_px"])
    result["complete"] = True
    save()
    return 0


def _model_and_data(args):
    """The checkpoint's model on ``--device`` and its dataset, binarised as in training."""
    from .checkpoint import load_model
    from .data import load_dataset
    model, ckpt = load_model(args.checkpoint, device=args.device)
    train_config = ckpt["train"]
    data = load_dataset(train_config.get("dataset", "digits"), train_config.get("data_dir"),
                        train_config.get("binarize", "none"))
    return model, data


def _beside_checkpoint(args, name):
    import os
    return os.path.join(os.path.dirname(args.checkpoint), name)


def _sample(args):
    from .plots import plot_samples
    model, data = _model_and_data(args)
    out = args.out or _beside_checkpoint(args, "samples.png")
    print(plot_samples(model, data.image_shape, out, n=args.n, seed=args.seed,
                       from_likelihood=args.from_likelihood))
    return 0


def _reconstruct(args):
    from .plots import plot_reconstructions
    model, data = _model_and_data(args)
    out = args.out or _beside_checkpoint(args, "reconstructions.png")
    print(plot_reconstructions(model, data.x_test, data.image_shape, out, n=args.n, sampled=args.sampled,
                               seed=args.seed))
    return 0


def _interpolate(args):
    from .plots import plot_interpolations
    model, data = _model_and_data(args)
    out = args.out or _beside_checkpoint(args, "interpolations.png")
    print(plot_interpolations(model, data.x_test, data.image_shape, out, pairs=args.pairs, steps=args.steps,
                              kind=args.kind, seed=args.seed))
    return 0


def _latent(args):
    from .plots import plot_latent_manifold, plot_latent_scatter
    model, data = _model_and_data(args)
    if model.z_dim != 2:
        raise ValueError(f"{args.checkpoint} has z_dim {model.z_dim}; the latent pictures need a 2-D latent "
                         f"space (train with --z-dim 2)")
    if data.image_shape is None:
        raise ValueError("the manifold needs a dataset of images, and this checkpoint's dataset has no "
                         "image shape")
    print(plot_latent_manifold(model, data.image_shape, args.out_manifold or
                               _beside_checkpoint(args, "manifold.png"), n=args.n))
    print(plot_latent_scatter(model, data.x_test, args.out_scatter or _beside_checkpoint(args,
                              "latent_scatter.png"), labels=data.y_test))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate, "sample": _sample, "reconstruct": _reconstruct,
                "interpolate": _interpolate, "latent": _latent}[args.command](args)
    except (ValueError, DeviceError, CheckpointError, TrainingError, OSError) as e:
        print(f"minivae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minivae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
