"""The reparameterisation trick (Kingma & Welling 2013, Sec. 2.4): z = mu + sigma * eps, sigma = exp(logvar/2).

The noise eps ~ N(0, I) is an argument, drawn outside by ``minivae.rng``: the randomness sits in eps, so z is a
deterministic, differentiable function of (mu, logvar). Derivation: derivations/reparameterization.md.
Tests: tests/test_reparam.py, tests/test_edges.py, tests/test_statistics.py.

The log-variance is clamped from above at ``LOGVAR_MAX`` (here and in minivae/kl.py, so the sampler and the
closed-form KL describe the same q): exp(logvar) overflows float32 at logvar ~ 88.7, and no useful posterior
comes near the bound. Beyond it the clamp is flat, so its gradient is 0. No lower clamp is needed: as
logvar -> -inf, sigma underflows to 0 and nothing overflows. derivations/reparameterization.md#the-clamp
"""
from .backend import array_namespace

LOGVAR_MAX = 40.0   # sigma^2 <= e^40 ~ 2.4e17: finite in float32, even squared (reparameterization.md#the-clamp)


def reparameterize_forward(mu, logvar, eps):
    """z = mu + exp(min(logvar, LOGVAR_MAX) / 2) * eps.   mu, logvar, eps: (N, Z) -> z: (N, Z).

    cache = (sigma, eps, clamped) with clamped = logvar > LOGVAR_MAX.  derivations/reparameterization.md#forward
    """
    xp = array_namespace(mu, logvar, eps)
    clamped = logvar > LOGVAR_MAX                    # (N, Z) bool; NaN compares False, so NaN propagates
    sigma = xp.exp(0.5 * xp.minimum(logvar, LOGVAR_MAX))   # (N, Z)
    z = mu + sigma * eps                             # (N, Z)
    return z, (sigma, eps, clamped)


def reparameterize_backward(dz, cache):
    """dmu = dz,  dlogvar = dz * eps * sigma / 2 (0 where logvar > LOGVAR_MAX).
    derivations/reparameterization.md#backward
    """
    sigma, eps, clamped = cache
    xp = array_namespace(dz, sigma)
    dmu = dz
    dlogvar = xp.where(clamped, 0.0, 0.5 * dz * eps * sigma)   # dz/dlogvar = eps * sigma / 2; the clamp is flat
    return dmu, dlogvar
