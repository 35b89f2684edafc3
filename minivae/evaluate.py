"""Held-out evaluation: the negative ELBO, split into reconstruction NLL (distortion) and KL (rate).

All numbers are nats per example, averaged over the evaluation set, each example's ELBO estimated with one
reparameterised sample drawn from a fixed seed (so two evaluations of the same model agree exactly).
Tests: tests/test_evaluate.py.
"""
from .backend import to_host
from .rng import RNG


def evaluate_elbo(model, x, seed=0, batch_size=1000):
    """{"neg_elbo", "nll", "kl"}: means over ``x`` (an array on the model's device, (N, D)) in nats.

    Sums stay on the device; the three totals come to the host once, at the end.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    xp = model.device.xp
    rng = RNG(seed)
    n = x.shape[0]
    total_nll = total_kl = None
    for start in range(0, n, batch_size):
        xb = x[start:min(start + batch_size, n), ...]
        eps = rng.normal((xb.shape[0], model.z_dim), model.device, model.dtype_name)
        nll, kl = model.elbo_terms(xb, eps)
        s_nll, s_kl = xp.sum(nll), xp.sum(kl)
        total_nll = s_nll if total_nll is None else total_nll + s_nll
        total_kl = s_kl if total_kl is None else total_kl + s_kl
    nll, kl = float(to_host(total_nll)) / n, float(to_host(total_kl)) / n
    return {"neg_elbo": nll + kl, "nll": nll, "kl": kl}
