"""The approximate posterior q(z|x) = N(mu, diag exp(logvar)) (Kingma & Welling 2013, Sec. 3): two affine heads
on the encoder's last hidden layer h, the log-variance clamped once (``reparam.logvar_clamp_forward``), the
reparameterised sampler z = mu + sigma * eps with log q(z|x) at that sample, and its log-density anywhere for
evaluation.

A posterior part (``POSTERIORS`` in parts/__init__.py) hands the model a tuple q of per-example parameters, its
first two (mu, logvar) (N, Z), then whatever else it has; ``rsample_forward(q, eps) -> (z, log_q, cache)`` and
``rsample_backward(dz, dlogq, cache) -> dq`` (a tuple like q); ``closed_form_kl``: whether KL(q || N(0, I)) has
the closed form; ``density_at_any_z``: whether ``log_prob(z, mu, logvar)`` gives log q(z|x) at any z (else only
at its own samples, and evaluation estimates what needs it by sampling).

Parameters: enc.mu.W, enc.mu.b (H, Z), (Z,); enc.logvar.W, enc.logvar.b (H, Z), (Z,).
Derivation: derivations/elbo.md#whole-model-backward (Steps 4-5), derivations/reparameterization.md.
Tests: tests/test_model.py, tests/test_evaluate.py.
"""
from ..mlp import Dense
from ..prior import diag_normal_log_prob, reparam_log_q_backward, reparam_log_q_forward
from ..reparam import logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward, reparameterize_forward


class DiagonalGaussian:
    """q(z|x) = N(mu, diag exp(logvar)) from the encoder's features h: (N, H)."""

    OPTIONS = ()
    closed_form_kl = True                   # KL(N(mu, sigma^2) || N(0, I)) in closed form (kl.py)
    density_at_any_z = True                 # log_prob works at any z

    def __init__(self, h_dim, z_dim):
        self.mu_head = Dense("enc.mu", h_dim, z_dim)                            # h -> mu
        self.logvar_head = Dense("enc.logvar", h_dim, z_dim)                    # h -> logvar, before the clamp

    def init_params(self, rng, gain):
        return {**self.mu_head.init_params(rng, gain), **self.logvar_head.init_params(rng, gain)}

    def forward(self, params, h):
        """h: (N, H) -> q = (mu, logvar), both (N, Z), logvar clamped at LOGVAR_MAX; and the cache."""
        mu, mu_cache = self.mu_head.forward(params, h)                          # (N, Z)
        raw, lv_cache = self.logvar_head.forward(params, h)                     # (N, Z)
        logvar, clamp_cache = logvar_clamp_forward(raw)                         # min(raw, LOGVAR_MAX)
        return (mu, logvar), (mu_cache, lv_cache, clamp_cache)

    def backward(self, dq, cache, grads):
        """dq = (dmu, dlogvar). Writes the heads' grads; returns dh (N, H). h feeds both heads, so their gradients
        into h add.  derivations/elbo.md#whole-model-backward (Step 5)"""
        dmu, dlogvar = dq
        mu_cache, lv_cache, clamp_cache = cache
        draw = logvar_clamp_backward(dlogvar, clamp_cache)                      # 0 beyond the clamp
        dh_mu = self.mu_head.backward(dmu, mu_cache, grads)                     # (N, H)
        dh_logvar = self.logvar_head.backward(draw, lv_cache, grads)            # (N, H)
        return dh_mu + dh_logvar

    def rsample_forward(self, q, eps):
        """z = mu + exp(logvar / 2) eps, the reparameterisation (derivations/reparameterization.md#forward), and
        log q(z|x) at it written in eps, -1/2 sum_j (eps_j^2 + logvar_j + log 2 pi)
        (derivations/prior.md#log-q-at-a-sample).
        q = (mu, logvar), eps: (N, Z) -> z (N, Z), log_q (N,), cache."""
        mu, logvar = q
        z, rep_cache = reparameterize_forward(mu, logvar, eps)                  # (N, Z)
        log_q, lq_cache = reparam_log_q_forward(eps, logvar)                    # (N,)
        return z, log_q, (rep_cache, lq_cache)

    def rsample_backward(self, dz, dlogq, cache):
        """dq = (dmu, dlogvar) from dz (N, Z) and dlogq (N,): the sampler's backward, plus -dlogq / 2 into logvar
        (log q in eps does not read mu).  derivations/reparameterization.md#backward"""
        rep_cache, lq_cache = cache
        dmu, dlogvar = reparameterize_backward(dz, rep_cache)                   # (N, Z) each
        return dmu, dlogvar + reparam_log_q_backward(dlogq, lq_cache)

    def log_prob(self, z, mu, logvar):
        """log q(z|x) for codes z and q's (mu, logvar), broadcasting over leading axes (forward only)."""
        return diag_normal_log_prob(z, mu, logvar)
