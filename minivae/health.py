"""Is training still sound? The per-epoch check the training loop runs, and the one-line report of what went
wrong when it is not: a non-finite loss (and whether its batch, the parameters or the loss itself is to blame),
a diverged KL (the encoder's log-variance at its clamp: derivations/kl.md#the-clamp), or parameters holding NaN
or inf. Nothing is saved after a failed check: the last checkpoint is left as it was.
Tests: tests/test_health.py.
"""
import math
import os

import numpy as np

from .backend import array_namespace, astype, to_host
from .kl import KL_AT_CLAMP
from .reparam import LOGVAR_MAX


class TrainingError(RuntimeError):
    """Training produced a non-finite loss or parameter, or diverged; nothing was saved."""


def non_finite_params(params):
    """{name: "3 nan, 1 inf"} for the parameters holding NaN or inf: one small device-to-host transfer of a flag
    per parameter; the counts are read only for the bad ones."""
    names = sorted(params)
    xp = array_namespace(*params.values())
    finite = to_host(xp.stack([xp.all(xp.isfinite(params[k])) for k in names]))
    bad = {}
    for name, ok in zip(names, finite, strict=True):
        if not ok:
            p = params[name]
            nan, inf = (int(to_host(xp.sum(astype(f(p), xp.int64)))) for f in (xp.isnan, xp.isinf))
            bad[name] = ", ".join(f"{c} {w}" for c, w in ((nan, "nan"), (inf, "inf")) if c)
    return bad


def check_health(params, epoch, step_stats, totals, batch_of, steps_per_epoch, ckpt_path):
    """Raise a TrainingError naming the step, the cause and the parameters if epoch ``epoch`` (1-based) so far
    has a non-finite loss, a KL of KL_AT_CLAMP or more, or parameters holding NaN or inf.

    step_stats: the device (steps, 2) array of each step's loss and summed KL; totals: the epoch's (loss, summed
    KL) if already on the host, else None (then read from step_stats); batch_of(s): the batch of step s
    (0-based), rebuilt only on failure. The per-step numbers come to the host only when something is wrong."""
    bad_params = non_finite_params(params)
    loss, kl = totals if totals is not None else np.sum(to_host(step_stats), axis=0)
    if math.isfinite(loss) and not kl >= KL_AT_CLAMP and not bad_params:
        return
    raise TrainingError(fault_message(epoch, to_host(step_stats), batch_of, bad_params, steps_per_epoch,
                                      ckpt_path))


def kept(ckpt_path):
    """What a stopped run leaves: the last checkpoint as it was, or, before the first save, nothing."""
    if ckpt_path is not None and os.path.exists(ckpt_path):
        return f"{ckpt_path} is left as it was"
    return "nothing was saved"


def fault_message(epoch, step_stats, batch_of, bad_params, steps_per_epoch, ckpt_path):
    """The one-line report of a failed epoch ``epoch`` (1-based): a non-finite loss, parameters holding NaN or
    inf, or a diverged KL. ``step_stats``: the host (steps, 2) array of each step's loss and summed KL (0 for
    steps not run); ``batch_of(s)``: the device batch of step s (0-based)."""
    params = ", ".join(f"{k!r} ({v})" for k, v in bad_params.items())
    losses, kls = step_stats[:, 0], step_stats[:, 1]

    def at(s):
        return f"step {s + 1}/{steps_per_epoch} (global step {(epoch - 1) * steps_per_epoch + s + 1})"
    tail = "; stopping; " + kept(ckpt_path)
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
