"""A planar-flow posterior (Rezende & Mohamed 2015, Sec. 4.1): z_0 ~ q_0(z|x) = N(mu, diag exp(logvar)), the
diagonal Gaussian, then K planar steps z_k = z_{k-1} + u_hat_k tanh(w_k^T z_{k-1} + b_k), each step's (u_k, w_k,
b_k) given per example by affine heads on the encoder's features (amortised, as van den Berg et al. 2018), so

    log q(z_K|x) = log N(z_0; mu, sigma^2) - sum_k log |1 + tanh'(w_k^T z_{k-1} + b_k) w_k^T u_hat_k|.

Its KL from the prior has no closed form: the model estimates it at the sample, log q(z_K|x) - log p(z_K).
Its density is known at its own samples only (inverting a planar step has no closed form), so evaluation
estimates the ELBO by sampling where the diagonal Gaussian's is integrated on a grid.

Parameters: those of the diagonal Gaussian (enc.mu.*, enc.logvar.*), then for k = 0 .. K-1 enc.flow.{k}.u.W/b
(H, Z), (Z,); enc.flow.{k}.w.W/b (H, Z), (Z,); enc.flow.{k}.b.W/b (H, 1), (1,).
Derivation: derivations/flows.md. Tests: tests/test_planar_flow.py, tests/test_flows.py, tests/test_model.py.
"""
from ..backend import array_namespace
from ..flows import (planar_backward, planar_forward, planar_logdet_backward, planar_logdet_forward,
                     planar_u_backward, planar_u_forward)
from ..mlp import Dense
from .diagonal_gaussian import DiagonalGaussian


class PlanarFlow:
    """q(z_K|x): the diagonal Gaussian pushed through K = ``flow_steps`` planar steps."""

    OPTIONS = ("flow_steps",)
    closed_form_kl = False                  # the KL is estimated at the sample
    density_at_any_z = False                # log q(z_K|x) only at the flow's own samples

    def __init__(self, h_dim, z_dim, flow_steps):
        self.base = DiagonalGaussian(h_dim, z_dim)
        self.steps = [(Dense(f"enc.flow.{k}.u", h_dim, z_dim), Dense(f"enc.flow.{k}.w", h_dim, z_dim),
                       Dense(f"enc.flow.{k}.b", h_dim, 1)) for k in range(flow_steps)]

    def init_params(self, rng, gain):
        params = self.base.init_params(rng, gain)
        for heads in self.steps:
            for head in heads:
                params.update(head.init_params(rng, gain))
        return params

    def forward(self, params, h):
        """h: (N, H) -> q = (mu, logvar, u_0, w_0, b_0, .., u_K-1, w_K-1, b_K-1): (N, Z) each, b_k (N, 1)."""
        q, base_cache = self.base.forward(params, h)                            # (mu, logvar)
        head_caches = []
        for heads in self.steps:
            for head in heads:
                out, c = head.forward(params, h)                                # (N, Z) or (N, 1)
                q = q + (out,)
                head_caches.append(c)
        return q, (base_cache, head_caches)

    def backward(self, dq, cache, grads):
        """Writes every head's grads; returns dh (N, H): h feeds 2 + 3K heads, whose gradients into h add."""
        base_cache, head_caches = cache
        dh = self.base.backward(dq[:2], base_cache, grads)
        heads = [head for step in self.steps for head in step]
        for head, d, c in zip(heads, dq[2:], head_caches, strict=True):
            dh = dh + head.backward(d, c, grads)
        return dh

    def rsample_forward(self, q, eps):
        """z_K and log q(z_K|x) = log q_0(z_0|x) - sum_k logdet_k for q from ``forward`` and eps: (N, Z).
        derivations/flows.md#the-posterior"""
        xp = array_namespace(eps)
        z, log_q, base_cache = self.base.rsample_forward(q[:2], eps)           # z_0, log q_0 at it
        step_caches = []
        for k in range(len(self.steps)):
            u, w, b = q[2 + 3 * k: 5 + 3 * k]
            b = xp.reshape(b, (-1,))                                            # (N,)
            u_hat, u_cache = planar_u_forward(u, w)                             # w^T u_hat > -1
            logdet, ld_cache = planar_logdet_forward(z, u_hat, w, b)            # at z_{k-1}
            z, f_cache = planar_forward(z, u_hat, w, b)                         # z_k
            log_q = log_q - logdet
            step_caches.append((u_cache, ld_cache, f_cache))
        return z, log_q, (base_cache, step_caches)

    def rsample_backward(self, dz, dlogq, cache):
        """dq (a tuple like q) from dz: (N, Z) at z_K and dlogq: (N,), the steps last to first. z_{k-1} feeds
        the step and its log-determinant, u_hat_k and w_k both of them, and w_k u_hat_k too: their gradients add.
        derivations/flows.md#the-posterior"""
        base_cache, step_caches = cache
        xp = array_namespace(dz)
        dsteps = []
        for u_cache, ld_cache, f_cache in reversed(step_caches):
            dz_f, du_hat_f, dw_f, db_f = planar_backward(dz, f_cache)          # through z_k = f(z_{k-1})
            dz_l, du_hat_l, dw_l, db_l = planar_logdet_backward(-dlogq, ld_cache)   # log q -= logdet
            du, dw_u = planar_u_backward(du_hat_f + du_hat_l, u_cache)          # through u_hat
            dz = dz_f + dz_l
            dsteps.insert(0, (du, dw_f + dw_l + dw_u, xp.reshape(db_f + db_l, (-1, 1))))
        dmu, dlogvar = self.base.rsample_backward(dz, dlogq, base_cache)
        return (dmu, dlogvar) + tuple(d for step in dsteps for d in step)
