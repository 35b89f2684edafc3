"""Layers as pure forward/backward pairs (CS231n ``layers.py``): an affine layer and activations.

``*_forward(...) -> (out, cache)``; ``*_backward(dout, cache)`` returns the gradients and never mutates its
inputs. Where the derivative is a function of the output (tanh, sigmoid, softplus, relu), the cache keeps the
output. Derivations: derivations/linear.md, derivations/activations.md. Tests: tests/test_layers.py, tests/test_ops.py.
"""
from .backend import astype
from .checks import check_arrays, check_shape


def linear_forward(x, W, b):
    """y = x W + b.   x: (N, D_in), W: (D_in, D_out), b: (D_out,) -> y: (N, D_out).

    cache = (x, W).  derivations/linear.md#forward
    """
    check_arrays("linear_forward", x=x, W=W, b=b)
    check_shape("linear_forward", "x", x, (None, None))
    check_shape("linear_forward", "W", W, (x.shape[1], None), "x's D_in first")
    check_shape("linear_forward", "b", b, (W.shape[1],), "W's D_out")
    y = x @ W                                       # (N, D_out)
    y += b                                          # in place: one (N, D_out) array, not two
    return y, (x, W)


def linear_backward(dy, cache, need_dx=True):
    """dx = dy W^T,  dW = x^T dy,  db = sum_n dy.   derivations/linear.md#backward

    ``need_dx=False`` skips the product for dx (returned as None) where the input is data, not a layer's output.
    """
    x, W = cache
    xp = check_arrays("linear_backward", dy=dy, W=W)
    check_shape("linear_backward", "dy", dy, (x.shape[0], W.shape[1]), "the forward's output")
    dx = dy @ W.T if need_dx else None              # (N, D_in)
    dW = x.T @ dy                                   # (D_in, D_out)
    db = xp.sum(dy, axis=0)                         # (D_out,)
    return dx, dW, db


def _check_dy(where, dy, y):
    """An activation's upstream gradient: an array of its output's shape and dtype (no broadcasting)."""
    xp = check_arrays(where, dy=dy, y=y)
    check_shape(where, "dy", dy, tuple(y.shape), "the forward's output")
    return xp


def tanh_forward(x):
    """y = tanh(x); cache = y.   derivations/activations.md#tanh"""
    xp = check_arrays("tanh_forward", x=x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, cache):
    """dx = dy (1 - y^2).   derivations/activations.md#tanh"""
    y = cache
    _check_dy("tanh_backward", dy, y)
    dx = 1.0 - y * y
    dx *= dy
    return dx


def relu_forward(x):
    """y = max(x, 0); cache = y.   derivations/activations.md#relu"""
    xp = check_arrays("relu_forward", x=x)
    y = xp.maximum(x, 0.0)
    return y, y


def relu_backward(dy, cache):
    """dx = dy [y > 0]: the derivative at exactly 0 is taken to be 0.   derivations/activations.md#relu"""
    y = cache
    _check_dy("relu_backward", dy, y)
    return dy * astype(y > 0.0, dy.dtype)          # a product, not xp.where: no branch per element


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)) = exp(min(x, 0)) / (1 + exp(-|x|)), without overflow for any x; cache = y.

    derivations/activations.md#sigmoid
    """
    xp = check_arrays("sigmoid_forward", x=x)
    d = xp.exp(-xp.abs(x))                          # exp(-|x|) in (0, 1]: never overflows
    d += 1.0                                        # 1 + exp(-|x|)
    y = xp.exp(xp.minimum(x, 0.0))                  # 1 for x >= 0, exp(x) for x < 0: the two branches, no select
    y /= d
    return y, y


def sigmoid_backward(dy, cache):
    """dx = dy y (1 - y).   derivations/activations.md#sigmoid"""
    y = cache
    _check_dy("sigmoid_backward", dy, y)
    return dy * y * (1.0 - y)


def softplus_forward(x):
    """y = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); cache = y.   derivations/activations.md#softplus"""
    xp = check_arrays("softplus_forward", x=x)
    y = xp.log1p(xp.exp(-xp.abs(x)))
    y += xp.maximum(x, 0.0)
    return y, y


def softplus_backward(dy, cache):
    """dx = dy sigmoid(x) = dy (1 - exp(-y)) = -dy expm1(-y).   derivations/activations.md#softplus"""
    y = cache
    xp = _check_dy("softplus_backward", dy, y)
    dx = xp.asarray(-xp.expm1(-y))                  # sigmoid(x) = 1 - exp(-y); asarray: NumPy makes 0-d a scalar
    dx *= dy
    return dx


def identity_forward(x):
    """y = x; cache = None.   derivations/activations.md#identity"""
    check_arrays("identity_forward", x=x)
    return x, None


def identity_backward(dy, cache):
    """dx = dy.   derivations/activations.md#identity"""
    check_arrays("identity_backward", dy=dy)
    return dy


ACTIVATIONS = {
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
    "identity": (identity_forward, identity_backward),
}


def get_activation(name):
    """(forward, backward) for an activation name; a ValueError naming ``activation`` otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}") from None
