"""The Gaussian likelihood p(x|z) = N(x; m, diag sigma_x^2), m = h W + b, for continuous data, with its
variance in one of four modes (``GAUSSIAN_VARIANCES``):

- "fixed":       sigma_x = ``sigma``, a constant (no parameter);
- "shared":      one learned raw log-variance l for every dimension, parameter dec.logvar of shape ();
- "per-dim":     one per dimension, dec.logvar of shape (D,);
- "per-element": a second decoder head, l = h W_lv + b_lv (dec.logvar.W (H, D), dec.logvar.b (D,)).

A learned l is always used through the floor sigma_x^2 = sigma_min^2 + exp(l) (``variance_floor_forward``),
without which the likelihood is unbounded (Mattei & Frellsen 2018).
Parameters: dec.out.W (H, D), dec.out.b (D,), and dec.logvar as above (0 at the start).
Derivation: derivations/likelihoods.md (#gaussian-forward, #variance-floor-forward, #per-element-variance,
#why-a-floor). Tests: tests/test_likelihoods.py, tests/test_model.py, tests/test_evaluate.py.
"""
import math

import numpy as np

from ..backend import array_namespace, to_host
from ..likelihoods import (LOG_2PI, gaussian_nll_backward, gaussian_nll_forward, variance_floor_backward,
                           variance_floor_forward)
from ..mlp import Dense

GAUSSIAN_VARIANCES = ("shared", "fixed", "per-dim", "per-element")


def check_options(gaussian_variance, sigma, sigma_min):
    """A ValueError naming the first bad option. sigma: the fixed standard deviation; sigma_min: the floor."""
    if gaussian_variance not in GAUSSIAN_VARIANCES:
        raise ValueError(f"gaussian_variance must be one of {', '.join(GAUSSIAN_VARIANCES)}; "
                         f"got {gaussian_variance!r}")
    for name, value in (("sigma", sigma), ("sigma_min", sigma_min)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not 0.0 < value < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class Gaussian:
    """p(x|z) = N(m, diag sigma_x^2) with the variance mode ``gaussian_variance``."""

    OPTIONS = ("gaussian_variance", "sigma", "sigma_min")  # what it reads of the VAE's likelihood options
    unit_interval = False          # a density of any real x
    row_width = 1

    def __init__(self, x_dim, h_dim, device, dtype, gaussian_variance, sigma, sigma_min):
        check_options(gaussian_variance, sigma, sigma_min)
        self.x_dim = x_dim
        self.head = Dense("dec.out", h_dim, x_dim)                                 # h -> mean
        self.logvar_head = Dense("dec.logvar", h_dim, x_dim)                       # h -> raw l (per-element)
        self.variance, self.sigma_min = gaussian_variance, float(sigma_min)
        self.fixed_logvar = device.asarray(2.0 * math.log(sigma), dtype=dtype)     # (): "fixed" only

    def init_params(self, rng, gain):
        params = self.head.init_params(rng, gain)
        if self.variance == "per-element":
            params.update(self.logvar_head.init_params(rng, gain))
        elif self.variance != "fixed":
            params["dec.logvar"] = np.zeros(() if self.variance == "shared" else (self.x_dim,))
        return params

    def _logvar_forward(self, params, h):
        """The log-variance used, log sigma_x^2, and its cache: the fixed constant, or the floor
        log(sigma_min^2 + exp(l)) of the learned raw l."""
        if self.variance == "fixed":
            return self.fixed_logvar, None                                        # ()
        if self.variance == "per-element":
            raw, head_cache = self.logvar_head.forward(params, h)                 # (N, D): the second head
        else:
            raw, head_cache = params["dec.logvar"], None                          # () or (D,)
        logvar, floor_cache = variance_floor_forward(raw, self.sigma_min)
        return logvar, (head_cache, floor_cache)

    def forward(self, params, h, x):
        mean, mean_cache = self.head.forward(params, h)                           # (N, D)
        logvar, lv_cache = self._logvar_forward(params, h)                        # (), (D,) or (N, D)
        nll, nll_cache = gaussian_nll_forward(x, mean, logvar)                    # (N,)
        return nll, (mean_cache, lv_cache, nll_cache)

    def backward(self, dnll, cache, grads):
        """dnll: (N,) -> dh (N, H); writes dec.out's grads and a learned log-variance's.
        derivations/likelihoods.md#gaussian-backward, #variance-floor-backward, #per-element-variance"""
        mean_cache, lv_cache, nll_cache = cache
        dmean, dlogvar = gaussian_nll_backward(dnll, nll_cache)                   # Step 1: (N, D), logvar's shape
        dh = self.head.backward(dmean, mean_cache, grads)                         # Step 2: (N, H)
        if self.variance == "fixed":
            return dh
        head_cache, floor_cache = lv_cache
        draw = variance_floor_backward(dlogvar, floor_cache)                      # through the floor
        if self.variance != "per-element":
            grads["dec.logvar"] = draw                                            # () or (D,)
            return dh
        return dh + self.logvar_head.backward(draw, head_cache, grads)          # h feeds both heads: they add

    def decode(self, params, h):
        """{"mean": (N, D), "logvar": the log-variance used, after the floor: () fixed or shared, (D,) per-dim,
        (N, D) per-element}."""
        mean, _ = self.head.forward(params, h)
        return {"mean": mean, "logvar": self._logvar_forward(params, h)[0]}

    def mean(self, params, h):
        return self.decode(params, h)["mean"]

    def sample(self, params, h, rng):
        """x = m + exp(logvar / 2) eps, eps ~ N(0, I) drawn on the host: a host (N, D) float64 array."""
        out = self.decode(params, h)
        mean = to_host(out["mean"]).astype(np.float64)
        return mean + np.exp(0.5 * to_host(out["logvar"]).astype(np.float64)) * rng.host_normal(mean.shape)

    def log_prob_grid(self, params, x, h):
        """log p(x_n | z_g), (N, G), by the expanded square with v = exp(logvar) broadcast to (G, D):
        -1/2 [sum_d (log 2 pi + logvar_gd) + (x * x) (1/v)^T - 2 x (m / v)^T + sum_d m_gd^2 / v_gd].
        derivations/evaluation.md#exact-log-likelihood"""
        xp = array_namespace(x, h)
        out = self.decode(params, h)
        m = out["mean"]                                                           # (G, D)
        logvar = xp.broadcast_to(out["logvar"], m.shape)                          # (G, D)
        ivar = xp.exp(-logvar)                                                    # 1 / v
        sq = (x * x) @ ivar.T - 2.0 * (x @ (m * ivar).T) + xp.sum(m * m * ivar, axis=1)[None, :]
        return -0.5 * (xp.sum(LOG_2PI + logvar, axis=1)[None, :] + sq)

    def discrete(self, x):
        return False               # a density of continuous x: bits per dimension mean nothing
