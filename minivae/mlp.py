"""The named affine layer (``Dense``: the heads the parts put on top of the encoder and decoder) and the
encoder's and decoder's hidden layers (``MLP``: h_i = g(h_{i-1} W_i + b_i)), built from the pure pairs of
``layers.py``.

Parameters live in the model's one dict ``params`` under "<name>.W" (D_in, D_out) and "<name>.b" (D_out,).
Initialisation: W ~ N(0, gain^2 / D_in) (LeCun; He with gain sqrt(2) for relu), b = 0.
Derivation: derivations/linear.md, derivations/activations.md, derivations/elbo.md#whole-model-backward
(Steps 3 and 6). Tests: tests/test_model.py.
"""
import itertools
import math

import numpy as np

from .layers import get_activation, linear_backward, linear_forward


class Dense:
    """The affine layer ``name``: y = x W + b, W: (D_in, D_out) and b: (D_out,) in ``params`` as "<name>.W",
    "<name>.b" (the heads of q(z|x) and of p(x|z)). derivations/linear.md"""

    def __init__(self, name, d_in, d_out):
        self.name, self.d_in, self.d_out = name, d_in, d_out

    def init_params(self, rng, gain):
        """Host float64 initial values: W ~ N(0, gain^2 / D_in), b = 0."""
        return {self.name + ".W": rng.host_normal((self.d_in, self.d_out), gain / math.sqrt(self.d_in)),
                self.name + ".b": np.zeros(self.d_out)}

    def forward(self, params, x):
        """x: (N, D_in) -> y: (N, D_out); cache as ``linear_forward``'s."""
        return linear_forward(x, params[self.name + ".W"], params[self.name + ".b"])

    def backward(self, dy, cache, grads, need_dx=True):
        """Writes grads["<name>.W"], grads["<name>.b"], or adds to them where another use of the same layer wrote
        them first (the VampPrior runs the encoder on its pseudo-inputs too: derivations/prior.md#vampprior-backward);
        returns dx (None when ``need_dx`` is False)."""
        dx, dW, db = linear_backward(dy, cache, need_dx=need_dx)
        for key, g in ((self.name + ".W", dW), (self.name + ".b", db)):
            grads[key] = grads[key] + g if key in grads else g                  # two uses: their gradients add
        return dx


class MLP:
    """The hidden layers "<prefix>.0", "<prefix>.1", ...: D_in -> hidden[0] -> ... -> hidden[-1], each followed
    by the activation. ``hidden=()`` is the identity (h = x)."""

    def __init__(self, prefix, d_in, hidden, activation):
        widths = (d_in,) + tuple(hidden)
        self.layers = [Dense(f"{prefix}.{i}", a, b) for i, (a, b) in enumerate(itertools.pairwise(widths))]
        self.act_forward, self.act_backward = get_activation(activation)
        self.out_dim = widths[-1]

    def init_params(self, rng, gain):
        return {name: value for layer in self.layers for name, value in layer.init_params(rng, gain).items()}

    def forward(self, params, h):
        """h: (N, D_in) -> (N, hidden[-1]), and the layers' caches."""
        caches = []
        for layer in self.layers:
            a, lin_cache = layer.forward(params, h)
            h, act_cache = self.act_forward(a)
            caches.append((lin_cache, act_cache))
        return h, caches

    def backward(self, dh, caches, grads, need_dx=True):
        """Last layer to first; writes each layer's grads, returns d(input) (None when ``need_dx`` is False: the
        encoder's input is the data, whose gradient nothing needs). derivations/elbo.md#whole-model-backward"""
        for i in reversed(range(len(self.layers))):
            lin_cache, act_cache = caches[i]
            da = self.act_backward(dh, act_cache)
            dh = self.layers[i].backward(da, lin_cache, grads, need_dx=need_dx or i > 0)
        return dh
