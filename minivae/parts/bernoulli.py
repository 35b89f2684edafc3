"""The Bernoulli likelihood p(x|z) = prod_d sigmoid(a_d)^x_d (1 - sigmoid(a_d))^(1 - x_d), a = h W + b: the
decoder's output head and its NLL from logits (Kingma & Welling 2013, Appendix C.1). For x in [0, 1]: binary
pixels, or grey levels read as probabilities (then it is a cross-entropy, not a likelihood of the data).

Parameters: dec.out.W (H, D), dec.out.b (D,).
Derivation: derivations/likelihoods.md#bernoulli-forward, derivations/evaluation.md#exact-log-likelihood.
Tests: tests/test_likelihoods.py, tests/test_model.py, tests/test_evaluate.py, tests/test_plots.py.
"""
import numpy as np

from .. import kernels
from ..backend import array_namespace, to_host
from ..layers import sigmoid_forward, softplus_forward
from ..likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
from ..mlp import Dense


class Bernoulli:
    """p(x|z) with logits a = h W + b, one per dimension."""

    OPTIONS = ()               # what it reads of the VAE's likelihood options
    unit_interval = True           # the data must lie in [0, 1]
    row_width = 1                  # decoder values per pixel (the evaluation's memory budget reads it)

    def __init__(self, x_dim, h_dim, device, dtype):
        self.x_dim = x_dim
        self.head = Dense("dec.out", h_dim, x_dim)                         # h -> logits a

    def init_params(self, rng, gain):
        return self.head.init_params(rng, gain)

    def forward(self, params, h, x):
        """h: (N, H), x: (N, D) -> nll (N,), cache.  Steps 2 then 1 of derivations/elbo.md#whole-model-backward"""
        logits, head_cache = self.head.forward(params, h)                 # (N, D)
        fast = kernels.lookup("bernoulli_nll", x, logits)                 # the same pair in fewer passes
        forward, backward = fast or (bernoulli_nll_forward, bernoulli_nll_backward)
        nll, nll_cache = forward(x, logits)                               # (N,)
        return nll, (head_cache, backward, nll_cache)

    def backward(self, dnll, cache, grads):
        """dnll: (N,) -> dh (N, H); writes the head's grads."""
        head_cache, backward, nll_cache = cache
        dlogits = backward(dnll, nll_cache)                                # Step 1: (N, D)
        return self.head.backward(dlogits, head_cache, grads)             # Step 2: (N, H)

    def decode(self, params, h):
        """The distribution's parameters: {"logits": (N, D)}."""
        logits, _ = self.head.forward(params, h)
        return {"logits": logits}

    def mean(self, params, h):
        """E[x|z] = sigmoid(a), (N, D) on the device."""
        p, _ = sigmoid_forward(self.decode(params, h)["logits"])
        return p

    def sample(self, params, h, rng):
        """x_d = 1 where u_d < sigmoid(a_d), u ~ U(0, 1) drawn on the host: a host (N, D) float64 array."""
        p = to_host(self.mean(params, h)).astype(np.float64)
        return (rng.generator.random(p.shape) < p).astype(np.float64)

    def log_prob_grid(self, params, x, h):
        """log p(x_n | z_g) for every example n and code g, (N, G), from the codes' decoder features h: (G, H):
        x a^T - sum_d softplus(a_gd), one matrix product.  derivations/evaluation.md#exact-log-likelihood"""
        xp = array_namespace(x, h)
        a = self.decode(params, h)["logits"]                               # (G, D)
        softplus, _ = softplus_forward(a)
        return x @ a.T - xp.sum(softplus, axis=1)[None, :]

    def discrete(self, x):
        """Bits per dimension mean something only for binary x (a probability of discrete data)."""
        xp = array_namespace(x)
        return bool(to_host(xp.all((x == 0.0) | (x == 1.0))))
