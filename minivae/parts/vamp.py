"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", Eq. 9): the prior is the posterior's mixture
over C learned pseudo-inputs u_c,

    p(z) = (1/C) sum_c q(z | u_c) = (1/C) sum_c N(z; mu(u_c), diag exp(logvar(u_c))),

each pseudo-input pushed through the model's own encoder and q(z|x)'s Gaussian heads. Its log-density is the
mixture's (``prior.mog_log_prob_forward``) with equal, fixed weights and component means and log-variances that
are the encoder's outputs; so the encoder's weights get gradients from two paths, the data's (q(z|x)) and the
prior's (Steps 4 and 5-6 of the model's backward add them: ``mlp.Dense.backward``). With a flow posterior the
components are its Gaussian q_0(z|u_c), the one whose density is known everywhere.

Parameters: prior.u (C, D), the pseudo-inputs, unconstrained, initially 0.5 + 0.25 N(0, 1) (near the middle of
the data's [0, 1] range, spread so that the components start apart).
Derivation: derivations/prior.md#vampprior. Tests: tests/test_vamp.py.
"""
import numpy as np

from ..backend import array_namespace, to_host
from ..prior import mog_log_prob_backward, mog_log_prob_forward, mog_sample
from .kl_term import SampledKL


class VampPrior:
    """p(z) = mean_c q(z | u_c) over C = ``pseudo_inputs`` learned pseudo-inputs of x_dim values each."""

    OPTIONS = ("pseudo_inputs", "x_dim", "encoder", "posterior")
    label = "VampPrior"

    def __init__(self, z_dim, pseudo_inputs, x_dim, encoder, posterior):
        self.z_dim, self.pseudo_inputs, self.x_dim = z_dim, pseudo_inputs, x_dim
        self.encoder, self.posterior = encoder, posterior          # the model's own: shared weights

    def init_params(self, rng, gain):
        return {"prior.u": 0.5 + rng.host_normal((self.pseudo_inputs, self.x_dim), 0.25)}

    def components(self, params):
        """(mu, logvar), both (C, Z): q's Gaussian at each pseudo-input, and the caches of both modules."""
        h, enc_cache = self.encoder.forward(params, params["prior.u"])          # (C, H)
        q, q_cache = self.posterior.forward(params, h)                          # (mu, logvar[, flow]): (C, .)
        return q, (enc_cache, q_cache)

    def log_prob_forward(self, params, z):
        """log p(z) = logsumexp_c log N(z; mu_c, sigma_c^2) - log C.  z: (N, Z) -> (N,), cache.
        derivations/prior.md#vampprior"""
        q, enc_caches = self.components(params)
        mu, logvar = q[0], q[1]                                                 # (C, Z) each
        logits = array_namespace(mu).zeros_like(mu[:, 0])                       # (C,)  equal weights 1/C
        log_p, mog_cache = mog_log_prob_forward(z, logits, mu, logvar)          # (N,)
        return log_p, (q, enc_caches, mog_cache)

    def log_prob_backward(self, dlogp, cache, grads):
        """-> dz (N, Z); writes grads["prior.u"] and adds the prior's path into the encoder's and q's heads'.
        derivations/prior.md#vampprior-backward"""
        q, (enc_cache, q_cache), mog_cache = cache
        xp = array_namespace(dlogp)
        dz, _, dmu, dlogvar = mog_log_prob_backward(dlogp, mog_cache)           # the weights are constants
        dq = (dmu, dlogvar) + tuple(xp.zeros_like(a) for a in q[2:])            # a flow's heads: unused here
        dh = self.posterior.backward(dq, q_cache, grads)                        # (C, H)
        grads["prior.u"] = self.encoder.backward(dh, enc_cache, grads)          # (C, D)
        return dz

    def kl_term(self, closed_form):
        return SampledKL(self)                   # no closed form, whatever the objective allows

    def sample(self, params, n, rng, device, dtype):
        """n codes z ~ p(z): a component picked uniformly, then its Gaussian.  derivations/prior.md#vampprior"""
        (mu, logvar, *_), _ = self.components(params)
        u = rng.uniform((n, self.pseudo_inputs), device, dtype)                 # (n, C)
        eps = rng.normal((n, self.z_dim), device, dtype)                        # (n, Z)
        return mog_sample(array_namespace(mu).zeros_like(mu[:, 0]), mu, logvar, u, eps)

    def quadrature_box(self, params):
        """(lo, hi, sigma) on the host: every component out to 6 of its standard deviations, with [-6, 6]^Z, and
        the smallest component standard deviation."""
        (mu, logvar, *_), _ = self.components(params)
        mu = to_host(mu).astype(np.float64)                                     # (C, Z)
        sigma = np.exp(0.5 * to_host(logvar).astype(np.float64))
        lo = np.minimum(np.min(mu - 6.0 * sigma, axis=0), -6.0)
        hi = np.maximum(np.max(mu + 6.0 * sigma, axis=0), 6.0)
        return lo, hi, float(np.min(sigma))
