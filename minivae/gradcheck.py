"""Finite-difference gradient checks (CS231n ``gradient_check.py``; Chainer ``check_backward``).

A hand-written backward is trusted only once it agrees with central differences of its own forward:

    df/dx_i ~= sum_k [f_k(x + h e_i) - f_k(x - h e_i)] * dout_k / (2 h),

with a random upstream gradient ``dout`` (not all ones, which would hide a wrong transpose or a wrong sum) and
everything in float64. Agreement is reported as the relative error the CS231n way,

    rel_error(a, b) = max_i |a_i - b_i| / max(|a_i| + |b_i|, 1e-8).

For arrays too large to perturb element by element, ``directional_check`` compares one directional derivative
along a random direction v with <grad, v>. Stochastic objectives are checked with their noise held fixed.
Derivation: derivations/gradcheck.md. Tests: tests/test_gradcheck.py (and every op's test uses it).
"""
import numpy as np

from .backend import from_host, to_host


def rel_error(a, b):
    """max_i |a_i - b_i| / max(|a_i| + |b_i|, 1e-8), on the host, as a Python float.
    derivations/gradcheck.md#relative-error
    """
    a, b = np.asarray(to_host(a), dtype=np.float64), np.asarray(to_host(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f, x, dout, h=1e-5):
    """The gradient of sum(f() * dout) with respect to ``x``, by central differences.

    ``f`` takes no arguments and reads ``x``, which is perturbed in place one element at a time and restored.
    Differences are taken per output element before weighting by ``dout``, so an output that ``x_i`` does not
    touch contributes exactly 0. Returns a float64 NumPy array of x's shape.  derivations/gradcheck.md#central
    """
    dout = np.asarray(to_host(dout), dtype=np.float64)
    grad = np.zeros(tuple(x.shape))
    for i in np.ndindex(*grad.shape):
        old = x[i]
        x[i] = old + h
        pos = np.array(to_host(f()), dtype=np.float64)   # a copy: f may return x itself
        x[i] = old - h
        neg = np.array(to_host(f()), dtype=np.float64)
        x[i] = old
        grad[i] = np.sum((pos - neg) * dout) / (2.0 * h)
    return grad


def check_backward(forward, backward, inputs, wrt=None, seed=0, h=1e-5):
    """Check ``backward`` against central differences of ``forward``.

    ``forward(*inputs) -> (out, cache)``; ``backward(dout, cache)`` returns one gradient or a tuple of
    gradients, for the inputs whose indices ``wrt`` lists, in that order (default: every input). An input with
    no gradient, such as the targets x of a likelihood or the noise eps of the sampler, is left out of ``wrt``.
    Checked inputs must be float64 arrays; they are perturbed in place and restored. ``dout`` is drawn from
    N(0, 1) with ``seed``. Returns the relative errors, one per checked input.  derivations/gradcheck.md#check
    """
    wrt = tuple(range(len(inputs))) if wrt is None else tuple(wrt)
    for j in wrt:
        if str(inputs[j].dtype).split(".")[-1] != "float64":
            raise ValueError(f"check_backward needs float64 inputs, input {j} is {inputs[j].dtype}")
    out, cache = forward(*inputs)
    dout_host = np.random.default_rng(seed).standard_normal(tuple(out.shape))
    dout = from_host(dout_host, out)
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(wrt):
        raise AssertionError(f"backward returned {len(grads)} gradients for {len(wrt)} inputs")
    errors = []
    for j, g in zip(wrt, grads):
        if tuple(g.shape) != tuple(inputs[j].shape):
            raise AssertionError(f"gradient of input {j} has shape {tuple(g.shape)}, "
                                 f"the input has {tuple(inputs[j].shape)}")
        num = numerical_gradient(lambda: forward(*inputs)[0], inputs[j], dout_host, h)
        errors.append(rel_error(g, num))
    return errors


def directional_check(f, params, grads, seed=0, h=1e-5):
    """Compare the directional derivative of the scalar ``f()`` along a random unit direction v over all of
    ``params`` (a dict, perturbed in place and restored) with <grads, v>. Returns the relative error
    |a - b| / max(|a| + |b|, 1e-8).  derivations/gradcheck.md#directional
    """
    rng = np.random.default_rng(seed)
    v = {k: rng.standard_normal(tuple(p.shape)) for k, p in params.items()}
    norm = np.sqrt(sum(np.sum(d * d) for d in v.values()))
    v = {k: d / norm for k, d in v.items()}
    analytic = sum(float(np.sum(to_host(grads[k]) * v[k])) for k in params)
    saved = {k: p for k, p in params.items()}
    values = []
    for sign in (1.0, -1.0):
        for k, p in saved.items():
            params[k] = p + sign * h * from_host(v[k], p)
        values.append(float(to_host(f())))
    params.update(saved)
    numeric = (values[0] - values[1]) / (2.0 * h)
    return abs(analytic - numeric) / max(1e-8, abs(analytic) + abs(numeric))
