"""A learned mixture-of-Gaussians prior p(z) = sum_c pi_c N(z; mu_c, diag exp(logvar_c)), pi = softmax(logits)
(the mixture prior Tomczak & Welling 2018 compare against; responsibilities as in Bishop's PRML, Sec. 9.2).
Its parameters train with the model; its KL from q has no closed form, so the model estimates it at the sample.

Parameters: prior.logits (C,), prior.mu (C, Z), prior.logvar (C, Z); initially logits 0 (equal weights), means
drawn from N(0, I), log-variances 0.
Derivation: derivations/prior.md. Tests: tests/test_prior.py, tests/test_model.py, tests/test_evaluate.py.
"""
import numpy as np

from ..backend import to_host
from ..prior import init_mog_params, mog_log_prob_backward, mog_log_prob_forward, mog_sample
from .kl_term import SampledKL


class Mixture:
    """p(z) = sum_c softmax(logits)_c N(mu_c, diag exp(logvar_c)), C = ``components``."""

    OPTIONS = ("components",)
    label = "p(z)"

    def __init__(self, z_dim, components):
        self.z_dim, self.components = z_dim, components

    def init_params(self, rng, gain):
        return init_mog_params(rng, self.components, self.z_dim)

    def log_prob_forward(self, params, z):
        return mog_log_prob_forward(z, params["prior.logits"], params["prior.mu"], params["prior.logvar"])

    def log_prob_backward(self, dlogp, cache, grads):
        """-> dz; writes the mixture's gradients."""
        dz, grads["prior.logits"], grads["prior.mu"], grads["prior.logvar"] = mog_log_prob_backward(dlogp, cache)
        return dz

    def kl_term(self, closed_form):
        return SampledKL(self)                   # no closed form, whatever the objective allows

    def sample(self, params, n, rng, device, dtype):
        """n codes z ~ p(z): u ~ U[0, 1) (n, C) picks each code's component, eps ~ N(0, I) (n, Z) places it.
        derivations/prior.md#sampling-the-mixture"""
        u = rng.uniform((n, self.components), device, dtype)                  # (n, C)
        eps = rng.normal((n, self.z_dim), device, dtype)                      # (n, Z)
        return mog_sample(params["prior.logits"], params["prior.mu"], params["prior.logvar"], u, eps)

    def quadrature_box(self, params):
        """(lo, hi, sigma): every component out to 6 of its standard deviations, with [-6, 6]^Z, and the
        smallest component standard deviation (host)."""
        mu = to_host(params["prior.mu"]).astype(np.float64)                  # (C, Z)
        sigma = np.exp(0.5 * to_host(params["prior.logvar"]).astype(np.float64))
        lo = np.minimum(np.min(mu - 6.0 * sigma, axis=0), -6.0)
        hi = np.maximum(np.max(mu + 6.0 * sigma, axis=0), 6.0)
        return lo, hi, float(np.min(sigma))
