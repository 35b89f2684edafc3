"""The KL term of the ELBO, KL(q(z|x) || p(z)), two ways (derivations/elbo.md#reconstruction-minus-kl-to-the-prior):

- ``ClosedFormKL``: for q = N(mu, diag sigma^2) and p = N(0, I), 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - logvar_j)
  (kl.py; Kingma & Welling 2013, Appendix B). It reads (mu, logvar) only, so its gradient into z is 0.
- ``SampledKL``: for any prior and any posterior, the estimate at the sample, log q(z|x) - log p(z) (Kingma &
  Welling 2013, Eq. 6; derivations/prior.md#sampled-kl): it reads log q(z|x), which the posterior computed with
  its sample (``posterior.rsample_forward``), and z, through log p(z).

A prior hands the model one of them (``prior.kl_term(closed_form)``; the model asks for the closed form only
where the posterior is the diagonal Gaussian, ``posterior.closed_form_kl``). Both forward passes take
(params, q, z, log_q), q the posterior's parameters (mu, logvar, ...); both backward passes return
(dmu, dlogvar, dz, dlogq), zeros where the term does not read an input, so the model adds every path's gradient
where the paths meet. Tests: tests/test_model.py, tests/test_prior.py.
"""
from ..backend import array_namespace
from ..kl import kl_std_normal_backward, kl_std_normal_forward


class ClosedFormKL:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form.  derivations/kl.md"""

    def forward(self, params, q, z, log_q):
        """q = (mu, logvar), both (N, Z); z (N, Z) and log_q (N,) unread -> kl (N,), cache."""
        mu, logvar = q
        return kl_std_normal_forward(mu, logvar)

    def backward(self, dkl, cache, grads):
        xp = array_namespace(dkl)
        dmu, dlogvar = kl_std_normal_backward(dkl, cache)               # (N, Z) each
        return dmu, dlogvar, xp.zeros_like(dmu), xp.zeros_like(dkl)     # the closed form reads neither z nor log q


class SampledKL:
    """log q(z|x) - log p(z) at the posterior's sample z, for the prior ``prior``.  derivations/prior.md#sampled-kl"""

    def __init__(self, prior):
        self.prior = prior

    def forward(self, params, q, z, log_q):
        """z: (N, Z), log_q: (N,) -> kl (N,), cache; q unread."""
        log_p, p_cache = self.prior.log_prob_forward(params, z)         # (N,)
        return log_q - log_p, p_cache

    def backward(self, dkl, cache, grads):
        """dlogq = dkl; dz = the prior's backward of -dkl (writes the prior's grads); dmu = dlogvar = 0 here (the
        posterior turns dlogq into its own parameters' gradients)."""
        dz = self.prior.log_prob_backward(-dkl, cache, grads)           # (N, Z)
        xp = array_namespace(dz)
        return xp.zeros_like(dz), xp.zeros_like(dz), dz, dkl
