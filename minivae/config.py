"""The one description of a training run: ``TrainConfig``, its help text and defaults (the field metadata), what
may change when a run is resumed, and its validation, done once and completely before anything is created on
disk. The command line's ``train`` options are generated from it (minivae/cli.py), as HuggingFace's
``HfArgumentParser`` generates them from a dataclass. Tests: tests/test_config.py, tests/test_train.py.
"""
import dataclasses
from typing import Optional

from .backend import DEVICES, dtype_name
from .checks import check_choice, check_int, check_number
from .data import BINARIZE_MODES, DATASETS
from .layers import ACTIVATIONS
from .likelihoods import SIGMA_MIN
from .optim import OPTIMIZERS
from .parts import DECODERS, LIKELIHOODS, POSTERIORS, PRIORS, check_likelihood_options

FIXED, MAY_CHANGE = "fixed", "may change"      # what a field may do when a run is resumed
ARRAYS = "arrays"                               # the dataset of a run trained by fit() on the caller's arrays


def option(default, help, on_resume=FIXED, flag_type=None):
    """A TrainConfig field: its default, its help text, whether a resumed run may change it, and the type the
    command line parses it with (None: the field's own type)."""
    return dataclasses.field(default=default, metadata={"help": help, "on_resume": on_resume,
                                                        "flag_type": flag_type})


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults are what ``minivae train`` runs with no arguments."""
    dataset: str = option("digits", f"the data: {', '.join(DATASETS)}")
    epochs: int = option(300, "epochs to train (on --resume: the total, counting those done)", MAY_CHANGE)
    batch_size: int = option(64, "examples per minibatch")
    lr: float = option(1e-3, "learning rate", MAY_CHANGE)
    optimizer: str = option("adam", f"the optimizer: {', '.join(OPTIMIZERS)}")
    z_dim: int = option(8, "latent dimension Z")
    hidden: tuple = option((400,), "hidden layer sizes of the encoder and the decoder, comma-separated; 'none' "
                                   "for a linear VAE", flag_type="hidden")
    activation: str = option("tanh", f"activation of the hidden layers: {', '.join(ACTIVATIONS)}")
    likelihood: str = option("bernoulli", "p(x|z): bernoulli, gaussian, or categorical (a softmax over --levels "
                                          "intensity levels)")
    gaussian_variance: str = option("shared", "gaussian: fixed (at --sigma), shared (one learned value), per-dim "
                                              "(one per dimension) or per-element (a second decoder head)")
    sigma: float = option(1.0, "gaussian-variance fixed: the standard deviation")
    sigma_min: float = option(SIGMA_MIN, "floor of a learned gaussian standard deviation: variance = sigma_min^2 "
                                         "+ exp(raw) (the likelihood is unbounded without it)")
    levels: int = option(256, "categorical: intensity levels L, level = round(x (L - 1)); 17 for the digits, 256 "
                              "for 8-bit images")
    decoder: str = option("mlp", "p(x|z)'s network: mlp (the likelihood's head on the decoder's features) or made "
                                 "(autoregressive over the pixels, a MADE reading the decoder's features in every "
                                 "layer; bernoulli only)")
    made_hidden: tuple = option((400, 400), "hidden layer sizes of --decoder made, comma-separated",
                                flag_type="hidden")
    beta: float = option(1.0, "weight on the KL term (beta-VAE; 1: the ELBO)", MAY_CHANGE)
    kl_warmup_epochs: int = option(0, "the KL weight rises linearly, step by step, from --kl-warmup-start to "
                                      "--beta over this many epochs (0: no warm-up)")
    kl_warmup_start: float = option(0.0, "the KL weight of the first step of a warm-up")
    free_bits: float = option(0.0, "free bits: the batch's mean KL is charged only above this many nats (Kingma "
                                   "et al. 2016, the whole code one group); 0: off; needs --iw-samples 1")
    iw_samples: int = option(1, "K > 1: train on the importance-weighted bound L_K with K samples per example")
    prior: str = option("normal", "p(z): normal (N(0, I)), mog (a learned mixture of Gaussians) or vamp (the "
                                  "VampPrior: q(z|x)'s mixture over --pseudo-inputs learned inputs)")
    prior_components: int = option(10, "mixture components of --prior mog")
    pseudo_inputs: int = option(50, "learned pseudo-inputs of --prior vamp")
    posterior: str = option("diagonal", "q(z|x): diagonal (a Gaussian with diagonal covariance) or flow (that "
                                        "Gaussian through --flow-steps planar flow steps)")
    flow_steps: int = option(4, "planar steps K of --posterior flow")
    seed: int = option(0, "seed of the initial weights, the data order and the noise (independent streams)")
    device: str = option("cpu", f"where to train: {', '.join(DEVICES)} (CuPy; array-api-strict)", MAY_CHANGE)
    dtype: str = option("float32", "float32 or float64")
    out: str = option("runs/minivae", "folder for checkpoint.npz, metrics.json and loss_curves.png (on "
                                      "--resume: the checkpoint's folder)", MAY_CHANGE)
    checkpoint_every: int = option(10, "epochs between checkpoints (one is always written at the end and on "
                                       "Ctrl-C)", MAY_CHANGE)
    data_dir: Optional[str] = option(None, "folder of the mnist / fashion-mnist IDX files; missing ones are "
                                           "downloaded there; none: $MINIVAE_DATA/<dataset> or "
                                           "~/.cache/minivae/<dataset>", MAY_CHANGE)
    binarize: str = option("none", "none, threshold (x > 0.5), sample (one fixed Bernoulli sample) or dynamic (a "
                                   "fresh sample of each training batch)")
    log_every: int = option(1, "print one line every this many epochs (and the last); 0: only the header and "
                               "the result", MAY_CHANGE)
    track_exact: str = option("auto", "record each epoch's held-out log p(x) by quadrature, the ELBO on the same "
                                      "grid and their gap KL(q(z|x) || p(z|x)) (the two goals), on the first "
                                      "100 held-out examples, in metrics.json and a fourth panel of "
                                      "loss_curves.png: yes, no, or auto (yes when z_dim <= 2 and the decoder "
                                      "has at most 1,000 values per example, D x the categorical's levels: the "
                                      "digits with a Bernoulli or Gaussian likelihood, not Fashion-MNIST, not "
                                      "the categorical; about 1 s per epoch on the digits)", MAY_CHANGE)

    def validate(self):
        """The config with its values normalised (hidden a tuple of ints, dtype a name), or a ValueError naming
        the first bad option. Checks every option, so nothing starts that a later check would stop."""
        c = self
        hidden = (c.hidden,) if isinstance(c.hidden, int) else c.hidden
        if not isinstance(hidden, (tuple, list)):
            raise ValueError(f"hidden must be a tuple of layer sizes, got {c.hidden!r}")
        try:
            dtype = dtype_name(c.dtype)
        except TypeError:
            dtype = c.dtype
        made_hidden = (c.made_hidden,) if isinstance(c.made_hidden, int) else c.made_hidden
        if not isinstance(made_hidden, (tuple, list)):
            raise ValueError(f"made_hidden must be a tuple of layer sizes, got {c.made_hidden!r}")
        c = dataclasses.replace(c, hidden=tuple(check_int(h, "hidden", 1) for h in hidden), dtype=dtype,
                                made_hidden=tuple(check_int(h, "made_hidden", 1) for h in made_hidden))
        check_choice(c.dataset, "dataset", DATASETS + (ARRAYS,))
        for name in ("epochs", "batch_size", "z_dim", "checkpoint_every", "iw_samples", "prior_components",
                     "flow_steps", "pseudo_inputs"):
            check_int(getattr(c, name), name, 1)
        for name in ("seed", "kl_warmup_epochs", "log_every"):
            check_int(getattr(c, name), name, 0)
        check_number(c.lr, "lr", 0.0, strict=True)
        check_number(c.beta, "beta", 0.0)
        check_number(c.kl_warmup_start, "kl_warmup_start", 0.0)
        check_number(c.free_bits, "free_bits", 0.0)
        if c.free_bits and c.iw_samples > 1:
            raise ValueError(f"free_bits applies to the ELBO; with iw_samples {c.iw_samples} the objective is the "
                             f"importance-weighted bound (use one or the other)")
        check_choice(c.optimizer, "optimizer", OPTIMIZERS)
        check_choice(c.activation, "activation", ACTIVATIONS)
        check_choice(c.prior, "prior", PRIORS)
        check_choice(c.posterior, "posterior", POSTERIORS)
        check_choice(c.likelihood, "likelihood", LIKELIHOODS)
        check_choice(c.decoder, "decoder", DECODERS)
        if c.likelihood not in DECODERS[c.decoder]:
            raise ValueError(f"decoder {c.decoder!r} offers the likelihoods {', '.join(DECODERS[c.decoder])}; "
                             f"got likelihood {c.likelihood!r}")
        check_likelihood_options(c.likelihood, c.gaussian_variance, c.sigma, c.sigma_min, c.levels)
        check_choice(c.device, "device", DEVICES)
        check_choice(c.dtype, "dtype", ("float32", "float64"))
        check_choice(c.binarize, "binarize", BINARIZE_MODES)
        check_choice(c.track_exact, "track_exact", ("auto", "yes", "no"))
        if c.track_exact == "yes" and c.z_dim > 2:
            raise ValueError(f"track_exact yes needs z_dim 1 or 2 (quadrature over z); z_dim is {c.z_dim}")
        if not isinstance(c.out, str) or not c.out:
            raise ValueError(f"out must be a folder path, got {c.out!r}")
        if c.data_dir is not None and (not isinstance(c.data_dir, str) or not c.data_dir):
            raise ValueError(f"data_dir must be a folder path or None, got {c.data_dir!r}")
        return c

    def changed(self):
        """{field: value} for every field that differs from its default (the run's header names them)."""
        default = TrainConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def resume_policy(name):
    """FIXED or MAY_CHANGE for the field ``name``."""
    return {f.name: f.metadata["on_resume"] for f in dataclasses.fields(TrainConfig)}[name]


def saved_config(saved):
    """The TrainConfig of a checkpoint's ``train`` record (a dict), validated: a TypeError or ValueError if the
    record is not a valid config (minivae/checkpoint.py names the file)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in fields}).validate()


def resumed_config(saved, typed, path):
    """The saved run's config (a dict from its checkpoint) with what the user typed applied: a field that may
    change on resume takes the typed value; a fixed one must equal the saved value, or a ValueError names it.
    Returns (config, {field: (saved, typed)} for every field that changed)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    base = saved_config(saved)
    changes = {}
    for name, value in typed.items():
        if name not in fields:
            raise ValueError(f"{name} is not a training option")
        old = getattr(base, name)
        new = tuple(value) if name in ("hidden", "made_hidden") and isinstance(value, (list, tuple)) else value
        if new == old:
            continue
        if fields[name].metadata["on_resume"] == FIXED:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} cannot change when resuming {path}: the run was trained with {old!r}, "
                             f"you gave {value!r} (start a new run with a new --out to change it)")
        changes[name] = (old, new)
    config = dataclasses.replace(base, **{k: new for k, (_, new) in changes.items()})
    return config, changes


# ---- the command line's train options, generated from the fields -------------------------------------------------

def parse_hidden(text):
    """'256' -> (256,);  '400,200' -> (400, 200);  '' or 'none' -> () (linear encoder and decoder)."""
    import argparse
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes such as 400,200; got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive; got {text!r}")
    return sizes


def _shown(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_train_options(parser):
    """One ``--flag`` per TrainConfig field, its help ending in the default. An option the user does not type is
    absent from the parsed namespace (``argparse.SUPPRESS``), so ``typed_options(args)`` is exactly what was
    typed: a value equal to the default still counts as typed."""
    import argparse
    for f in dataclasses.fields(TrainConfig):
        kind = {"hidden": parse_hidden}.get(f.metadata["flag_type"]) or {int: int, float: float}.get(f.type, str)
        resume_note = "; may change on --resume" if f.metadata["on_resume"] == MAY_CHANGE else ""
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=argparse.SUPPRESS,
                            metavar=f.name.upper(),
                            help=f"{f.metadata['help']} (default: {_shown(f.default)}{resume_note})")


def typed_options(args):
    """{field: value} for the TrainConfig options present in the parsed ``args``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
