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
import itertools

import numpy as np

from .backend import from_host, to_host

H = 1e-5               # the central-difference step (derivations/gradcheck.md#central)


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


H_CS = 1e-30           # the complex step (derivations/gradcheck.md#complex-step)


def complex_step_gradient(fun, arr, h=H_CS):
    """The gradient of the real scalar ``fun(arr)`` by the complex step, df/dx_i = Im fun(x + i h e_i) / h, one
    element at a time, on the host: exact to rounding (no subtraction, so no cancellation), for ``fun`` written
    in complex-capable NumPy and analytic at ``arr``.  derivations/gradcheck.md#complex-step"""
    base = np.asarray(arr, dtype=np.complex128)
    grad = np.empty(base.shape)
    for idx in np.ndindex(*base.shape):
        a = base.copy()
        a[idx] += 1j * h
        grad[idx] = np.imag(fun(a)) / h
    return grad


def numerical_gradient(f, x, dout, h=H):
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


def check_backward(forward, backward, inputs, wrt=None, seed=0, h=H):
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
    for j, g in zip(wrt, grads, strict=True):
        if tuple(g.shape) != tuple(inputs[j].shape):
            raise AssertionError(f"gradient of input {j} has shape {tuple(g.shape)}, "
                                 f"the input has {tuple(inputs[j].shape)}")
        num = numerical_gradient(lambda: forward(*inputs)[0], inputs[j], dout_host, h)
        errors.append(rel_error(g, num))
    return errors


def directional_check(f, params, grads, seed=0, h=H):
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


# ---- every check at once: ``minivae gradcheck`` ------------------------------------------------------------------

LIMIT = 1e-6           # the largest relative error a float64 check may report (derivations/gradcheck.md#check)

# The whole model, one small instance per likelihood and variance option; each runs with both priors and both
# objectives (the ELBO with beta 1, the importance-weighted bound with K = 3), noise held fixed.
MODEL_LIKELIHOODS = (
    dict(likelihood="bernoulli"),
    dict(likelihood="gaussian", gaussian_variance="fixed", sigma=0.4),
    dict(likelihood="gaussian", gaussian_variance="shared", sigma_min=0.3),
    dict(likelihood="gaussian", gaussian_variance="per-dim", sigma_min=0.3),
    dict(likelihood="gaussian", gaussian_variance="per-element", sigma_min=0.3),
    dict(likelihood="categorical", levels=4),
)
MODEL_SIZE = dict(x_dim=4, z_dim=2, hidden=(3,), activation="tanh", prior_components=3)
MODEL_BATCH, MODEL_SAMPLES = 5, 3


def op_checks(seed=0):
    """One row per op pair and differentiated input (minivae/ops.py: pairs): inputs drawn from the op's moderate
    range (float64, named dimensions of 1-4, RNG ``seed``), ``check_backward`` with a random upstream gradient.
    Yields (name, shape, error), the name the op's and the input's (``layers.linear dW``)."""
    import inspect
    from .ops import make_inputs, pairs
    for i, pair in enumerate(pairs()):
        rng = np.random.default_rng([seed, i])
        inputs, _ = make_inputs(pair, rng)
        names = list(inspect.signature(pair.forward).parameters)
        errors = check_backward(pair.forward, pair.backward, inputs, wrt=pair.spec.wrt, seed=seed)
        for j, error in zip(pair.spec.wrt, errors, strict=True):
            yield f"{pair.key} d{names[j]}", str(tuple(inputs[j].shape)), error


def model_checks(seed=0):
    """One row per whole model (every MODEL_LIKELIHOODS entry x prior normal / mog x objective ELBO / IWBound
    K = 3): float64, parameters moved off their initial values, every parameter's gradient from
    ``VAE.loss_and_grads`` against central differences of its loss. Yields (name, shape, error): the error the
    largest over the parameters, the name ending in that parameter's; the shape K samples x N examples x D
    dimensions, Z latent dimensions and P parameters."""
    from .model import VAE
    from .objectives import ELBO, IWBound
    for i, (options, prior, k) in enumerate(itertools.product(MODEL_LIKELIHOODS, ("normal", "mog"),
                                                              (1, MODEL_SAMPLES))):
        rng = np.random.default_rng([seed, i])
        model = VAE(**MODEL_SIZE, **options, prior=prior, dtype="float64", seed=seed)
        for p in model.params.values():
            p += 0.3 * rng.standard_normal(tuple(p.shape))             # in place: biases off 0, a non-trivial q
        x = rng.uniform(size=(MODEL_BATCH, model.x_dim))
        eps = rng.standard_normal((k, MODEL_BATCH, model.z_dim))
        objective = ELBO(1.0) if k == 1 else IWBound(1.0)
        _, grads, _ = model.loss_and_grads(x, eps, objective)
        def loss(model=model, x=x, eps=eps, objective=objective):
            return model.loss_and_grads(x, eps, objective)[0]
        errors = {name: rel_error(grads[name], numerical_gradient(loss, p, np.array(1.0)))
                  for name, p in model.params.items()}
        worst = max(errors, key=errors.get)
        variant = options.get("gaussian_variance", "")
        name = (f"model {options['likelihood']}{' ' + variant if variant else ''}, {prior}, "
                f"{'ELBO' if k == 1 else f'L_{k}'} [{worst}]")
        size = sum(int(np.size(p)) for p in model.params.values())
        yield name, f"{k}x{MODEL_BATCH}x{model.x_dim} Z={model.z_dim} P={size}", errors[worst]


def run_checks(seed=0):
    """Every op pair, then every whole model: a list of (name, shape, error, limit). ``minivae gradcheck`` prints
    it and fails where error > limit.  derivations/gradcheck.md#check"""
    return [(name, shape, error, LIMIT) for checks in (op_checks, model_checks) for name, shape, error in
            checks(seed)]
