"""The importance-weighted bound as a training objective (Burda, Grosse & Salakhutdinov 2015, Eq. 8 and 14):

    L_k(x) = log (1/k) sum_i w_i,   log w_i = log p(x, z_i) - log q(z_i|x),   z_i = mu + sigma eps_i,

a lower bound on log p(x) that is the ELBO at k = 1 and tightens as k grows. The pair below maps the (K, N)
log-weights to L_k per example; its backward hands each sample the normalised importance weight
w~_i = w_i / sum_i' w_i (a softmax over i of log w, computed stably). The model (``VAE.loss_and_grads`` with
eps of shape (K, N, Z)) builds log w from its decoder, prior and encoder and chains the rest.
Derivation: derivations/objectives.md. Tests: tests/test_iwae.py, tests/test_model.py, tests/test_ops.py.
"""
import math

import numpy as np

from .checks import check_arrays, check_shape


def iw_bound_forward(log_w):
    """L_n = log (1/K) sum_i exp(log_w_in) = logsumexp_i log_w_in - log K.   log_w: (K, N) -> L: (N,).

    With m the column maximum, e = exp(log_w - m) lies in [0, 1] with one entry exactly 1, so s = sum_i e lies
    in [1, K]: L = m + log s - log K. cache = w~ = e / s (K, N), the normalised weights, a softmax over i whose
    columns sum to 1 to rounding.  derivations/objectives.md#importance-weighted-forward
    """
    xp = check_arrays("iw_bound_forward", log_w=log_w)
    check_shape("iw_bound_forward", "log_w", log_w, (None, None))
    m = xp.max(log_w, axis=0)                                        # (N,)
    m = xp.where(xp.isfinite(m), m, 0.0)                             # a column of -inf: shift by 0 (gives -inf)
    e = xp.exp(log_w - m[None, :])                                   # (K, N)  every exponent <= 0
    s = xp.sum(e, axis=0)                                            # (N,)  in [1, K]
    with np.errstate(divide="ignore", invalid="ignore"):             # only for a column of -inf
        return xp.log(s) + m - math.log(log_w.shape[0]), e / s[None, :]


def iw_bound_backward(dL, cache):
    """dlog_w_in = dL_n w~_in.   dL: (N,) -> dlog_w: (K, N).   derivations/objectives.md#importance-weighted-backward"""
    w_tilde = cache
    check_arrays("iw_bound_backward", dL=dL, w_tilde=w_tilde)
    check_shape("iw_bound_backward", "dL", dL, (w_tilde.shape[1],), "one per example")
    return dL[None, :] * w_tilde
