"""Training: minibatch Adam (or SGD) on the negative ELBO (or the importance-weighted bound), held-out evaluation
every epoch, resumable checkpoints and a JSON file of metrics. nanoGPT's ``train.py`` is the model for the loop.

- ``train(config)`` trains on a named dataset (minivae/data.py); ``train(resume=CHECKPOINT)`` continues a saved
  run; ``fit(x_train, x_valid)`` trains on one's own arrays. The options are ``TrainConfig``'s (minivae/config.py),
  validated once and completely before anything is created on disk.
- The step is ``model.loss_and_grads`` then ``optimizer.step``; nothing in it leaves the device. Per epoch the
  loop brings to the host the epoch's summed loss, NLL and KL and one flag per parameter (minivae/health.py: a
  non-finite loss, a diverged KL or a broken parameter stops training before anything is saved, naming the step
  and the cause).
- The objective: the negative ELBO with its KL weighted by beta, reached by a warm-up (minivae/schedule.py), or
  with ``iw_samples`` K > 1 the bound L_K; eps is drawn as (K, B, Z) every step. derivations/objectives.md.
- A first Ctrl-C stops after the current step and saves, mid-epoch, everything a resume needs: resuming gives
  bit for bit the parameters of an uninterrupted run. The run's folder is claimed (minivae/run_folder.py): no
  earlier checkpoint is replaced unless asked, and two runs never write into one folder.
Tests: tests/test_train.py, tests/test_health.py, tests/test_config.py.
"""
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from typing import Optional

import numpy as np

from .backend import astype, get_device, to_host
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, restore_params, save_checkpoint
from .checks import check_int
from .config import ARRAYS, TrainConfig, resumed_config
from .data import check_data, dynamic_binarize, load_dataset
from .evaluate import evaluate_elbo, exact_log_px
from .health import TrainingError, check_health, kept
from .model import VAE
from .objectives import ELBO, IWBound
from .optim import OPTIMIZERS
from .parts import LIKELIHOODS
from .rng import RNG
from .run_folder import RunFolder
from .schedule import epoch_kl_weight, kl_weight

__all__ = ["Progress", "TrainConfig", "TrainResult", "TrainingError", "fit", "train"]


@dataclasses.dataclass
class TrainResult:
    model: VAE
    optimizer: object
    history: list
    checkpoint: Optional[str]        # None when nothing was written (fit without out)
    metrics: Optional[str]
    interrupted: bool = False


@dataclasses.dataclass
class Progress:
    """Where a run stands: epochs done, batches done in the epoch under way, that epoch's data order (host) and
    partial sums (loss, nll, kl on the device), and the per-epoch history. All a resume needs besides the model,
    the optimizer and the RNG state."""
    epoch: int = 0
    step: int = 0
    order: Optional[np.ndarray] = None
    sums: Optional[list] = None
    history: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunData:
    """The host data of a run, and what a checkpoint records of it (so pictures need not reload it)."""
    x_train: np.ndarray
    x_valid: Optional[np.ndarray]
    meta: dict                       # dataset, binarize, data_dir, image_shape


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


# ---- the entry points -------------------------------------------------------------------------------------------

def train(config=None, log=print, resume=None, overwrite=False, **options):
    """Train a VAE as ``config`` (a TrainConfig; keyword ``options`` override its fields) says, on its named
    dataset; or continue the run saved in the checkpoint ``resume``, with ``options`` the fields the user gave:
    one that may change on resume (epochs, lr, beta, checkpoint_every, out, device, data_dir, log_every) is
    applied and logged, one that would change the run's architecture or data is refused naming it. A resumed run
    writes beside its checkpoint unless ``out`` is given. ``overwrite``: replace a checkpoint already in ``out``.
    Every ``checkpoint_every`` epochs and at the end it writes ``<out>/checkpoint.npz`` (atomically) and
    ``<out>/metrics.json``. Returns a TrainResult.
    """
    ckpt, changes = None, {}
    if resume is not None:
        ckpt = load_checkpoint(resume)
        typed = {"out": os.path.dirname(os.path.abspath(os.fspath(resume))), **options}
        config, changes = resumed_config(ckpt["train"], typed, os.fspath(resume))     # names the file if corrupt
    else:
        config = dataclasses.replace(config or TrainConfig(), **options)
    config = config.validate()
    if config.dataset == ARRAYS:
        raise ValueError("this run trained on arrays given to fit(x_train, ...); train() and --resume read a named "
                         "dataset (pass the arrays to fit again to train on them)")
    if ckpt is not None and config.epochs < ckpt["epoch"]:
        raise ValueError(f"epochs ({config.epochs}) is below the {ckpt['epoch']} epochs that {resume!r} has done")
    if config.data_dir:
        config = dataclasses.replace(config, data_dir=os.path.abspath(config.data_dir))   # found from anywhere
    data = load_dataset(config.dataset, config.data_dir, config.binarize)
    _check_data(config, data.x_train, "training data")
    _check_data(config, data.x_test, "held-out data")
    run_data = RunData(data.x_train, data.x_test, dict(dataset=config.dataset, binarize=config.binarize,
                                                        data_dir=config.data_dir, image_shape=data.image_shape))
    resuming_here = ckpt is not None and _same_folder(os.path.dirname(os.path.abspath(os.fspath(resume))),
                                                      config.out)
    folder = RunFolder(config.out, resuming=resuming_here, overwrite=overwrite)
    return _run(config, run_data, log, folder, ckpt, resume, changes)


def _same_folder(a, b):
    return os.path.isdir(a) and os.path.isdir(b) and os.path.samefile(a, b)


def fit(x_train, x_valid=None, *, out=None, log=print, overwrite=False, **options):
    """Train on one's own data: ``x_train`` (N, D) and optionally held-out ``x_valid`` (M, D), host arrays of
    floats (in [0, 1] for the Bernoulli and categorical likelihoods), with any TrainConfig ``options`` (z_dim,
    hidden, likelihood, epochs, ...). ``out``: a folder for checkpoints and metrics (None: nothing is written;
    Ctrl-C then stops and returns). Returns a TrainResult; ``result.model`` and ``result.history``."""
    config = TrainConfig(**{"dataset": ARRAYS, **options}, **({"out": out} if out is not None else {}))
    config = config.validate()
    for x, name in ((x_train, "x_train"), (x_valid, "x_valid")):
        if x is not None:
            _check_data(config, x, name)
    if x_valid is not None and x_valid.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_valid has {x_valid.shape[1]} dimensions, x_train {x_train.shape[1]}")
    run_data = RunData(x_train, x_valid, dict(dataset=ARRAYS, binarize=config.binarize, data_dir=None,
                                              image_shape=None))
    folder = RunFolder(config.out, overwrite=overwrite) if out is not None else None
    return _run(config, run_data, log, folder)


def _check_data(config, x, what):
    """The data checks (minivae/data.py) and the dtype's range, naming ``what``."""
    check_data(x, config.likelihood, what)
    if config.dtype == "float32" and np.max(np.abs(x)) > np.finfo(np.float32).max:
        raise ValueError(f"{what} holds values beyond the float32 range (|x| > 3.4e38); use dtype float64")


# ---- the run ---------------------------------------------------------------------------------------------------

def _run(config, data, log, folder, ckpt=None, resume=None, changes=None):
    """Build the model, optimizer and RNG (restored from ``ckpt`` when resuming), check everything that can be
    checked, then claim ``folder`` (None: write nothing) and train."""
    if folder is not None:
        folder.check()                                           # an earlier run's checkpoint: refused now
    device = get_device(config.device)
    model = VAE(data.x_train.shape[1], config.z_dim, config.hidden, config.activation, config.likelihood,
                dtype=config.dtype, device=device, seed=config.seed, prior=config.prior,
                prior_components=config.prior_components, gaussian_variance=config.gaussian_variance,
                sigma=config.sigma, sigma_min=config.sigma_min, levels=config.levels, posterior=config.posterior,
                flow_steps=config.flow_steps, pseudo_inputs=config.pseudo_inputs, decoder=config.decoder,
                made_hidden=config.made_hidden)
    optimizer = OPTIMIZERS[config.optimizer](model.params, lr=config.lr)
    rng = RNG(config.seed, stream="train")                       # independent of the weights' "init" stream
    progress = Progress()
    if ckpt is not None:
        progress = _restore(ckpt, os.fspath(resume), model, optimizer, rng, config)
    for warning in _warnings(config, data):
        log(f"warning: {warning}")
    log(_header(config, model, data, progress, ckpt is not None, changes or {}))
    if folder is None:
        return _loop(config, model, optimizer, rng, progress, data, log, None)
    with folder:
        return _loop(config, model, optimizer, rng, progress, data, log, folder)


def _loop(config, model, optimizer, rng, p, data, log, folder):
    """The training loop: epochs of minibatch steps, a held-out ELBO and a line of log per epoch, a checkpoint
    every ``checkpoint_every`` epochs; stops after the current step on Ctrl-C, saving mid-epoch."""
    device, xp = model.device, model.device.xp
    x_train = device.asarray(data.x_train, dtype=config.dtype)                # host -> device, once
    x_valid = None if data.x_valid is None else device.asarray(data.x_valid, dtype=config.dtype)
    n, bs = x_train.shape[0], config.batch_size
    steps = -(-n // bs)
    x_exact = _tracked_examples(config, model, data)                            # None: not tracked
    save = _saver(config, model, optimizer, rng, p, data, folder)
    with _StopOnInterrupt() as interrupt:
        while p.epoch < config.epochs:
            t0 = time.perf_counter()
            if p.order is None:
                p.order, p.step, p.sums = rng.permutation(n), 0, None            # this epoch's order, on the host
            order = device.asarray(p.order)                                      # host -> device, once per epoch
            step_stats = device.asarray(np.zeros((steps, 2)), dtype=config.dtype)   # each step's loss, KL
            batch_of = lambda s, order=order: xp.take(x_train, order[s * bs:min((s + 1) * bs, n)], axis=0)  # noqa: E731
            bar = _progress_bar(config, steps, p)
            while p.step < steps:
                xb = batch_of(p.step)                                            # (B, D)
                if config.binarize == "dynamic":                                 # a fresh Bernoulli(x) sample
                    xb = dynamic_binarize(xb, rng.uniform(tuple(xb.shape), device, config.dtype))
                eps = rng.normal((config.iw_samples, xb.shape[0], config.z_dim), device, config.dtype)  # (K, B, Z)
                loss, grads, stats = model.loss_and_grads(xb, eps, _objective(config, p.epoch, p.step, steps),
                                                         check_input=False)    # data checked once, at the start
                optimizer.step(grads)
                b = xb.shape[0]
                batch_sums = (loss * b, stats["nll"] * b, stats["kl"] * b)
                step_stats[p.step, 0], step_stats[p.step, 1] = loss, batch_sums[2]   # read only on failure
                p.sums = (list(batch_sums) if p.sums is None
                          else [s + v for s, v in zip(p.sums, batch_sums, strict=True)])
                p.step += 1
                bar.update(1)
                if interrupt.requested:
                    bar.close()
                    check_health(model.params, p.epoch + 1, step_stats, None, batch_of, steps, save.path)
                    save(mid_epoch=True)
                    log(f"interrupted in epoch {p.epoch + 1} after step {p.step}/{steps}" + (
                        f"; saved {save.path} (continue with: minivae train --resume {save.path})"
                        if folder else ""))
                    return save.result(interrupted=True)
            bar.close()
            loss, nll, kl = (float(to_host(v)) / n for v in p.sums)             # one transfer per epoch
            check_health(model.params, p.epoch + 1, step_stats, (loss, kl * n), batch_of, steps, save.path)
            p.epoch, p.order = p.epoch + 1, None
            p.history.append(_record(config, model, x_valid, p.epoch, steps, (loss, nll, kl), t0, save.path,
                                     x_exact))
            if config.log_every and (p.epoch % config.log_every == 0 or p.epoch == config.epochs):
                log(_epoch_line(config, p.history[-1]))
            if p.epoch % config.checkpoint_every == 0 or p.epoch == config.epochs:
                save(mid_epoch=False)
    if folder is not None and not os.path.exists(folder.checkpoint):
        save(mid_epoch=False)                          # resumed with nothing left to do: still write the files
    if not config.log_every and p.history:
        log(_epoch_line(config, p.history[-1]))
    log(f"wrote {save.path} and {folder.metrics}" if folder else "done")
    return save.result(interrupted=False)


# ---- the loop's helpers --------------------------------------------------------------------------------------------

def _objective(config, epoch, step, steps_per_epoch):
    """This step's objective: the KL weight is a pure function of (epoch, step), so a resumed run uses the
    weights of a run never interrupted."""
    weight = kl_weight(epoch, step, steps_per_epoch, config.beta, config.kl_warmup_epochs, config.kl_warmup_start)
    return IWBound(weight) if config.iw_samples > 1 else ELBO(weight, free_bits=config.free_bits)


def _loss_name(config, weight):
    """What the training loss of an epoch is, for the log: -ELBO, -L_K, or the weighted sum it really is."""
    if config.iw_samples > 1:
        return f"-L_{config.iw_samples}" + ("" if weight == 1.0 else f" (kl weight {weight:.3g})")
    if config.free_bits:
        return f"loss (nll + {weight:.3g} max({config.free_bits:g}, kl))"
    return "-ELBO" if weight == 1.0 else f"loss (nll + {weight:.3g} kl)"


# --track-exact: the two goals over training, on the first TRACK_EXAMPLES held-out examples, in float64, to
# TRACK_TOL nats (a curve needs no more; derivations/evaluation.md#exact-log-likelihood), on a grid of at most
# TRACK_MAX_POINTS points (a posterior far narrower than the prior would otherwise make an epoch minutes long; a
# capped epoch records "exact_converged": false): about 1 s per epoch on the digits. auto tracks when z_dim <= 2
# and the decoder's values per example, D x the likelihood's row width (1; the categorical's L levels), are at
# most TRACK_AUTO_MAX_DIM: the quadrature's cost grows with them (a categorical of 256 levels on the digits would
# take minutes per epoch).
TRACK_EXAMPLES, TRACK_TOL, TRACK_POINTS_PER_SIGMA, TRACK_AUTO_MAX_DIM = 100, 1e-3, 1.5, 1000
TRACK_MAX_POINTS = 250_000


def _tracked_examples(config, model, data):
    """The held-out examples whose exact log p(x) is recorded each epoch (host float64), or None when the run
    does not track it (--track-exact no, auto beyond z_dim 2 or TRACK_AUTO_MAX_DIM decoder values per example,
    no held-out data)."""
    if config.track_exact == "no" or model.z_dim > 2:
        return None
    if data.x_valid is None:
        if config.track_exact == "yes":
            raise ValueError("track_exact yes needs held-out data (x_valid) to evaluate log p(x) on")
        return None
    if config.track_exact == "auto" and model.x_dim * model.likelihood.row_width > TRACK_AUTO_MAX_DIM:
        return None
    return np.asarray(data.x_valid[:TRACK_EXAMPLES], dtype=np.float64)


def _exact_goals(model, x_exact):
    """log p(x), the ELBO (both by quadrature) and their gap KL(q(z|x) || p(z|x)), averaged over x_exact (host),
    with the model copied to float64 (the quadrature's differences need it)."""
    exact = model
    if model.dtype_name != "float64":
        exact = VAE(**model.config | {"dtype": "float64"}, device=model.device, seed=0)
        exact.params = {k: astype(v, exact.dtype) for k, v in model.params.items()}       # on the device
    x = model.device.asarray(x_exact, dtype="float64")
    with warnings.catch_warnings():                   # the cap's warning: recorded as exact_converged instead
        warnings.simplefilter("ignore", RuntimeWarning)
        ex = exact_log_px(exact, x, points_per_sigma=TRACK_POINTS_PER_SIGMA, tol=TRACK_TOL,
                          max_points=TRACK_MAX_POINTS, progress=False)
    return {"heldout_log_px": ex["log_px"], "heldout_exact_elbo": ex["elbo"], "heldout_gap": ex["gap"],
            "exact_examples": int(x_exact.shape[0]), "exact_converged": ex["converged"]}


def _record(config, model, x_valid, epoch, steps, train_sums, t0, ckpt_path, x_exact=None):
    """The history entry of epoch ``epoch`` (1-based), with the held-out negative ELBO (one draw per example),
    and where ``x_exact`` is given the two goals on it (``_exact_goals``)."""
    loss, nll, kl = train_sums
    weight = epoch_kl_weight(epoch - 1, steps, config.beta, config.kl_warmup_epochs, config.kl_warmup_start)
    record = {"epoch": epoch, "train_loss": loss, "train_nll": nll, "train_kl": kl, "kl_weight": weight,
              "objective": _loss_name(config, weight)}
    if x_valid is not None:
        held = evaluate_elbo(model, x_valid, seed=config.seed)
        if not math.isfinite(held["neg_elbo"]):
            raise TrainingError(f"epoch {epoch}: the held-out negative ELBO is {held['neg_elbo']}; stopping; "
                                f"{kept(ckpt_path)}")
        record.update(heldout_neg_elbo=held["neg_elbo"], heldout_nll=held["nll"], heldout_kl=held["kl"])
    record["seconds"] = time.perf_counter() - t0
    if x_exact is not None:                           # after the clock: "seconds" stays the training's time
        record.update(_exact_goals(model, x_exact))
    return record


def _epoch_line(config, r):
    line = f"epoch {r['epoch']:4d}/{config.epochs}  train {r['objective']} {r['train_loss']:9.3f}"
    if "heldout_neg_elbo" in r:
        line += (f"  held-out -ELBO {r['heldout_neg_elbo']:9.3f} (nll {r['heldout_nll']:8.3f} + kl "
                 f"{r['heldout_kl']:7.3f})")
    if "heldout_log_px" in r:
        line += f"  log p(x) {r['heldout_log_px']:9.3f} gap {r['heldout_gap']:6.3f}"
    return line + f" nats  {r['seconds']:6.2f}s"


def _progress_bar(config, steps, p):
    """A progress bar over an epoch's steps on a terminal (tqdm; off when stderr is not one, or log_every 0)."""
    from tqdm.auto import tqdm
    return tqdm(total=steps, initial=p.step, desc=f"epoch {p.epoch + 1}", leave=False, unit="batch",
                disable=None if config.log_every else True, mininterval=1.0)


def _saver(config, model, optimizer, rng, p, data, folder):
    """save(mid_epoch): writes the checkpoint and metrics.json into ``folder`` (nothing when it is None)."""
    config_dict = {**dataclasses.asdict(config), "hidden": list(config.hidden),
                   "made_hidden": list(config.made_hidden)}

    def save(mid_epoch):
        if folder is None:
            return
        progress = {"step": p.step if mid_epoch else 0, "history": p.history,
                    "sums": [float(to_host(v)) for v in p.sums] if mid_epoch and p.sums is not None else None}
        save_checkpoint(folder.checkpoint, model, optimizer, config_dict, p.epoch, rng, progress,
                        p.order if mid_epoch else None, data=data.meta)
        payload = {"config": config_dict, "history": p.history, "final": p.history[-1] if p.history else None}
        atomic_write(folder.metrics, lambda f: f.write(json.dumps(payload, indent=2).encode()))

    save.path = folder.checkpoint if folder else "(no checkpoint: out=None)"
    save.result = lambda interrupted: TrainResult(model, optimizer, p.history, folder and folder.checkpoint,
                                                  folder and folder.metrics, interrupted)
    return save


def _restore(ckpt, path, model, optimizer, rng, config):
    """Load a checkpoint's parameters, optimizer state (then the resumed run's lr) and RNG state; its Progress."""
    restore_params(model, ckpt["params"], path)
    try:
        state = dict(ckpt["optim"])
        for slot, values in state.items():
            if isinstance(values, dict):
                state[slot] = {k: model.device.asarray(a, dtype=config.dtype) for k, a in values.items()}
        optimizer.load_state_dict(state)
        rng.set_state(ckpt["rng"])
        saved = ckpt["progress"]
        sums = None if saved["sums"] is None else [model.device.asarray(v, dtype=config.dtype)
                                                   for v in saved["sums"]]
        progress = Progress(ckpt["epoch"], check_int(saved["step"], "step", 0), ckpt["order"], sums,
                            list(saved["history"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r} is incomplete or corrupted: {e}") from None
    optimizer.lr = float(config.lr)                              # the saved lr, or the one typed on resume
    return progress


def _header(config, model, data, p, resumed, changes):
    """The run in one line: the architecture, the data, and every option that differs from the default."""
    arch = f"{model.x_dim}-{'-'.join(map(str, model.hidden)) or '()'}-({model.z_dim})"
    options = config.changed()
    described = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in options.items())
    held = "no held-out data" if data.x_valid is None else f"{data.x_valid.shape[0]} held out"
    line = (f"minivae: VAE {arch} on {config.dataset} ({data.x_train.shape[0]} train / {held}); "
            f"options: {described or 'all default'}")
    if resumed:
        line += f"; resuming after epoch {p.epoch}, step {p.step}"
        if changes:
            line += " with " + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
    return line


def _warnings(config, data):
    """Options that will run but probably not as meant."""
    if config.kl_warmup_epochs > config.epochs:
        yield (f"kl_warmup_epochs ({config.kl_warmup_epochs}) is longer than the run ({config.epochs} epochs): the "
               f"KL weight never reaches beta")
    likelihood = LIKELIHOODS[config.likelihood]
    if hasattr(likelihood, "data_warnings"):                     # a part may know what data it does not fit
        yield from likelihood.data_warnings(data.x_train, levels=config.levels)
