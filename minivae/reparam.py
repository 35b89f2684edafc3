"""The reparameterisation trick (Kingma & Welling 2013, Sec. 2.4): z = mu + sigma * eps, sigma = exp(logvar/2),
and the clamp that keeps the encoder's log-variance finite.

The noise eps ~ N(0, I) is an argument, drawn outside by ``minivae.rng``: the randomness sits in eps, so z is a
deterministic, differentiable function of (mu, logvar). Derivation: derivations/reparameterization.md.
Tests: tests/test_reparam.py, tests/test_ops.py.

The clamp is applied once, at the encoder's log-variance head (``logvar_clamp_forward``, a pair of its own, as
``likelihoods.variance_floor_forward`` is for the decoder's variance): every consumer of q (the sampler, the
closed-form KL, log q at a sample, evaluation) then reads the same clamped logvar and keeps its textbook formula.
exp(logvar) overflows float32 at logvar ~ 88.7, and no useful posterior comes near the bound; beyond it the clamp
is flat, so its gradient is 0. No lower clamp is needed: as logvar -> -inf, sigma underflows to 0 and nothing
overflows. derivations/reparameterization.md#the-clamp
"""
from .checks import check_arrays, check_shape

LOGVAR_MAX = 40.0   # sigma^2 <= e^40 ~ 2.4e17: finite in float32, even squared (reparameterization.md#the-clamp)


def logvar_clamp_forward(logvar):
    """min(logvar, LOGVAR_MAX).   logvar: any shape -> the same shape.

    cache = clamped = logvar > LOGVAR_MAX (bool; NaN compares False, so NaN propagates).
    derivations/reparameterization.md#the-clamp
    """
    xp = check_arrays("logvar_clamp_forward", logvar=logvar)
    return xp.minimum(logvar, LOGVAR_MAX), logvar > LOGVAR_MAX


def logvar_clamp_backward(dout, cache):
    """dlogvar = dout where logvar <= LOGVAR_MAX, 0 beyond (the clamp is flat there).
    derivations/reparameterization.md#the-clamp"""
    clamped = cache
    xp = check_arrays("logvar_clamp_backward", dout=dout)
    check_shape("logvar_clamp_backward", "dout", dout, tuple(clamped.shape), "the forward's output")
    return xp.where(clamped, 0.0, dout)


def reparameterize_forward(mu, logvar, eps):
    """z = mu + exp(logvar / 2) * eps.   mu, logvar, eps: (N, Z) -> z: (N, Z).

    cache = (sigma, eps).  derivations/reparameterization.md#forward
    """
    xp = check_arrays("reparameterize_forward", mu=mu, logvar=logvar, eps=eps)
    check_shape("reparameterize_forward", "mu", mu, (None, None))
    check_shape("reparameterize_forward", "logvar", logvar, tuple(mu.shape), "mu's shape")
    check_shape("reparameterize_forward", "eps", eps, tuple(mu.shape), "mu's shape")
    sigma = xp.exp(0.5 * logvar)                     # (N, Z)
    z = mu + sigma * eps                             # (N, Z)
    return z, (sigma, eps)


def reparameterize_backward(dz, cache):
    """dmu = dz,  dlogvar = dz * eps * sigma / 2.   derivations/reparameterization.md#backward"""
    sigma, eps = cache
    check_arrays("reparameterize_backward", dz=dz, sigma=sigma)
    check_shape("reparameterize_backward", "dz", dz, tuple(sigma.shape), "z's shape")
    dmu = dz
    dlogvar = 0.5 * dz * eps * sigma                 # dz/dlogvar = eps * sigma / 2
    return dmu, dlogvar
