"""KL(q(z|x) || p(z)) for q = N(mu, diag sigma^2) and p = N(0, I), in closed form
(Kingma & Welling 2013, Appendix B). Derivation: derivations/kl.md. Tests: tests/test_kl.py,
tests/test_ops.py.

The formula is the textbook one: the encoder's log-variance reaches it already clamped at ``reparam.LOGVAR_MAX``
(``reparam.logvar_clamp_forward``, applied once at the head). derivations/kl.md#the-clamp
"""
import math

from .checks import check_arrays, check_shape
from .reparam import LOGVAR_MAX

# The KL of one coordinate at the clamp (mu = 0, logvar = LOGVAR_MAX): 1.2e17 nats. A KL this large (summed
# over any set of examples) means some q reached the region the clamp exists for, which no working run does;
# training stops there (minivae/train.py). derivations/kl.md#the-clamp
KL_AT_CLAMP = 0.5 * (math.exp(LOGVAR_MAX) - 1.0 - LOGVAR_MAX)


def kl_std_normal_forward(mu, logvar):
    """kl_n = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - logvar_j),  sigma^2 = exp(logvar).
    mu, logvar: (N, Z) -> kl: (N,).

    cache = (mu, var) with var = sigma^2.  derivations/kl.md#forward
    """
    xp = check_arrays("kl_std_normal_forward", mu=mu, logvar=logvar)
    check_shape("kl_std_normal_forward", "mu", mu, (None, None))
    check_shape("kl_std_normal_forward", "logvar", logvar, tuple(mu.shape), "mu's shape")
    var = xp.exp(logvar)                                             # (N, Z)
    kl = 0.5 * xp.sum(var + mu * mu - 1.0 - logvar, axis=1)          # (N,)
    return kl, (mu, var)


def kl_std_normal_backward(dkl, cache):
    """dmu = dkl mu,  dlogvar = dkl (sigma^2 - 1) / 2.   dkl: (N,).   derivations/kl.md#backward"""
    mu, var = cache
    check_arrays("kl_std_normal_backward", dkl=dkl, mu=mu)
    check_shape("kl_std_normal_backward", "dkl", dkl, (mu.shape[0],), "one per example")
    dkl = dkl[:, None]                                               # (N, 1)
    return dkl * mu, 0.5 * dkl * (var - 1.0)                         # (N, Z) each
