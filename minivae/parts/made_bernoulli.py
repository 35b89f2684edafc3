"""An autoregressive Bernoulli likelihood (``--decoder made``): p(x|z) = prod_d p(x_d | x_<d, z), each factor a
Bernoulli whose logit is the output of a MADE network (Germain et al. 2015) over x with the code's decoder
features h (h = z for a linear decoder) added to every layer:

    a_1 = g(x (W_1 * M_1) + h V_1 + c_1),  ..,  a_L = g(a_{L-1} (W_L * M_L) + h V_L + c_L),
    logits = a_L (W_out * M_out) + h V_out + c_out,

the masks (``made.made_masks``) keep logit d a function of x_1 .. x_{d-1} and h only. Evaluating log p(x|z) is one
pass; sampling is D passes, one pixel at a time.

Parameters: dec.made.{l}.W (H_{l-1}, H_l) (masked), dec.made.{l}.v.W (H, H_l), dec.made.{l}.v.b (H_l,); and
dec.made.out.W (H_L, D), dec.made.out.v.W (H, D), dec.made.out.v.b (D,).
Derivation: derivations/made.md. Tests: tests/test_made.py.
"""
import itertools
import math

import numpy as np

from ..backend import array_namespace, astype, to_host
from ..layers import get_activation, sigmoid_forward
from ..likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
from ..made import made_masks, masked_linear_backward, masked_linear_forward
from ..mlp import Dense


class MadeBernoulli:
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d(x_<d, h))), MADE hidden sizes ``made_hidden``."""

    OPTIONS = ("made_hidden", "activation")
    unit_interval = True

    def __init__(self, x_dim, h_dim, device, dtype, made_hidden, activation):
        self.x_dim, self.device, self.dtype = x_dim, device, dtype
        self.names = [f"dec.made.{i}" for i in range(len(made_hidden))] + ["dec.made.out"]
        widths = (x_dim,) + tuple(made_hidden) + (x_dim,)
        self.shapes = list(itertools.pairwise(widths))
        self.masks = [device.asarray(m, dtype=dtype) for m in made_masks(x_dim, made_hidden)]   # constants
        self.cond = [Dense(name + ".v", h_dim, d_out) for name, (_, d_out) in zip(self.names, self.shapes, strict=True)]
        self.act_forward, self.act_backward = get_activation(activation)
        self.row_width = 1 + math.ceil(3 * sum(made_hidden) / x_dim)   # per-row values, for evaluation's budget

    def init_params(self, rng, gain):
        """Masked W ~ N(0, gain^2 / fan-in) over the unmasked inputs of each unit (at least 1), 0 where masked (those
        entries are never read and their gradient is 0); V as a Dense."""
        params = {}
        for name, (d_in, d_out), mask, cond in zip(self.names, self.shapes, self.masks, self.cond, strict=True):
            mask = to_host(mask).astype(np.float64)
            fan_in = np.maximum(np.sum(mask, axis=0), 1.0)                       # (d_out,)
            params[name + ".W"] = rng.host_normal((d_in, d_out)) * (gain / np.sqrt(fan_in))[None, :] * mask
            params.update(cond.init_params(rng, gain))
        return params

    def _logits(self, params, h, x):
        """logits (N, D) for inputs x: (N, D) and features h: (N, H), and the caches."""
        a, caches = x, []
        for i, (name, mask, cond) in enumerate(zip(self.names, self.masks, self.cond, strict=True)):
            pre, m_cache = masked_linear_forward(a, params[name + ".W"], mask)   # (N, H_l): sees x_<degree
            pre_h, c_cache = cond.forward(params, h)                           # (N, H_l): h in every layer
            pre = pre + pre_h
            if i == len(self.names) - 1:
                caches.append((m_cache, c_cache, None))
                return pre, caches
            a, act_cache = self.act_forward(pre)
            caches.append((m_cache, c_cache, act_cache))

    def forward(self, params, h, x):
        """h: (N, H), x: (N, D) -> nll (N,), cache: one pass (teacher forcing: x itself is the input).
        derivations/made.md#forward"""
        logits, caches = self._logits(params, h, x)                            # (N, D)
        nll, nll_cache = bernoulli_nll_forward(x, logits)                     # (N,)
        return nll, (caches, nll_cache)

    def backward(self, dnll, cache, grads):
        """dnll: (N,) -> dh (N, H); writes every layer's grads. h feeds every layer: its gradients add.
        derivations/made.md#backward"""
        caches, nll_cache = cache
        d = bernoulli_nll_backward(dnll, nll_cache)                           # (N, D)  dlogits
        dh = None
        for i in reversed(range(len(self.names))):
            m_cache, c_cache, act_cache = caches[i]
            if act_cache is not None:
                d = self.act_backward(d, act_cache)                           # through g
            dh_l = self.cond[i].backward(d, c_cache, grads)                   # (N, H)
            dh = dh_l if dh is None else dh + dh_l
            d, grads[self.names[i] + ".W"] = masked_linear_backward(d, m_cache)   # d: the layer below's
        return dh

    def decode(self, params, h):
        """{"probs": (N, D)}: the sequential mean pass of ``mean`` (the logits depend on x, not on z alone)."""
        return {"probs": self.mean(params, h)}

    def _sequential(self, params, h, choose):
        """D passes: pixel d from the logits given pixels < d chosen so far (``choose(p_d, d)``)."""
        xp = array_namespace(h)
        x = xp.zeros((h.shape[0], self.x_dim), dtype=h.dtype)
        cols = xp.arange(self.x_dim)
        for d in range(self.x_dim):
            logits, _ = self._logits(params, h, x)                             # only column d is used
            p, _ = sigmoid_forward(logits[:, d])                              # (N,)
            onehot = astype(cols == d, h.dtype)                            # (D,)
            x = x + choose(p, d)[:, None] * onehot[None, :]
        return x

    def mean(self, params, h):
        """A D-pass picture of p(x|z): pixel d's probability given the earlier pixels set to their probabilities
        (not E[x|z], which has no closed form for an autoregressive model), (N, D) on the device.
        derivations/made.md#sampling"""
        return self._sequential(params, h, lambda p, d: p)

    def sample(self, params, h, rng):
        """One draw by ancestral sampling, pixel by pixel (D passes): a host (N, D) float64 array.
        derivations/made.md#sampling"""
        u = self.device.asarray(rng.generator.random((h.shape[0], self.x_dim)), dtype=self.dtype)   # (N, D)
        x = self._sequential(params, h, lambda p, d: astype(u[:, d] < p, h.dtype))
        return to_host(x).astype(np.float64)

    def log_prob_grid(self, params, x, h):
        """log p(x_n | z_g), (N, G): for each example, one pass over the G codes' rows.
        derivations/evaluation.md#exact-log-likelihood"""
        xp = array_namespace(x, h)
        rows = []
        for n in range(x.shape[0]):
            xn = xp.broadcast_to(x[n:n + 1, :], (h.shape[0], self.x_dim))       # (G, D)
            nll, _ = self.forward(params, h, xn)
            rows.append(-nll)
        return xp.stack(rows, axis=0)

    def discrete(self, x):
        xp = array_namespace(x)
        return bool(to_host(xp.all((x == 0.0) | (x == 1.0))))
