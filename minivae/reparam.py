"""The reparameterisation trick (Kingma & Welling 2013, Sec. 2.4): z = mu + sigma * eps, sigma = exp(logvar/2).

The noise eps ~ N(0, I) is an argument, drawn outside by ``minivae.rng``: the randomness sits in eps, so z is a
deterministic, differentiable function of (mu, logvar). Derivation: derivations/reparameterization.md.
Tests: tests/test_reparam.py.
"""
from .backend import array_namespace


def reparameterize_forward(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps.   mu, logvar, eps: (N, Z) -> z: (N, Z).

    cache = (sigma, eps).  derivations/reparameterization.md#forward
    """
    xp = array_namespace(mu, logvar, eps)
    sigma = xp.exp(0.5 * logvar)                     # (N, Z)
    z = mu + sigma * eps                             # (N, Z)
    return z, (sigma, eps)


def reparameterize_backward(dz, cache):
    """dmu = dz,  dlogvar = dz * eps * sigma / 2.   derivations/reparameterization.md#backward"""
    sigma, eps = cache
    dmu = dz
    dlogvar = 0.5 * dz * eps * sigma                 # dz/dlogvar = eps * sigma / 2
    return dmu, dlogvar
