"""The standard VAE's prior p(z) = N(0, I) (Kingma & Welling 2013, Sec. 3). No parameters; its KL from a
diagonal Gaussian q has a closed form, which the ELBO uses.
Derivation: derivations/prior.md#standard-normal, derivations/kl.md. Tests: tests/test_prior.py, tests/test_model.py.
"""
import numpy as np

from ..prior import std_normal_log_prob_backward, std_normal_log_prob_forward
from .kl_term import ClosedFormKL, SampledKL


class StandardNormal:
    """p(z) = N(0, I_Z)."""

    OPTIONS = ()
    label = "N(0, I)"              # how the pictures name it

    def __init__(self, z_dim):
        self.z_dim = z_dim

    def init_params(self, rng, gain):
        return {}

    def log_prob_forward(self, params, z):
        """z: (N, Z) -> log p(z) (N,), cache."""
        return std_normal_log_prob_forward(z)

    def log_prob_backward(self, dlogp, cache, grads):
        """-> dz (N, Z)."""
        return std_normal_log_prob_backward(dlogp, cache)

    def kl_term(self, closed_form):
        """The closed-form KL where the objective allows it, else the sampled one."""
        return ClosedFormKL() if closed_form else SampledKL(self)

    def sample(self, params, n, rng, device, dtype):
        """n codes z ~ N(0, I), (n, Z), from ``rng``'s normal draws."""
        return rng.normal((n, self.z_dim), device, dtype)

    def quadrature_box(self, params):
        """(lo, hi, sigma): the box [-6, 6]^Z that holds the prior's mass, and its scale 1 (host)."""
        return np.full(self.z_dim, -6.0), np.full(self.z_dim, 6.0), 1.0
