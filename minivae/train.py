"""Training: minibatch Adam (or SGD) on the negative ELBO, held-out evaluation every epoch, resumable
checkpoints and a JSON file of metrics.

The objective: the negative ELBO with its KL weighted by beta, which a warm-up may reach linearly from a start
value (minivae/schedule.py; each epoch's mean weight goes into the history as "kl_weight"), or with
``iw_samples`` K > 1 the importance-weighted bound L_K, for which each step draws eps of shape (K, B, Z).
derivations/objectives.md.

The training step is ``model.loss_and_grads`` then ``optimizer.step``: nothing in it leaves the device (each
step's loss is also written into a per-epoch array on the device). The loop brings to the host, per epoch, the
epoch's summed loss, NLL and KL (to print them) and one flag per parameter (finite or not). A non-finite loss
or parameter stops training before anything is saved, with a TrainingError that names the epoch, the first
step whose loss was not finite, its cause as far as it can be told (a batch holding NaN or inf, an overflow)
and the parameters holding NaN or inf; the last checkpoint is left as it was (tests/test_faults.py).
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Optional

import numpy as np

from .backend import array_namespace, astype, get_device, to_host
from .checkpoint import atomic_write, restore_params, save_checkpoint
from .data import BINARIZE_MODES, check_data, dynamic_binarize, load_dataset
from .evaluate import evaluate_elbo
from .kl import KL_AT_CLAMP
from .likelihoods import SIGMA_MIN
from .model import VAE
from .objectives import ELBO, IWBound
from .optim import OPTIMIZERS
from .parts import PRIORS, check_likelihood_options
from .reparam import LOGVAR_MAX
from .rng import RNG
from .schedule import epoch_kl_weight, kl_weight


class TrainingError(RuntimeError):
    """Training produced a non-finite loss or parameter; nothing was saved."""


def _non_finite_params(params):
    """{name: "3 nan, 1 inf"} for the parameters holding NaN or inf: one small device-to-host transfer of a flag
    per parameter; the counts are read only for the bad ones."""
    names = sorted(params)
    xp = array_namespace(*params.values())
    finite = to_host(xp.stack([xp.all(xp.isfinite(params[k])) for k in names]))
    bad = {}
    for name, ok in zip(names, finite):
        if not ok:
            p = params[name]
            nan, inf = (int(to_host(xp.sum(astype(f(p), xp.int64)))) for f in (xp.isnan, xp.isinf))
            bad[name] = ", ".join(f"{c} {w}" for c, w in ((nan, "nan"), (inf, "inf")) if c)
    return bad


def _fault_message(epoch, step_stats, batch_of, bad_params, steps_per_epoch, ckpt_path):
    """The one-line report of a failed epoch ``epoch`` (1-based): a non-finite loss, parameters holding NaN or
    inf, or a diverged KL. ``step_stats``: the host (steps, 2) array of each step's loss and summed KL (0 for
    steps not run); ``batch_of(s)``: the device batch of step s (0-based), rebuilt only here."""
    params = ", ".join(f"{k!r} ({v})" for k, v in bad_params.items())
    losses, kls = step_stats[:, 0], step_stats[:, 1]
    at = lambda s: f"step {s + 1}/{steps_per_epoch} (global step {(epoch - 1) * steps_per_epoch + s + 1})"  # noqa
    tail = f"; stopping; {ckpt_path} is left as it was"
    bad_steps = np.flatnonzero(~np.isfinite(losses))
    if bad_steps.size:
        s = int(bad_steps[0])
        xb = batch_of(s)
        xp = array_namespace(xb)
        n_bad = int(to_host(xp.sum(astype(~xp.isfinite(xb), xp.int64))))
        if n_bad:
            cause = f"its batch holds {n_bad} NaN or infinite input value(s)"
        elif params:
            cause = f"its batch was finite; parameters holding NaN or inf: {params} (try a smaller --lr)"
        else:
            cause = "its batch and the parameters were finite, so the loss itself overflowed"
        if n_bad and params:
            cause += f"; parameters holding NaN or inf since: {params}"
        return f"epoch {epoch}: the training loss is {losses[s]} at {at(s)}, the first non-finite one; {cause}{tail}"
    big = np.flatnonzero(kls >= KL_AT_CLAMP)
    if big.size:
        s = int(big[0])
        return (f"epoch {epoch}: the training diverged at {at(s)}: its KL reached {kls[s]:.3g} nats, at least "
                f"that of one coordinate at the clamp logvar = {LOGVAR_MAX:g} (derivations/kl.md#the-clamp); try "
                f"a smaller --lr" + (f"; parameters holding NaN or inf: {params}" if params else "") + tail)
    return (f"epoch {epoch}: parameters holding NaN or inf: {params}, though every step's loss was finite (a "
            f"saturating activation such as tanh hides an infinite weight from the loss){tail}")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (the CLI's options). The defaults are what ``minivae train``
    runs with no arguments."""
    dataset: str = "digits"
    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    z_dim: int = 8
    hidden: tuple = (400,)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    gaussian_variance: str = "shared"   # gaussian: fixed (at sigma), shared, per-dim or per-element
    sigma: float = 1.0                  # gaussian_variance fixed: the standard deviation
    sigma_min: float = SIGMA_MIN        # a learned gaussian variance is floored at sigma_min^2
    levels: int = 256                   # categorical: intensity levels L (17 for the digits, 256 for 8-bit)
    beta: float = 1.0
    kl_warmup_epochs: int = 0           # the KL weight rises linearly, per step, from kl_warmup_start to beta
    kl_warmup_start: float = 0.0        #   over this many epochs (minivae/schedule.py); 0: always beta
    iw_samples: int = 1                 # K > 1: train on the importance-weighted bound L_K (minivae/iwae.py)
    prior: str = "normal"               # p(z): normal (N(0, I)) or mog (a learned mixture of Gaussians)
    prior_components: int = 10          # mixture components of the mog prior
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    out: str = "runs/minivae"
    checkpoint_every: int = 10          # epochs between checkpoints (and always at the end)
    data_dir: Optional[str] = None      # mnist / fashion-mnist files (None: the cache folder)
    binarize: str = "none"

    def validate(self):
        """A ValueError naming the first bad option."""
        for name in ("epochs", "batch_size", "z_dim", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("lr", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}")
        for name in ("kl_warmup_epochs", "iw_samples", "prior_components"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "kl_warmup_epochs" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'kl_warmup_epochs' else 1}, "
                                 f"got {v!r}")
        v = self.kl_warmup_start
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= v < math.inf):
            raise ValueError(f"kl_warmup_start must be a finite number >= 0, got {v!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}; got {self.prior!r}")
        check_likelihood_options(self.likelihood, self.gaussian_variance, self.sigma, self.sigma_min, self.levels)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise ValueError(f"data_dir must be a folder path or None, got {self.data_dir!r}")
        if self.binarize not in BINARIZE_MODES:
            raise ValueError(f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {self.binarize!r}")
        return self


@dataclasses.dataclass
class TrainResult:
    model: VAE
    optimizer: object
    history: list
    checkpoint: str
    metrics: str
    interrupted: bool = False


def _prepare_out(out):
    """Create ``out`` and prove it is writable before any training happens."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out {out!r} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        atomic_write(os.path.join(out, ".write-test"), lambda f: f.write(b"ok"))
        os.unlink(os.path.join(out, ".write-test"))
    except OSError as e:
        raise ValueError(f"out {out!r} is not a writable folder: {e.strerror or e}") from None


class _StopOnInterrupt:
    """The first Ctrl-C (SIGINT) asks training to stop after the current step, save and return; a second one
    raises KeyboardInterrupt as usual. Installed only in the main thread (signals are delivered there)."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


RESUMABLE_OVERRIDES = ("epochs", "out", "device", "checkpoint_every", "data_dir")


def _resumed_config(ckpt, path, overrides):
    """The saved run's TrainConfig, with only the options that do not change the run's math overridden."""
    bad = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
    if bad:
        raise ValueError(f"resume continues the saved run; {', '.join(bad)} cannot change (only "
                         f"{', '.join(RESUMABLE_OVERRIDES)} can)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in ckpt["train"].items() if k in fields}
    config = dataclasses.replace(TrainConfig(**saved), **overrides)
    if config.epochs < ckpt["epoch"]:
        raise ValueError(f"epochs ({config.epochs}) is below the {ckpt['epoch']} epochs that {path!r} has done")
    return config


def train(config=None, log=print, resume=None, **overrides):
    """Train a VAE as ``config`` (a TrainConfig; keyword overrides allowed) says, or continue the run saved in
    the checkpoint ``resume`` (then only epochs, out, device, checkpoint_every and data_dir may be overridden).

    Every ``checkpoint_every`` epochs and at the end it writes ``<out>/checkpoint.npz`` (atomically) and
    ``<out>/metrics.json``. A first Ctrl-C stops after the current step and saves, mid-epoch, everything a
    resume needs: resuming gives bitwise the same parameters as an uninterrupted run. A NaN or infinite loss
    raises TrainingError and leaves the last checkpoint as it was. Returns a TrainResult.
    """
    ckpt = None
    if resume is not None:
        from .checkpoint import load_checkpoint
        ckpt = load_checkpoint(resume)
        config = _resumed_config(ckpt, os.fspath(resume), overrides)
    else:
        config = dataclasses.replace(config or TrainConfig(), **overrides)
    if isinstance(config.hidden, int):
        config.hidden = (config.hidden,)
    config.hidden = tuple(config.hidden)
    config.validate()
    device = get_device(config.device)
    if config.data_dir:
        config.data_dir = os.path.abspath(config.data_dir)    # the checkpoint finds it from anywhere
    data = load_dataset(config.dataset, config.data_dir, config.binarize)
    x_train, x_test = data.x_train, data.x_test
    check_data(x_train, config.likelihood, "training data")
    check_data(x_test, config.likelihood, "held-out data")
    for x, what in ((x_train, "training data"), (x_test, "held-out data")):      # finite in float64, inf in float32?
        if config.dtype == "float32" and np.max(np.abs(x)) > np.finfo(np.float32).max:
            raise ValueError(f"{what} holds values beyond the float32 range (|x| > 3.4e38); use dtype float64")
    _prepare_out(config.out)

    model = VAE(x_train.shape[1], config.z_dim, config.hidden, config.activation, config.likelihood,
                dtype=config.dtype, device=device, seed=config.seed, prior=config.prior,
                prior_components=config.prior_components, gaussian_variance=config.gaussian_variance,
                sigma=config.sigma, sigma_min=config.sigma_min, levels=config.levels)
    optimizer = OPTIMIZERS[config.optimizer](model.params, lr=config.lr)
    rng = RNG(config.seed, stream="train")                        # independent of the weights' "init" stream
    epoch, step, order, sums, history = 0, 0, None, None, []      # epochs done; batches done in the next one
    if ckpt is not None:
        restore_params(model, ckpt["params"], os.fspath(resume))
        optim = dict(ckpt["optim"])
        for slot, values in optim.items():
            if isinstance(values, dict):
                optim[slot] = {k: device.asarray(a, dtype=config.dtype) for k, a in values.items()}
        optimizer.load_state_dict(optim)
        rng.set_state(ckpt["rng"])
        epoch, progress, order = ckpt["epoch"], ckpt["progress"], ckpt["order"]
        step, history = progress["step"], progress["history"]
        if progress["sums"] is not None:
            sums = [device.asarray(v, dtype=config.dtype) for v in progress["sums"]]
    xp = device.xp
    x_train_d = device.asarray(x_train, dtype=config.dtype)        # host -> device, once
    x_test_d = device.asarray(x_test, dtype=config.dtype)
    n, bs = x_train.shape[0], config.batch_size
    steps_per_epoch = -(-n // bs)
    config_dict = dataclasses.asdict(config)
    config_dict["hidden"] = list(config.hidden)
    ckpt_path = os.path.join(config.out, "checkpoint.npz")
    metrics_path = os.path.join(config.out, "metrics.json")

    def check_health(epoch_number, step_stats, order_d, totals=None):
        """Raise a TrainingError naming the step, the cause and the parameters if the epoch so far has a
        non-finite loss, a KL of KL_AT_CLAMP or more (the run diverged: derivations/kl.md#the-clamp), or
        parameters holding NaN or inf. ``totals``: the epoch's (loss, summed KL) if already on the host (None:
        read from ``step_stats``). The per-step numbers come to the host only when something is wrong."""
        bad_params = _non_finite_params(model.params)
        loss, kl = totals if totals is not None else np.sum(to_host(step_stats), axis=0)
        if math.isfinite(loss) and not kl >= KL_AT_CLAMP and not bad_params:
            return
        batch_of = lambda s: xp.take(x_train_d, order_d[s * bs:min((s + 1) * bs, n)], axis=0)   # noqa: E731
        raise TrainingError(_fault_message(epoch_number, to_host(step_stats), batch_of, bad_params,
                                           steps_per_epoch, ckpt_path))

    def save(mid_epoch):
        progress = {"step": step if mid_epoch else 0, "history": history,
                    "sums": [float(to_host(v)) for v in sums] if mid_epoch and sums is not None else None}
        save_checkpoint(ckpt_path, model, optimizer, config_dict, epoch, rng, progress,
                        order if mid_epoch else None)
        payload = {"config": config_dict, "history": history, "final": history[-1] if history else None}
        atomic_write(metrics_path, lambda f: f.write(json.dumps(payload, indent=2).encode()))

    log(f"minivae: VAE {model.x_dim}-{'-'.join(map(str, model.hidden)) or '()'}-({model.z_dim}) "
        f"{config.activation} {config.likelihood} on {config.dataset} ({n} train / {x_test.shape[0]} held out), "
        f"{config.epochs} epochs, batch {bs}, {config.optimizer} lr {config.lr}, device {device.name}, "
        f"{config.dtype}" + (f"; resuming after epoch {epoch}, step {step}" if ckpt is not None else ""))
    with _StopOnInterrupt() as interrupt:
        while epoch < config.epochs:
            t0 = time.perf_counter()
            if order is None:
                order, step, sums = rng.permutation(n), 0, None          # this epoch's data order, on the host
            order_d = device.asarray(order)                               # host -> device, once per epoch
            step_stats = device.asarray(np.zeros((steps_per_epoch, 2)), dtype=config.dtype)  # loss, KL: on device
            while step < steps_per_epoch:
                idx = order_d[step * bs:min((step + 1) * bs, n)]
                xb = xp.take(x_train_d, idx, axis=0)                     # (B, D)
                if config.binarize == "dynamic":                         # a fresh Bernoulli(x) sample per batch
                    xb = dynamic_binarize(xb, rng.uniform(tuple(xb.shape), device, config.dtype))
                eps = rng.normal((config.iw_samples, xb.shape[0], config.z_dim), device, config.dtype)  # (K, B, Z)
                weight = kl_weight(epoch, step, steps_per_epoch, config.beta, config.kl_warmup_epochs,
                                   config.kl_warmup_start)               # a pure function of (epoch, step)
                objective = IWBound(weight) if config.iw_samples > 1 else ELBO(weight)
                loss, grads, stats = model.loss_and_grads(xb, eps, objective)
                optimizer.step(grads)
                b = xb.shape[0]
                batch_sums = (loss * b, stats["nll"] * b, stats["kl"] * b)
                step_stats[step, 0], step_stats[step, 1] = loss, batch_sums[2]   # on the device: read on failure
                sums = list(batch_sums) if sums is None else [s + v for s, v in zip(sums, batch_sums)]
                step += 1
                if interrupt.requested:
                    check_health(epoch + 1, step_stats, order_d)         # never save a broken state
                    save(mid_epoch=True)
                    log(f"interrupted in epoch {epoch + 1} after step {step}/{steps_per_epoch}; saved {ckpt_path}"
                        f" (continue with: minivae train --resume {ckpt_path})")
                    return TrainResult(model, optimizer, history, ckpt_path, metrics_path, interrupted=True)
            train_loss, train_nll, train_kl = (float(to_host(v)) / n for v in sums)   # one transfer per epoch
            check_health(epoch + 1, step_stats, order_d, (train_loss, train_kl * n))
            epoch, order = epoch + 1, None
            held = evaluate_elbo(model, x_test_d, seed=config.seed)
            if not math.isfinite(held["neg_elbo"]):
                raise TrainingError(f"epoch {epoch}: the held-out negative ELBO is {held['neg_elbo']}; stopping; "
                                    f"{ckpt_path} is left as it was")
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch, "train_loss": train_loss, "train_nll": train_nll,
                            "train_kl": train_kl, "heldout_neg_elbo": held["neg_elbo"],
                            "heldout_nll": held["nll"], "heldout_kl": held["kl"], "seconds": seconds,
                            "kl_weight": epoch_kl_weight(epoch - 1, steps_per_epoch, config.beta,
                                                         config.kl_warmup_epochs, config.kl_warmup_start)})
            log(f"epoch {epoch:4d}/{config.epochs}  train -ELBO {train_loss:9.3f}  held-out -ELBO "
                f"{held['neg_elbo']:9.3f} (nll {held['nll']:8.3f} + kl {held['kl']:7.3f}) nats  {seconds:6.2f}s")
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                save(mid_epoch=False)
    if ckpt is not None and epoch == ckpt["epoch"] and step == 0:
        save(mid_epoch=False)                     # resumed with nothing left to do: still write the files
    from .plots import plot_loss_curves
    curves = plot_loss_curves(history, os.path.join(config.out, "loss_curves.png"))
    log(f"wrote {ckpt_path}, {metrics_path} and {curves}")
    return TrainResult(model, optimizer, history, ckpt_path, metrics_path)
