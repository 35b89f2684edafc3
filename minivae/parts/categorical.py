"""A categorical likelihood over L discretised intensities per pixel (van den Oord et al. 2016, PixelRNN's
256-way softmax): the level k_d = round(x_d (L - 1)), p(x|z) = prod_d softmax(a_d)[k_d], a = h W + b read as
(N, D, L) logits.

Parameters: dec.out.W (H, D L), dec.out.b (D L,).
Derivation: derivations/likelihoods.md#categorical-forward. Tests: tests/test_likelihoods.py, tests/test_model.py,
tests/test_evaluate.py, tests/test_plots.py.
"""
import numpy as np

from ..backend import array_namespace, to_host
from ..likelihoods import categorical_nll_backward, categorical_nll_forward, level_onehot, log_softmax
from ..mlp import Dense


class Categorical:
    """p(x|z) as a softmax over ``levels`` intensity levels for each of the D pixels."""

    OPTIONS = ("levels",)      # what it reads of the VAE's likelihood options
    unit_interval = True

    def __init__(self, x_dim, h_dim, device, dtype, levels):
        self.x_dim, self.levels = x_dim, levels
        self.head = Dense("dec.out", h_dim, x_dim * levels)                 # h -> L logits per pixel
        self.row_width = levels                                              # L logits per pixel
        self.grid = device.asarray(np.arange(levels), dtype=dtype)           # (L,): 0 .. L-1, made once

    def init_params(self, rng, gain):
        return self.head.init_params(rng, gain)

    def _logits(self, params, h):
        xp = array_namespace(h)
        a, head_cache = self.head.forward(params, h)                         # (N, D L)
        return xp.reshape(a, (a.shape[0], self.x_dim, self.levels)), head_cache   # (N, D, L)

    def forward(self, params, h, x):
        logits, head_cache = self._logits(params, h)
        nll, nll_cache = categorical_nll_forward(level_onehot(x, self.grid), logits)   # targets (N, D, L)
        return nll, (head_cache, nll_cache)

    def backward(self, dnll, cache, grads):
        head_cache, nll_cache = cache
        da = categorical_nll_backward(dnll, nll_cache)                        # Step 1: (N, D, L)
        xp = array_namespace(da)
        da = xp.reshape(da, (da.shape[0], self.x_dim * self.levels))         # (N, D L)
        return self.head.backward(da, head_cache, grads)                     # Step 2: (N, H)

    def decode(self, params, h):
        """{"logits": (N, D, L)}."""
        return {"logits": self._logits(params, h)[0]}

    def _probs_host(self, params, h):
        return np.exp(to_host(log_softmax(self.decode(params, h)["logits"])).astype(np.float64))   # (N, D, L)

    def mean(self, params, h):
        """E[x|z] = sum_l softmax(a_d)_l l / (L - 1), an intensity in [0, 1] like the data (on the device)."""
        xp = array_namespace(h)
        probs = xp.exp(log_softmax(self.decode(params, h)["logits"]))        # (N, D, L)
        return xp.sum(probs * (self.grid / (self.levels - 1)), axis=2)

    def sample(self, params, h, rng):
        """Inverse-CDF draws k_d = #{l : u_d > P_d(l)}, u ~ U(0, 1) on the host, as intensities k_d / (L - 1)."""
        cdf = np.cumsum(self._probs_host(params, h), axis=2)                 # (N, D, L)
        u = rng.generator.random(cdf.shape[:2] + (1,))                       # (N, D, 1)
        k = np.minimum(np.sum(u > cdf, axis=2), self.levels - 1)            # rounding may leave cdf[-1] below 1
        return k / (self.levels - 1.0)

    def log_prob_grid(self, params, x, h):
        """log p(x_n | z_g), (N, G): t log softmax(a)^T with t the one-hot levels of x, both flattened to
        (., D L); t is built for a block of examples at a time (at most 4M entries), so memory does not grow
        with N D L.  derivations/evaluation.md#exact-log-likelihood"""
        xp = array_namespace(x, h)
        n, d = x.shape
        logp = xp.reshape(log_softmax(self.decode(params, h)["logits"]), (h.shape[0], d * self.levels))  # (G, D L)
        rows = max(1, (1 << 22) // (d * self.levels))
        parts = []
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            onehot = xp.reshape(level_onehot(x[start:stop, ...], self.grid), (stop - start, d * self.levels))
            parts.append(onehot @ logp.T)                                     # (B, G)
        return xp.concat(parts, axis=0)

    def discrete(self, x):
        return True

    @staticmethod
    def data_warnings(x, levels):
        """Warnings about host training data x for ``levels`` levels: data on a coarser grid (the digits' 17
        levels under the default 256) leaves most of the softmax to levels that never occur."""
        used = np.unique(np.rint(np.clip(x[:10_000], 0.0, 1.0) * (levels - 1))).size
        if used * 2 <= levels:
            yield (f"levels is {levels} but the training data use only {used} of them (data on a coarser grid: "
                   f"the model spends its softmax on levels that never occur; try levels {used})")
