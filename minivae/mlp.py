"""The encoder's and decoder's hidden layers, h_i = g(h_{i-1} W_i + b_i), and the named affine layers ("heads")
the parts put on top of them, built from the pure pairs of ``layers.py``.

Parameters live in the model's one dict ``params`` under "<name>.W" (D_in, D_out) and "<name>.b" (D_out,).
Initialisation: W ~ N(0, gain^2 / D_in) (LeCun; He with gain sqrt(2) for relu), b = 0.
Derivation: derivations/linear.md, derivations/activations.md, derivations/elbo.md#whole-model-backward
(Steps 3 and 6). Tests: tests/test_model.py.
"""
import math

import numpy as np

from .layers import get_activation, linear_backward, linear_forward


def init_dense(rng, name, d_in, d_out, gain):
    """Host float64 initial values of the affine layer ``name``: W ~ N(0, gain^2 / d_in), b = 0."""
    return {name + ".W": rng.host_normal((d_in, d_out), gain / math.sqrt(d_in)), name + ".b": np.zeros(d_out)}


def dense_forward(params, name, x):
    """y = x W + b with the layer ``name``'s parameters.   x: (N, D_in) -> y: (N, D_out); cache as linear_forward."""
    return linear_forward(x, params[name + ".W"], params[name + ".b"])


def dense_backward(dy, cache, grads, name, need_dx=True):
    """Writes grads["<name>.W"], grads["<name>.b"]; returns dx (None when ``need_dx`` is False)."""
    dx, grads[name + ".W"], grads[name + ".b"] = linear_backward(dy, cache, need_dx=need_dx)
    return dx


class MLP:
    """The hidden layers "<prefix>.0", "<prefix>.1", ...: D_in -> hidden[0] -> ... -> hidden[-1], each followed
    by the activation. ``hidden=()`` is the identity (h = x)."""

    def __init__(self, prefix, d_in, hidden, activation):
        self.prefix, self.widths = prefix, (d_in,) + tuple(hidden)
        self.act_forward, self.act_backward = get_activation(activation)
        self.out_dim = self.widths[-1]

    def init_params(self, rng, gain):
        params = {}
        for i, (d_in, d_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            params.update(init_dense(rng, f"{self.prefix}.{i}", d_in, d_out, gain))
        return params

    def forward(self, params, h):
        """h: (N, D_in) -> (N, hidden[-1]), and the layers' caches."""
        caches = []
        for i in range(len(self.widths) - 1):
            a, lin_cache = dense_forward(params, f"{self.prefix}.{i}", h)
            h, act_cache = self.act_forward(a)
            caches.append((lin_cache, act_cache))
        return h, caches

    def backward(self, dh, caches, grads, need_dx=True):
        """Last layer to first; writes each layer's grads, returns d(input) (None when ``need_dx`` is False: the
        encoder's input is the data, whose gradient nothing needs). derivations/elbo.md#whole-model-backward"""
        for i in reversed(range(len(caches))):
            lin_cache, act_cache = caches[i]
            da = self.act_backward(dh, act_cache)
            dh = dense_backward(da, lin_cache, grads, f"{self.prefix}.{i}", need_dx=need_dx or i > 0)
        return dh
