"""The weight on the KL term during training: beta (Higgins et al. 2017, beta-VAE), reached by a linear warm-up
from a start value (Bowman et al. 2016, "KL cost annealing"; Sonderby et al. 2016, "warm-up").

The weight rises per step (per minibatch), not per epoch, and is a pure function of where training is, the
epoch and the step within it, so a run resumed from a checkpoint, even one saved mid-epoch, uses exactly the
weights of a run never interrupted. Derivation: derivations/objectives.md#kl-warm-up.
Tests: tests/test_schedule.py, tests/test_train.py.
"""
from .checks import check_int, check_number


def kl_weight(epoch, step, steps_per_epoch, beta=1.0, warmup_epochs=0, warmup_start=0.0):
    """The KL weight of the step that runs batch ``step`` (0-based) of epoch ``epoch`` (0-based; epochs done):

        t = (epoch * steps_per_epoch + step) / (warmup_epochs * steps_per_epoch)
        weight = warmup_start + (beta - warmup_start) * min(t, 1)

    so the first step uses ``warmup_start``, the weight rises by an equal amount every step, and from the first
    step of epoch ``warmup_epochs + 1`` (1-based) on it is ``beta``. ``warmup_epochs = 0``: always ``beta``.
    A Python float (host arithmetic only).  derivations/objectives.md#kl-warm-up
    """
    check_int(epoch, "epoch", 0)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", 1)
    if check_int(step, "step", 0) >= steps_per_epoch:
        raise ValueError(f"step must be below steps_per_epoch = {steps_per_epoch}, got {step!r}")
    beta = check_number(beta, "beta", 0.0)
    warmup_start = check_number(warmup_start, "warmup_start", 0.0)
    if check_int(warmup_epochs, "warmup_epochs", 0) == 0:
        return beta
    t = (epoch * steps_per_epoch + step) / (warmup_epochs * steps_per_epoch)
    return float(warmup_start + (beta - warmup_start) * min(t, 1.0))


def epoch_kl_weight(epoch, steps_per_epoch, beta=1.0, warmup_epochs=0, warmup_start=0.0):
    """The mean of the weights the steps of epoch ``epoch`` (0-based) use: what the history records."""
    weights = [kl_weight(epoch, s, steps_per_epoch, beta, warmup_epochs, warmup_start)
               for s in range(steps_per_epoch)]
    return sum(weights) / steps_per_epoch
