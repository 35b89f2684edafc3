"""One planar flow step as pure ops (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
Eq. 10-12 and Appendix A.1), each example n carrying its own parameters (u_n, w_n, b_n), as when the encoder
outputs them (the amortised planar flow of van den Berg et al. 2018):

    f(z) = z + u_hat h(w^T z + b),   h = tanh,
    log |det df/dz| = log |1 + h'(w^T z + b) w^T u_hat|,
    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,   m(a) = -1 + softplus(a),

where u_hat is the reparameterised u that keeps w^T u_hat = m(w^T u) > -1, so every step is invertible.
Three pairs, one per formula: ``planar_u`` (u -> u_hat), ``planar`` (z -> f(z)) and ``planar_logdet``. The
posterior part (minivae/parts/planar_flow.py) chains them.
Derivation: derivations/flows.md. Tests: tests/test_flows.py, tests/test_ops.py.
"""
from .backend import array_namespace
from .checks import check_arrays, check_shape
from .layers import sigmoid_forward, softplus_forward


def _check_step(where, z, u_hat, w, b):
    """z, u_hat, w: (N, Z) of one shape, b: (N,), one array module and float dtype."""
    xp = check_arrays(where, z=z, u_hat=u_hat, w=w, b=b)
    check_shape(where, "z", z, (None, None), "(N, Z)")
    check_shape(where, "u_hat", u_hat, tuple(z.shape), "z's shape")
    check_shape(where, "w", w, tuple(z.shape), "z's shape")
    check_shape(where, "b", b, (z.shape[0],), "one per row of z")
    return xp


def planar_u_forward(u, w):
    """u_hat = u + c w,  c = (m(w^T u) - w^T u) / ||w||^2,  m(a) = -1 + softplus(a), so w^T u_hat = m(w^T u) > -1.
    u, w: (N, Z) -> u_hat: (N, Z).

    cache = (u, w, a, c, n2): a = w^T u (N,), c (N,), n2 = ||w||^2 (N,).  derivations/flows.md#the-invertible-u
    """
    xp = check_arrays("planar_u_forward", u=u, w=w)
    check_shape("planar_u_forward", "u", u, (None, None), "(N, Z)")
    check_shape("planar_u_forward", "w", w, tuple(u.shape), "u's shape")
    a = xp.sum(w * u, axis=1)                                        # (N,)  w^T u
    n2 = xp.sum(w * w, axis=1)                                       # (N,)  ||w||^2
    m, _ = softplus_forward(a)                                       # softplus(a) = max(a,0) + log1p(exp(-|a|))
    c = (m - 1.0 - a) / n2                                           # (N,)  (m(a) - a) / ||w||^2
    return u + c[:, None] * w, (u, w, a, c, n2)


def planar_u_backward(du_hat, cache):
    """With g = du_hat^T w (N,):  du = du_hat + da w,  dw = c du_hat + da u + 2 dn2 w,
    da = -g sigmoid(-a) / ||w||^2,  dn2 = -g c / ||w||^2.   du_hat: (N, Z) -> (du, dw), both (N, Z).
    derivations/flows.md#the-invertible-u"""
    u, w, a, c, n2 = cache
    xp = array_namespace(du_hat)
    g = xp.sum(du_hat * w, axis=1)                                   # (N,)  dL/dc
    s, _ = sigmoid_forward(-a)                                       # 1 - m'(a) = 1 - sigmoid(a)
    da = -g * s / n2                                                 # (N,)  dc/da = (m'(a) - 1) / ||w||^2
    dn2 = -g * c / n2                                                # (N,)  dc/dn2 = -c / ||w||^2
    du = du_hat + da[:, None] * w
    dw = c[:, None] * du_hat + da[:, None] * u + (2.0 * dn2)[:, None] * w
    return du, dw


def planar_forward(z, u_hat, w, b):
    """f(z) = z + u_hat tanh(w^T z + b).   z, u_hat, w: (N, Z), b: (N,) -> z_new: (N, Z).

    cache = (z, u_hat, w, y), y = tanh(w^T z + b) (N,).  derivations/flows.md#one-step-forward
    """
    xp = _check_step("planar_forward", z, u_hat, w, b)
    y = xp.tanh(xp.sum(w * z, axis=1) + b)                           # (N,)  h(w^T z + b)
    return z + u_hat * y[:, None], (z, u_hat, w, y)


def planar_backward(dz_new, cache):
    """With da = (dz_new^T u_hat)(1 - y^2) (N,):  dz = dz_new + da w,  du_hat = dz_new y,  dw = da z,  db = da.
    dz_new: (N, Z) -> (dz, du_hat, dw, db).   derivations/flows.md#one-step-backward"""
    z, u_hat, w, y = cache
    xp = array_namespace(dz_new)
    da = xp.sum(dz_new * u_hat, axis=1) * (1.0 - y * y)             # (N,)  through h' = 1 - y^2
    return dz_new + da[:, None] * w, dz_new * y[:, None], da[:, None] * z, da


def planar_logdet_forward(z, u_hat, w, b):
    """log |det df/dz| = log |1 + (1 - y^2) s|,  y = tanh(w^T z + b),  s = w^T u_hat (matrix determinant lemma).
    z, u_hat, w: (N, Z), b: (N,) -> logdet: (N,).  Positive inside the log whenever s > -1 (planar_u's u_hat).

    cache = (z, u_hat, w, y, s, d), d = 1 + (1 - y^2) s (N,).  derivations/flows.md#log-determinant-forward
    """
    xp = _check_step("planar_logdet_forward", z, u_hat, w, b)
    y = xp.tanh(xp.sum(w * z, axis=1) + b)                           # (N,)
    s = xp.sum(w * u_hat, axis=1)                                    # (N,)  w^T u_hat
    d = 1.0 + (1.0 - y * y) * s                                      # (N,)  det df/dz
    return xp.log(xp.abs(d)), (z, u_hat, w, y, s, d)


def planar_logdet_backward(dlogdet, cache):
    """With g = dlogdet / d:  da = -2 g y (1 - y^2) s,  ds = g (1 - y^2);
    dz = da w,  du_hat = ds w,  dw = da z + ds u_hat,  db = da.
    dlogdet: (N,) -> (dz, du_hat, dw, db).   derivations/flows.md#log-determinant-backward"""
    z, u_hat, w, y, s, d = cache
    g = dlogdet / d                                                  # (N,)  d log|d| / dd = 1 / d
    hp = 1.0 - y * y                                                 # (N,)  h'(a)
    da = -2.0 * g * y * hp * s                                       # (N,)  h''(a) = -2 y h'(a)
    ds = g * hp                                                      # (N,)
    return da[:, None] * w, ds[:, None] * w, da[:, None] * z + ds[:, None] * u_hat, da
