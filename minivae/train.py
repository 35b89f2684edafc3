"""Training: minibatch Adam (or SGD) on the negative ELBO, held-out evaluation every epoch, resumable
checkpoints and a JSON file of metrics.

The training step is ``model.loss_and_grads`` then ``optimizer.step``: nothing in it leaves the device. The
loop brings three numbers per epoch to the host (the epoch's summed loss, NLL and KL) to print them and to
stop on a non-finite loss before anything is saved.
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Optional

from .backend import get_device, to_host
from .checkpoint import atomic_write, restore_params, save_checkpoint
from .data import BINARIZE_MODES, check_data, dynamic_binarize, load_dataset
from .evaluate import evaluate_elbo
from .model import VAE
from .optim import OPTIMIZERS
from .rng import RNG


class TrainingError(RuntimeError):
    """Training produced a non-finite loss; nothing was saved."""


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
    beta: float = 1.0
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
    _prepare_out(config.out)

    model = VAE(x_train.shape[1], config.z_dim, config.hidden, config.activation, config.likelihood,
                dtype=config.dtype, device=device, seed=config.seed)
    optimizer = OPTIMIZERS[config.optimizer](model.params, lr=config.lr)
    rng = RNG(config.seed)
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
            while step < steps_per_epoch:
                idx = order_d[step * bs:min((step + 1) * bs, n)]
                xb = xp.take(x_train_d, idx, axis=0)                     # (B, D)
                if config.binarize == "dynamic":                         # a fresh Bernoulli(x) sample per batch
                    xb = dynamic_binarize(xb, rng.uniform(tuple(xb.shape), device, config.dtype))
                eps = rng.normal((xb.shape[0], config.z_dim), device, config.dtype)
                loss, grads, stats = model.loss_and_grads(xb, eps, config.beta)
                optimizer.step(grads)
                b = xb.shape[0]
                batch_sums = (loss * b, stats["nll"] * b, stats["kl"] * b)
                sums = list(batch_sums) if sums is None else [s + v for s, v in zip(sums, batch_sums)]
                step += 1
                if interrupt.requested:
                    save(mid_epoch=True)
                    log(f"interrupted in epoch {epoch + 1} after step {step}/{steps_per_epoch}; saved {ckpt_path}"
                        f" (continue with: minivae train --resume {ckpt_path})")
                    return TrainResult(model, optimizer, history, ckpt_path, metrics_path, interrupted=True)
            train_loss, train_nll, train_kl = (float(to_host(v)) / n for v in sums)   # one transfer per epoch
            epoch, order = epoch + 1, None
            if not math.isfinite(train_loss):
                raise TrainingError(f"epoch {epoch}: the training loss is {train_loss}; stopping (try a smaller "
                                    f"--lr); {ckpt_path} is left as it was")
            held = evaluate_elbo(model, x_test_d, seed=config.seed)
            if not math.isfinite(held["neg_elbo"]):
                raise TrainingError(f"epoch {epoch}: the held-out negative ELBO is {held['neg_elbo']}; stopping; "
                                    f"{ckpt_path} is left as it was")
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch, "train_loss": train_loss, "train_nll": train_nll,
                            "train_kl": train_kl, "heldout_neg_elbo": held["neg_elbo"],
                            "heldout_nll": held["nll"], "heldout_kl": held["kl"], "seconds": seconds})
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
