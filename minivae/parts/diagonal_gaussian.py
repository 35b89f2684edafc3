"""The approximate posterior q(z|x) = N(mu, diag exp(logvar)) (Kingma & Welling 2013, Sec. 3): two affine heads
on the encoder's last hidden layer h, the log-variance clamped once (``reparam.logvar_clamp_forward``), the
reparameterised sampler z = mu + sigma * eps, and its log-density for evaluation.

Parameters: enc.mu.W, enc.mu.b (H, Z), (Z,); enc.logvar.W, enc.logvar.b (H, Z), (Z,).
Derivation: derivations/elbo.md#whole-model-backward (Steps 4-5), derivations/reparameterization.md.
Tests: tests/test_model.py, tests/test_evaluate.py.
"""
from ..mlp import Dense
from ..prior import diag_normal_log_prob
from ..reparam import logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward, reparameterize_forward


class DiagonalGaussian:
    """q(z|x) = N(mu, diag exp(logvar)) from the encoder's features h: (N, H)."""

    def __init__(self, h_dim, z_dim):
        self.mu_head = Dense("enc.mu", h_dim, z_dim)                            # h -> mu
        self.logvar_head = Dense("enc.logvar", h_dim, z_dim)                    # h -> logvar, before the clamp

    def init_params(self, rng, gain):
        return {**self.mu_head.init_params(rng, gain), **self.logvar_head.init_params(rng, gain)}

    def forward(self, params, h):
        """h: (N, H) -> (mu, logvar), both (N, Z), logvar clamped at LOGVAR_MAX; and the cache."""
        mu, mu_cache = self.mu_head.forward(params, h)                          # (N, Z)
        raw, lv_cache = self.logvar_head.forward(params, h)                     # (N, Z)
        logvar, clamp_cache = logvar_clamp_forward(raw)                         # min(raw, LOGVAR_MAX)
        return (mu, logvar), (mu_cache, lv_cache, clamp_cache)

    def backward(self, dmu, dlogvar, cache, grads):
        """Writes the heads' grads; returns dh (N, H). h feeds both heads, so their gradients into h add.
        derivations/elbo.md#whole-model-backward (Step 5)"""
        mu_cache, lv_cache, clamp_cache = cache
        draw = logvar_clamp_backward(dlogvar, clamp_cache)                      # 0 beyond the clamp
        dh_mu = self.mu_head.backward(dmu, mu_cache, grads)                     # (N, H)
        dh_logvar = self.logvar_head.backward(draw, lv_cache, grads)            # (N, H)
        return dh_mu + dh_logvar

    def rsample_forward(self, mu, logvar, eps):
        """z = mu + exp(logvar / 2) eps, the reparameterisation.   derivations/reparameterization.md#forward"""
        return reparameterize_forward(mu, logvar, eps)

    def rsample_backward(self, dz, cache):
        """(dmu, dlogvar) from dz.   derivations/reparameterization.md#backward"""
        return reparameterize_backward(dz, cache)

    def log_prob(self, z, mu, logvar):
        """log q(z|x) for codes z and q's (mu, logvar), broadcasting over leading axes (forward only)."""
        return diag_normal_log_prob(z, mu, logvar)
