"""Training: minibatch Adam (or SGD) on the negative ELBO, held-out evaluation every epoch, a checkpoint and a
JSON file of metrics at the end.

The training step is ``model.loss_and_grads`` then ``optimizer.step``: nothing in it leaves the device. The
loop brings one number per epoch to the host (the epoch's summed loss) to print it and to stop on a
non-finite loss before anything is saved.
"""
import dataclasses
import json
import math
import os
import time

from .backend import get_device, to_host
from .checkpoint import atomic_write, save_checkpoint
from .data import check_data, load_dataset
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

    def validate(self):
        """A ValueError naming the first bad option."""
        for name in ("epochs", "batch_size", "z_dim"):
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
        return self


@dataclasses.dataclass
class TrainResult:
    model: VAE
    optimizer: object
    history: list
    checkpoint: str
    metrics: str


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


def train(config=None, log=print, **overrides):
    """Train a VAE as ``config`` (a TrainConfig; keyword overrides allowed) says. Returns a TrainResult.

    Writes ``<out>/checkpoint.npz`` and ``<out>/metrics.json`` at the end; raises TrainingError, saving
    nothing, if the loss becomes NaN or infinite.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    if isinstance(config.hidden, int):
        config.hidden = (config.hidden,)
    config.hidden = tuple(config.hidden)
    config.validate()
    device = get_device(config.device)
    data = load_dataset(config.dataset)
    x_train, x_test = data.x_train, data.x_test
    check_data(x_train, config.likelihood, "training data")
    check_data(x_test, config.likelihood, "held-out data")
    _prepare_out(config.out)

    model = VAE(x_train.shape[1], config.z_dim, config.hidden, config.activation, config.likelihood,
                dtype=config.dtype, device=device, seed=config.seed)
    optimizer = OPTIMIZERS[config.optimizer](model.params, lr=config.lr)
    rng = RNG(config.seed)
    xp = device.xp
    x_train_d = device.asarray(x_train, dtype=config.dtype)        # host -> device, once
    x_test_d = device.asarray(x_test, dtype=config.dtype)
    n, bs = x_train.shape[0], config.batch_size

    log(f"minivae: VAE {model.x_dim}-{'-'.join(map(str, model.hidden)) or '()'}-({model.z_dim}) "
        f"{config.activation} {config.likelihood} on {config.dataset} ({n} train / {x_test.shape[0]} held out), "
        f"{config.epochs} epochs, batch {bs}, {config.optimizer} lr {config.lr}, device {device.name}, "
        f"{config.dtype}")
    history = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = device.asarray(rng.permutation(n))                   # data order: host RNG -> device, once
        total = None
        for start in range(0, n, bs):
            idx = order[start:min(start + bs, n)]
            xb = xp.take(x_train_d, idx, axis=0)                     # (B, D)
            eps = rng.normal((xb.shape[0], config.z_dim), device, config.dtype)
            loss, grads, _ = model.loss_and_grads(xb, eps, config.beta)
            optimizer.step(grads)
            total = loss * xb.shape[0] if total is None else total + loss * xb.shape[0]
        train_loss = float(to_host(total)) / n                       # one device -> host transfer per epoch
        if not math.isfinite(train_loss):
            raise TrainingError(f"epoch {epoch}: the training loss is {train_loss}; stopping, nothing saved "
                                f"(try a smaller --lr)")
        held = evaluate_elbo(model, x_test_d, seed=config.seed)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "heldout_neg_elbo": held["neg_elbo"],
                        "heldout_nll": held["nll"], "heldout_kl": held["kl"], "seconds": seconds})
        log(f"epoch {epoch:4d}/{config.epochs}  train -ELBO {train_loss:9.3f}  held-out -ELBO "
            f"{held['neg_elbo']:9.3f} (nll {held['nll']:8.3f} + kl {held['kl']:7.3f}) nats  {seconds:6.2f}s")
        if not math.isfinite(held["neg_elbo"]):
            raise TrainingError(f"epoch {epoch}: the held-out negative ELBO is {held['neg_elbo']}; stopping, "
                                f"nothing saved")

    config_dict = dataclasses.asdict(config)
    config_dict["hidden"] = list(config.hidden)
    ckpt = os.path.join(config.out, "checkpoint.npz")
    save_checkpoint(ckpt, model, optimizer, config_dict, config.epochs, rng)
    metrics = os.path.join(config.out, "metrics.json")
    payload = {"config": config_dict, "history": history, "final": history[-1]}
    atomic_write(metrics, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    log(f"wrote {ckpt} and {metrics}")
    return TrainResult(model, optimizer, history, ckpt, metrics)
