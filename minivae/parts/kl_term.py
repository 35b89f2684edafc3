"""The KL term of the ELBO, KL(q(z|x) || p(z)), two ways (derivations/elbo.md#reconstruction-minus-kl-to-the-prior):

- ``ClosedFormKL``: for q = N(mu, diag sigma^2) and p = N(0, I), 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - logvar_j)
  (kl.py; Kingma & Welling 2013, Appendix B). It reads (mu, logvar) only, so its gradient into z is 0.
- ``SampledKL``: for any prior, the estimate at the sample, log q(z|x) - log p(z) (Kingma & Welling 2013, Eq. 6;
  derivations/prior.md#sampled-kl), with log q written in eps (``prior.reparam_log_q_forward``): it reads logvar
  and, through log p(z), z; its gradient into mu is 0.

A prior hands the model one of them (``prior.kl_term(closed_form)``). Both backward passes return
(dmu, dlogvar, dz), zeros where the term does not read an input, so the model adds every path's gradient where
the paths meet. Tests: tests/test_model.py, tests/test_prior.py.
"""
from ..backend import array_namespace
from ..kl import kl_std_normal_backward, kl_std_normal_forward
from ..prior import reparam_log_q_backward, reparam_log_q_forward


class ClosedFormKL:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form.  derivations/kl.md"""

    def forward(self, params, mu, logvar, z, eps):
        """mu, logvar, z, eps: (N, Z) -> kl (N,), cache."""
        return kl_std_normal_forward(mu, logvar)

    def backward(self, dkl, cache, grads):
        dmu, dlogvar = kl_std_normal_backward(dkl, cache)               # (N, Z) each
        return dmu, dlogvar, array_namespace(dmu).zeros_like(dmu)       # the closed form does not read z


class SampledKL:
    """log q(z|x) - log p(z) at z = mu + sigma eps, for the prior ``prior``.  derivations/prior.md#sampled-kl"""

    def __init__(self, prior):
        self.prior = prior

    def forward(self, params, mu, logvar, z, eps):
        log_q, q_cache = reparam_log_q_forward(eps, logvar)             # (N,)
        log_p, p_cache = self.prior.log_prob_forward(params, z)         # (N,)
        return log_q - log_p, (q_cache, p_cache)

    def backward(self, dkl, cache, grads):
        """dlogvar = -dkl / 2; dz = the prior's backward of -dkl (writes the prior's grads); dmu = 0."""
        q_cache, p_cache = cache
        dlogvar = reparam_log_q_backward(dkl, q_cache)                  # (N, Z)
        dz = self.prior.log_prob_backward(-dkl, p_cache, grads)         # (N, Z)
        return array_namespace(dz).zeros_like(dz), dlogvar, dz          # log q in eps does not read mu
