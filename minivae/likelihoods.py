"""Negative log-likelihoods -log p(x|z) of the decoder's output, per example, summed over dimensions, in nats.

Derivation: derivations/likelihoods.md. Tests: tests/test_likelihoods.py.
"""
import math

from .backend import array_namespace, sum_to_shape
from .layers import sigmoid_forward, softplus_forward

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_nll_forward(x, logits):
    """nll_n = sum_d softplus(a_nd) - x_nd a_nd, the Bernoulli NLL from logits a (never log(sigmoid(a))).

    x, logits: (N, D) -> nll: (N,). x in [0, 1].  cache = (x, logits).  derivations/likelihoods.md#bernoulli-forward
    """
    xp = array_namespace(x, logits)
    sp, _ = softplus_forward(logits)                 # softplus(a) = max(a,0) + log1p(exp(-|a|))
    nll = xp.sum(sp - x * logits, axis=1)            # (N,)
    return nll, (x, logits)


def bernoulli_nll_backward(dnll, cache):
    """dlogits = dnll (sigmoid(a) - x).   dnll: (N,) -> (N, D).   derivations/likelihoods.md#bernoulli-backward"""
    x, logits = cache
    p, _ = sigmoid_forward(logits)                   # (N, D)
    return dnll[:, None] * (p - x)


def gaussian_nll_forward(x, mean, logvar):
    """nll_n = 1/2 sum_d [log 2 pi + logvar_d + (x_nd - mean_nd)^2 exp(-logvar_d)].

    x, mean: (N, D); logvar broadcastable to (N, D): a scalar (), one per dimension (D,), or one per element
    (N, D). -> nll: (N,).  cache = ((x - mean) exp(-logvar), squared standardised residual, logvar's shape).
    derivations/likelihoods.md#gaussian-forward
    """
    xp = array_namespace(x, mean, logvar)
    r_ivar = (x - mean) * xp.exp(-logvar)            # (N, D): (x - mean) / sigma^2
    sq = (x - mean) * r_ivar                         # (N, D): (x - mean)^2 / sigma^2
    nll = 0.5 * xp.sum(LOG_2PI + logvar + sq, axis=1)   # (N,)
    return nll, (r_ivar, sq, tuple(logvar.shape))


def gaussian_nll_backward(dnll, cache):
    """dmean = -dnll (x - mean) / sigma^2,  dlogvar = dnll (1 - (x - mean)^2 / sigma^2) / 2 summed to logvar's
    shape.   dnll: (N,).   derivations/likelihoods.md#gaussian-backward
    """
    r_ivar, sq, logvar_shape = cache
    dnll = dnll[:, None]                             # (N, 1)
    dmean = -dnll * r_ivar                           # (N, D)
    dlogvar = sum_to_shape(0.5 * dnll * (1.0 - sq), logvar_shape)
    return dmean, dlogvar
