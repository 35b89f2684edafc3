"""Negative log-likelihoods -log p(x|z) of the decoder's output, per example, summed over dimensions, in nats:
Bernoulli from logits, Gaussian with a variance that is a scalar, per dimension or per element, the floor that
keeps a learned Gaussian variance >= sigma_min^2 (Mattei & Frellsen 2018: without it the likelihood is
unbounded), and a categorical over L discretised intensities (van den Oord et al. 2016, PixelRNN's 256-way
softmax).

Derivation: derivations/likelihoods.md. Tests: tests/test_likelihoods.py, tests/test_ops.py.
"""
import math

from .backend import sum_to_shape
from .checks import check_arrays, check_number, check_shape
from .layers import sigmoid_forward, softplus_backward, softplus_forward

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_nll_forward(x, logits):
    """nll_n = sum_d softplus(a_nd) - x_nd a_nd, the Bernoulli NLL from logits a (never log(sigmoid(a))).

    Formed as (1 - x) max(a, 0) + x max(-a, 0) + log1p(exp(-|a|)): for x in [0, 1] no term is negative, so
    nothing cancels and a small loss keeps its relative accuracy (softplus(a) - x a rounds the 2e-9 loss of
    x = 1, a = 20 to 0 in float32).

    x, logits: (N, D) -> nll: (N,). x in [0, 1].  cache = (x, logits).  derivations/likelihoods.md#bernoulli-forward
    """
    xp = check_arrays("bernoulli_nll_forward", x=x, logits=logits)
    check_shape("bernoulli_nll_forward", "logits", logits, (None, None))
    check_shape("bernoulli_nll_forward", "x", x, tuple(logits.shape), "logits' shape")
    nll = xp.log1p(xp.exp(-xp.abs(logits)))          # (N, D): log1p(exp(-|a|)), in (0, log 2]
    nll += (1.0 - x) * xp.maximum(logits, 0.0)       # softplus(a) - x a = (1-x) max(a,0) + x max(-a,0) + log1p(.)
    nll += x * xp.maximum(-logits, 0.0)
    return xp.sum(nll, axis=1), (x, logits)          # (N,)


def bernoulli_nll_backward(dnll, cache):
    """dlogits = dnll (sigmoid(a) - x).   dnll: (N,) -> (N, D).   derivations/likelihoods.md#bernoulli-backward"""
    x, logits = cache
    _check_dnll("bernoulli_nll_backward", dnll, logits)
    p, _ = sigmoid_forward(logits)                   # (N, D), a fresh array: finished in place
    p -= x
    p *= dnll[:, None]
    return p


def gaussian_nll_forward(x, mean, logvar):
    """nll_n = 1/2 sum_d [log 2 pi + logvar_d + (x_nd - mean_nd)^2 exp(-logvar_d)].

    x, mean: (N, D); logvar broadcastable to (N, D): a scalar (), one per dimension (D,), or one per element
    (N, D). -> nll: (N,).  cache = ((x - mean) exp(-logvar), squared standardised residual, logvar's shape).
    derivations/likelihoods.md#gaussian-forward
    """
    xp = check_arrays("gaussian_nll_forward", x=x, mean=mean, logvar=logvar)
    check_shape("gaussian_nll_forward", "mean", mean, (None, None))
    check_shape("gaussian_nll_forward", "x", x, tuple(mean.shape), "mean's shape")
    lv = tuple(logvar.shape)
    if len(lv) > 2 or any(n not in (1, m) for n, m in zip(lv[::-1], tuple(mean.shape)[::-1], strict=False)):
        raise ValueError(f"gaussian_nll_forward: logvar must broadcast to mean's shape {tuple(mean.shape)} "
                         f"(e.g. (), ({mean.shape[1]},) or {tuple(mean.shape)}), got {lv}")
    inv_sigma = xp.exp(-0.5 * logvar)                # 1 / sigma: finite in float32 down to logvar = -177
    u = (x - mean) * inv_sigma                       # (N, D): (x - mean) / sigma, so 0 * exp(-logvar) is never formed
    r_ivar = u * inv_sigma                           # (N, D): (x - mean) / sigma^2
    sq = u * u                                       # (N, D): (x - mean)^2 / sigma^2
    nll = 0.5 * xp.sum(LOG_2PI + logvar + sq, axis=1)   # (N,)
    return nll, (r_ivar, sq, tuple(logvar.shape))


def gaussian_nll_backward(dnll, cache):
    """dmean = -dnll (x - mean) / sigma^2,  dlogvar = dnll (1 - (x - mean)^2 / sigma^2) / 2 summed to logvar's
    shape.   dnll: (N,).   derivations/likelihoods.md#gaussian-backward
    """
    r_ivar, sq, logvar_shape = cache
    _check_dnll("gaussian_nll_backward", dnll, r_ivar)
    dnll = dnll[:, None]                             # (N, 1)
    dmean = -dnll * r_ivar                           # (N, D)
    dlogvar = sum_to_shape(0.5 * dnll * (1.0 - sq), logvar_shape)
    return dmean, dlogvar


# ---- the variance floor: a smooth lower bound sigma_min^2 on a learned variance ------------------------------

SIGMA_MIN = 1e-3       # default floor of a learned Gaussian std, data in [0, 1]: derivations/likelihoods.md#why-a-floor


def variance_floor_forward(logvar, sigma_min):
    """log(sigma_min^2 + exp(logvar)) = c + softplus(logvar - c),  c = log sigma_min^2: the log of a variance that
    never drops below sigma_min^2, smooth in logvar, never forming exp(logvar) (no overflow for any logvar).

    logvar: any shape (the unconstrained parameter or decoder output); sigma_min: a Python float > 0.
    -> the floored log-variance, logvar's shape.  cache = softplus(logvar - c), the output minus c.
    derivations/likelihoods.md#variance-floor-forward
    """
    xp = check_arrays("variance_floor_forward", logvar=logvar)
    sigma_min = check_number(sigma_min, "variance_floor_forward: sigma_min", 0.0, strict=True)
    c = 2.0 * math.log(sigma_min)                    # log sigma_min^2, a Python float: keeps logvar's dtype
    sp, _ = softplus_forward(logvar - c)             # softplus(u) = max(u,0) + log1p(exp(-|u|))
    return xp.asarray(c + sp), sp                    # asarray: NumPy's float + 0-d array is a scalar, not an array


def variance_floor_backward(dout, cache):
    """dlogvar = dout sigmoid(logvar - c) = dout exp(logvar) / (sigma_min^2 + exp(logvar)), in (0, 1) times dout,
    from the cached softplus output y as -expm1(-y).   derivations/likelihoods.md#variance-floor-backward
    """
    return softplus_backward(dout, cache)


# ---- categorical over L discretised intensities ----------------------------------------------------------------

def log_softmax(a):
    """log softmax along the last axis, a_l - m - log sum_l' exp(a_l' - m) with m = max_l a_l (no overflow).
    derivations/likelihoods.md#categorical-forward
    """
    xp = check_arrays("log_softmax", a=a)
    shifted = a - xp.max(a, axis=-1, keepdims=True)                          # every exponent <= 0
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def level_onehot(x, grid):
    """The one-hot target of the level k_nd = round(x_nd (L - 1)) of intensities x in [0, 1].

    x: (N, D); grid: (L,) the levels 0, 1, ..., L - 1 as floats, on x's device (the model builds it once).
    -> (N, D, L) in x's dtype, exactly one 1 per (n, d). x outside [0, 1] is clipped to it first; a NaN in x
    gives a row of NaN (a comparison would give a row of zeros, and a finite loss).
    derivations/likelihoods.md#discretised-targets
    """
    xp = check_arrays("level_onehot", x=x, grid=grid)
    check_shape("level_onehot", "x", x, (None, None))
    check_shape("level_onehot", "grid", grid, (None,))
    n_levels = grid.shape[0]
    k = xp.round(xp.clip(x, 0.0, 1.0) * (n_levels - 1))                     # (N, D): the level, a whole number
    # 1 - min(|k - l|, 1): exactly 1 at l = k and 0 elsewhere (whole numbers), and NaN where k is NaN
    return 1.0 - xp.minimum(xp.abs(k[..., None] - grid), 1.0)              # (N, D, L)


def categorical_nll_forward(onehot, logits):
    """nll_n = -sum_d log softmax(a_nd)[k_nd] = -sum_d sum_l t_ndl log softmax(a_nd)_l, with t the one-hot target.

    onehot: (N, D, L) (from ``level_onehot``); logits: (N, D, L) -> nll: (N,).  cache = (t, log softmax(a)).
    derivations/likelihoods.md#categorical-forward
    """
    xp = check_arrays("categorical_nll_forward", onehot=onehot, logits=logits)
    check_shape("categorical_nll_forward", "logits", logits, (None, None, None))
    check_shape("categorical_nll_forward", "onehot", onehot, tuple(logits.shape), "logits' shape")
    logp = log_softmax(logits)                                             # (N, D, L)
    nll = -xp.sum(onehot * logp, axis=(1, 2))                              # (N,)
    return nll, (onehot, logp)


def categorical_nll_backward(dnll, cache):
    """dlogits = dnll (softmax(a) - t), softmax(a) = exp(log softmax(a)).   dnll: (N,) -> (N, D, L).
    derivations/likelihoods.md#categorical-backward
    """
    onehot, logp = cache
    xp = _check_dnll("categorical_nll_backward", dnll, logp)
    return dnll[:, None, None] * (xp.exp(logp) - onehot)


def _check_dnll(where, dnll, per_element):
    """A per-example loss's upstream gradient: an (N,) array of the forward's dtype (no broadcasting)."""
    xp = check_arrays(where, dnll=dnll, cache=per_element)
    check_shape(where, "dnll", dnll, (per_element.shape[0],), "one per example")
    return xp
