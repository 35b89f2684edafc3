"""KL(q(z|x) || p(z)) for q = N(mu, diag sigma^2) and p = N(0, I), in closed form
(Kingma & Welling 2013, Appendix B). Derivation: derivations/kl.md. Tests: tests/test_kl.py, tests/test_edges.py,
tests/test_statistics.py.

The log-variance is clamped from above at ``reparam.LOGVAR_MAX``, the same bound the sampler uses, so both see
the same q; beyond it the KL is flat in logvar and its gradient there is 0. derivations/kl.md#the-clamp
"""
import math

from .backend import array_namespace
from .reparam import LOGVAR_MAX

# The KL of one coordinate at the clamp (mu = 0, logvar = LOGVAR_MAX): 1.2e17 nats. A KL this large (summed
# over any set of examples) means some q reached the region the clamp exists for, which no working run does;
# training stops there (minivae/train.py). derivations/kl.md#the-clamp
KL_AT_CLAMP = 0.5 * (math.exp(LOGVAR_MAX) - 1.0 - LOGVAR_MAX)


def kl_std_normal_forward(mu, logvar):
    """kl_n = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2),  log sigma^2 = min(logvar, LOGVAR_MAX).
    mu, logvar: (N, Z) -> kl: (N,).

    cache = (mu, var, clamped) with var = sigma^2 and clamped = logvar > LOGVAR_MAX.  derivations/kl.md#forward
    """
    xp = array_namespace(mu, logvar)
    clamped = logvar > LOGVAR_MAX                                    # (N, Z) bool; NaN compares False
    lv = xp.minimum(logvar, LOGVAR_MAX)                              # (N, Z): the clamp
    var = xp.exp(lv)                                                 # (N, Z)
    kl = 0.5 * xp.sum(var + mu * mu - 1.0 - lv, axis=1)              # (N,)
    return kl, (mu, var, clamped)


def kl_std_normal_backward(dkl, cache):
    """dmu = dkl mu,  dlogvar = dkl (sigma^2 - 1) / 2 (0 where logvar > LOGVAR_MAX).   dkl: (N,).
    derivations/kl.md#backward
    """
    mu, var, clamped = cache
    xp = array_namespace(dkl, mu)
    dkl = dkl[:, None]                                               # (N, 1)
    dmu = dkl * mu                                                   # (N, Z)
    dlogvar = xp.where(clamped, 0.0, 0.5 * dkl * (var - 1.0))        # (N, Z); the clamp is flat beyond the bound
    return dmu, dlogvar
