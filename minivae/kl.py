"""KL(q(z|x) || p(z)) for q = N(mu, diag sigma^2) and p = N(0, I), in closed form
(Kingma & Welling 2013, Appendix B). Derivation: derivations/kl.md. Tests: tests/test_kl.py.
"""
from .backend import array_namespace


def kl_std_normal_forward(mu, logvar):
    """kl_n = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2).   mu, logvar: (N, Z) -> kl: (N,).

    cache = (mu, var) with var = sigma^2 = exp(logvar).  derivations/kl.md#forward
    """
    xp = array_namespace(mu, logvar)
    var = xp.exp(logvar)                                             # (N, Z)
    kl = 0.5 * xp.sum(var + mu * mu - 1.0 - logvar, axis=1)          # (N,)
    return kl, (mu, var)


def kl_std_normal_backward(dkl, cache):
    """dmu = dkl mu,  dlogvar = dkl (sigma^2 - 1) / 2.   dkl: (N,).   derivations/kl.md#backward"""
    mu, var = cache
    dkl = dkl[:, None]                                               # (N, 1)
    dmu = dkl * mu                                                   # (N, Z)
    dlogvar = 0.5 * dkl * (var - 1.0)                                # (N, Z)
    return dmu, dlogvar
