"""The ``minivae`` command: ``minivae train``, ``minivae evaluate CHECKPOINT``, and the pictures of a checkpoint
(``sample``, ``reconstruct``, ``interpolate``, ``latent``, ``posterior``; minivae/plots.py).

Bad input gives a non-zero exit and one line on stderr naming the problem, never a traceback.
"""
import argparse
import json
import sys

from .config import add_train_options, typed_options

from .backend import DeviceError
from .checkpoint import CheckpointError
from .health import TrainingError


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other minivae error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless the help says it already or there is none to show."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    parser = _OneLineParser(prog="minivae", description="A hand-derived variational autoencoder "
                                     "on NumPy/CuPy.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (default: the 8x8 digits, under a minute on a CPU)",
                       formatter_class=_Defaults, description="Every option's default is what `minivae train` "
                       "runs with; on --resume, an option you type is applied if it may change and refused "
                       "(naming it) if it would change the run.")
    add_train_options(t)                                  # one flag per TrainConfig field (minivae/config.py)
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run saved in CHECKPOINT, writing beside it unless --out is given")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint already in --out (otherwise such a folder is refused)")

    e = sub.add_parser("evaluate", help="held-out negative ELBO of a checkpoint", formatter_class=_Defaults)
    e.add_argument("checkpoint")
    e.add_argument("--device", default="cpu", help="cpu, gpu (CuPy) or strict (array-api-strict)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    e.add_argument("--k", type=int, default=1000, help="importance samples per example for the bound L_k")
    e.add_argument("--exact", choices=("auto", "yes", "no"), default="auto",
                   help="exact log p(x) by quadrature over z (z_dim 1 or 2; auto: when z_dim <= 2 and the "
                   "held-out set is small enough for seconds to minutes, else skipped with a note)")
    e.add_argument("--dtype", default="float64", help="dtype the evaluation computes in")
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    e.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)

    # pictures (minivae/plots.py): each writes a PNG, by default beside the checkpoint, and prints its path
    def picture(name, help, default_file):
        p = sub.add_parser(name, help=help, formatter_class=_Defaults)
        p.add_argument("checkpoint")
        p.add_argument("--device", default="cpu", help="cpu, gpu (CuPy) or strict (array-api-strict)")
        if name != "sample":                              # the held-out images: the data, reloaded
            p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
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
    g = sub.add_parser("gradcheck", help="check every hand-written backward against finite differences (float64) "
                       "and print the relative errors; exit 1 if any exceeds 1e-6", formatter_class=_Defaults,
                       description="Every op pair (minivae/ops.py) and the whole model (each likelihood and "
                       "variance option, both priors, the ELBO and the importance-weighted bound): the backward "
                       "against central differences of the forward, in float64, as derivations/gradcheck.md "
                       "derives. Exit status 0 when every relative error is within its limit, 1 when one is not.")
    g.add_argument("--only", default=None, metavar="TEXT", help="only the checks whose name contains TEXT")

    po = picture("posterior", "z_dim 1 or 2: the true posterior p(z|x) of held-out inputs beside q(z|x), with "
                 "log p(x), the ELBO and their gap", "posterior.png")
    po.add_argument("--n", type=int, default=4, help="number of held-out inputs (the first n)")
    po.add_argument("--points", type=int, default=201, help="grid points per latent axis of each picture")
    return parser


def _train(args):
    import os

    import numpy as np

    from .config import TrainConfig
    from .plots import plot_loss_curves
    from .train import train
    typed = typed_options(args)     # exactly the options typed, a default's value included
    with np.errstate(over="ignore", invalid="ignore"):    # a non-finite loss is caught and reported by train
        if args.resume:
            result = train(resume=args.resume, overwrite=args.overwrite, **typed)
        else:
            result = train(TrainConfig(**typed), overwrite=args.overwrite)
    if result.history and result.checkpoint:
        folder = os.path.dirname(result.checkpoint)
        print(f"wrote {plot_loss_curves(result.history, os.path.join(folder, 'loss_curves.png'))}")
    return 130 if result.interrupted else 0


EVALUATE_ROWS = [       # (key, label): each estimate prints with its standard error, key + "_se", where it has one
    ("neg_elbo", "negative ELBO (mean of {samples} draws)"), ("nll", "  reconstruction NLL (distortion)"),
    ("kl", "  KL(q(z|x) || p(z)) (rate)"), ("bits_per_dim", "negative ELBO, bits per dimension"),
    ("neg_iw_bound", "negative L_k, k = {k} (a bound in expectation)"),
    ("neg_log_px", "-log p(x) (quadrature)"), ("quadrature_neg_elbo", "negative ELBO (quadrature)"),
    ("sampled_neg_elbo", "negative ELBO (sampled, 100 draws)"),
    ("posterior_gap", "log p(x) - ELBO = KL(q(z|x) || p(z|x))"),
    ("quadrature_error", "  quadrature error of log p(x)"), ("elbo_quadrature_error", "  quadrature error of the ELBO"),
    ("grid_points", "  grid points"), ("quadrature_converged", "  converged to tol"),
    ("exact_skipped", "-log p(x) (quadrature): skipped"),
    ("active_units", "active units (Var_x E_q[z_j] > 0.01)"),
    ("mutual_information", "I_q(x; z) (mean of {samples} draws)"), ("marginal_kl", "KL(q(z) || p(z))"),
    ("surgery_skipped", "ELBO surgery: skipped"),
    ("true_neg_log_px", "-log p(x) of the true model"),
]


def _format_number(value):
    if isinstance(value, str):
        return value
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


def _terminate_as_interrupt():
    """Until the returned function is called, SIGTERM (a scheduler's or kill's stop) raises KeyboardInterrupt, so
    a stopped evaluation keeps what it computed as Ctrl-C does. Returns the function that restores the handler."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, AttributeError):                 # not the main thread, or no SIGTERM on this platform
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _evaluate(args):
    """Prints each section of the evaluation as soon as it is computed (ELBO, L_k, quadrature, active units,
    ELBO surgery); on Ctrl-C, SIGTERM or a memory error the sections already printed are also written to --json,
    with "complete": false."""
    from .checkpoint import atomic_write, load_model
    from .data import check_data
    from .evaluate import evaluate_sections
    import os
    if args.json and (os.path.isdir(args.json) or not os.path.isdir(os.path.dirname(os.path.abspath(args.json)))):
        raise ValueError(f"--json {args.json!r} must be a file in an existing folder")   # before the long evaluation
    model, ckpt = load_model(args.checkpoint, device=args.device, dtype=args.dtype)
    meta = ckpt["data"]                                  # what the checkpoint records of its data
    dataset = meta["dataset"]
    x_test = _checkpoint_data(meta, args.data_dir).x_test                  # binarised as in training
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
    stop = _terminate_as_interrupt()
    try:
        samples = getattr(args, "samples", 10)          # draws per example of the ELBO and the surgery
        for section, part in evaluate_sections(model, x, k=args.k, seed=args.seed, samples=samples,  # noqa: B007
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
    finally:
        stop()
    if dataset == "synthetic":
        from .data import synthetic_log_px
        result["true_neg_log_px"] = -float(synthetic_log_px(x_test).mean())
        _print_rows(result, ["true_neg_log_px"])
    result["complete"] = True
    save()
    return 0


DATA_DIR_HELP = ("folder of the mnist / fashion-mnist files, if they moved since training (default: the folder "
                 "the checkpoint names)")


def _model_and_data(args, need_data=True):
    """The checkpoint's model on ``--device``, and what the checkpoint records of its data (dataset, binarize,
    data_dir, image_shape); with ``need_data`` also the dataset itself, binarised as in training, read from
    ``--data-dir`` if given."""
    from .checkpoint import load_model
    from .plots import check_png_path
    for name in ("out", "out_manifold", "out_scatter"):          # a wrong file name: refused before any work
        if getattr(args, name, None):
            check_png_path(getattr(args, name), "--" + name.replace("_", "-"))
    model, ckpt = load_model(args.checkpoint, device=args.device)
    meta = ckpt["data"]
    data = None
    if need_data or meta.get("image_shape") is None:              # older checkpoints: the shape from the data
        data = _checkpoint_data(meta, getattr(args, "data_dir", None))
        meta = {**meta, "image_shape": data.image_shape}
    return model, meta, data


def _checkpoint_data(meta, data_dir):
    """The dataset a checkpoint was trained on (its record ``meta``), binarised as in training, from ``data_dir``
    if given, else from the folder the checkpoint names."""
    from .data import load_dataset
    stored = meta.get("data_dir")
    try:
        return load_dataset(meta["dataset"], data_dir or stored, meta.get("binarize", "none"))
    except ValueError as e:
        if data_dir is None and stored is not None:
            raise ValueError(f"{e} (the checkpoint's data folder has moved? pass --data-dir FOLDER)") from None
        raise


def _beside_checkpoint(args, name):
    import os
    return os.path.join(os.path.dirname(args.checkpoint), name)


def _sample(args):
    from .plots import plot_samples
    model, meta, _ = _model_and_data(args, need_data=False)     # the image shape is in the checkpoint
    out = args.out or _beside_checkpoint(args, "samples.png")
    print(plot_samples(model, meta["image_shape"], out, n=args.n, seed=args.seed,
                       from_likelihood=args.from_likelihood))
    return 0


def _reconstruct(args):
    from .plots import plot_reconstructions
    model, _, data = _model_and_data(args)
    out = args.out or _beside_checkpoint(args, "reconstructions.png")
    print(plot_reconstructions(model, data.x_test, data.image_shape, out, n=args.n, sampled=args.sampled,
                               seed=args.seed))
    return 0


def _interpolate(args):
    from .plots import plot_interpolations
    model, _, data = _model_and_data(args)
    out = args.out or _beside_checkpoint(args, "interpolations.png")
    print(plot_interpolations(model, data.x_test, data.image_shape, out, pairs=args.pairs, steps=args.steps,
                              kind=args.kind, seed=args.seed))
    return 0


def _latent(args):
    from .plots import plot_latent_manifold, plot_latent_scatter
    model, _, data = _model_and_data(args)
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


def _gradcheck(args):
    """The table of every gradient check; exit 1 if one fails."""
    from .gradcheck import H, LIMIT, run_checks
    rows = [r for r in run_checks() if args.only is None or args.only in r[0]]
    if not rows:
        raise ValueError(f"--only {args.only!r} matches no check")
    width = max(len(r[0]) for r in rows)
    print(f"{'check':<{width}s}  {'shape':<20s} {'rel. error':>10s} {'limit':>8s}  result", flush=True)
    for name, shape, error, limit in rows:
        print(f"{name:<{width}s}  {shape:<20s} {error:10.2e} {limit:8.0e}  {'ok' if error <= limit else 'FAIL'}")
    failed = [r for r in rows if not r[2] <= r[3]]
    print(f"{len(rows) - len(failed)} of {len(rows)} checks within {LIMIT:.0e} (float64 central differences, "
          f"h = {H:.0e}, random upstream gradient; derivations/gradcheck.md)")
    return 1 if failed else 0


def _posterior(args):
    """The true posterior beside q(z|x), computed in float64 (the density is exp of a difference of log p's), and
    its numbers per example: log p(x), the ELBO, the gap, the gap recomputed as a KL on the picture's grid, and
    the mass of p(z|x) on that grid."""
    from .checkpoint import load_model
    from .plots import check_png_path, plot_posterior
    from .posterior import posterior_grid
    out = check_png_path(args.out or _beside_checkpoint(args, "posterior.png"), "--out")
    if args.n < 1:
        raise ValueError(f"--n must be an integer >= 1, got {args.n}")
    model, ckpt = load_model(args.checkpoint, device=args.device, dtype="float64")
    if model.z_dim not in (1, 2):
        raise ValueError(f"{args.checkpoint} has z_dim {model.z_dim}; the posterior picture needs z_dim 1 or 2 "
                         f"(a grid over z: train with --z-dim 2)")
    data = _checkpoint_data(ckpt["data"], args.data_dir)
    if args.n > data.x_test.shape[0]:
        raise ValueError(f"--n {args.n} is more than the {data.x_test.shape[0]} held-out examples")
    x = data.x_test[:args.n]
    results = posterior_grid(model, model.device.asarray(x, dtype="float64"), points=args.points)
    print(f"{'example':>7s} {'log p(x)':>11s} {'ELBO':>11s} {'gap':>9s} {'grid KL':>9s} {'mass':>10s}  "
          f"(nats; gap = log p(x) - ELBO; grid KL = KL(q(z|x) || p(z|x)) summed on the picture's grid)")
    for i, r in enumerate(results):
        print(f"{i:7d} {r['log_px']:11.4f} {r['elbo']:11.4f} {r['gap']:9.5f} {r['grid_kl']:9.5f} "
              f"{r['mass']:10.7f}")
    images = None if data.image_shape is None else x.reshape((args.n,) + tuple(data.image_shape))
    print(plot_posterior(results, out, images=images))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "evaluate": _evaluate, "sample": _sample, "reconstruct": _reconstruct,
                "interpolate": _interpolate, "latent": _latent,
                "posterior": _posterior, "gradcheck": _gradcheck}[args.command](args)
    except (ValueError, DeviceError, CheckpointError, TrainingError, OSError) as e:
        print(f"minivae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minivae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
