"""Helpers for the whole-model gradient checks of the parts added with the flow posterior, the VampPrior and
the MADE decoder: the architectures, perturbed weights, a batch, every parameter's gradient against finite
differences, and a
five-point finite-difference reference for losses with gradient entries near the central-difference roundoff
floor (~ulp(loss) / h)."""
import numpy as np
import pytest

from minivae.backend import to_host
from minivae.gradcheck import numerical_gradient, rel_error

# the architectures the new parts are checked on: linear, one hidden layer, two hidden layers with a Gaussian
CONFIGS = {
    "linear": dict(x_dim=5, z_dim=2, hidden=(), activation="tanh", likelihood="bernoulli"),
    "one-hidden": dict(x_dim=6, z_dim=3, hidden=(4,), activation="tanh", likelihood="bernoulli"),
    "two-hidden-gaussian": dict(x_dim=4, z_dim=2, hidden=(5, 3), activation="softplus", likelihood="gaussian"),
}
CONFIG_PARAMS = [pytest.param(c, id=name) for name, c in CONFIGS.items()]   # every one, with its id


def perturb(model, seed=4):
    """Every weight moved by 0.3 N(0, 1), biases off zero, so every term of the gradient is exercised."""
    r = np.random.default_rng(seed)
    for p in model.params.values():
        p += model.device.asarray(0.3 * r.standard_normal(tuple(p.shape)), dtype="float64")   # in place
    return model


def batch(model, n, k=None, seed=5):
    """x: (N, D) uniform on [0, 1], eps: (N, Z), or (K, N, Z) when k is given; float64 on the model's device."""
    r = np.random.default_rng(seed)
    x = model.device.asarray(r.uniform(size=(n, model.x_dim)), dtype="float64")
    shape = (n, model.z_dim) if k is None else (k, n, model.z_dim)
    return x, model.device.asarray(r.standard_normal(shape), dtype="float64")


def fourth_order_gradient(f, p, h=2e-3):
    """d f / d p for a scalar f() by the five-point stencil (8 (f(+h) - f(-h)) - (f(+2h) - f(-2h))) / 12h:
    truncation O(h^4), so a larger h and a roundoff floor (~ulp(f) / h) 200 times lower than central differences
    at h = 1e-5. ``p`` (any array module) is perturbed in place one element at a time and restored. The
    differences are taken first, so an input the loss does not read (a masked weight) gets exactly 0."""
    g = np.zeros(tuple(p.shape))
    for i in np.ndindex(*g.shape):
        old, values = p[i], []
        for s in (2, 1, -1, -2):
            p[i] = old + s * h
            values.append(float(to_host(f())))
        p[i] = old
        g[i] = (8 * (values[1] - values[2]) - (values[0] - values[3])) / (12 * h)
    return g


def gradcheck_all(model, loss, fourth_order=False):
    """Every parameter's gradient from ``loss() -> (loss, grads, stats)`` against finite differences: max
    relative error <= 1e-6 per parameter. ``fourth_order``: the five-point reference instead of central
    differences at h = 1e-5 (for a loss with gradient entries too small for those to resolve to 1e-6)."""
    _, grads, _ = loss()
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape, name
        num = (fourth_order_gradient(lambda: loss()[0], p) if fourth_order
               else numerical_gradient(lambda: loss()[0], p, np.array(1.0)))
        err = rel_error(grads[name], num)
        assert err <= 1e-6, (name, err)


def same_on_strict_device(make_model, n, k, objective):
    """The loss and every gradient of ``make_model(device)`` on array-api-strict's non-default device equal the
    CPU's to 1e-12 relative: the step holds no NumPy-only call and no host transfer (either raises there), and
    the CPU's gradient, checked against finite differences at this configuration by the caller's module, is the
    strict device's too. (Finite differences run on the CPU only: on the strict device they took seconds.)"""
    out = {}
    for device in ("cpu", "strict"):
        model = make_model(device)
        x, eps = batch(model, n, k)
        loss, grads, _ = model.loss_and_grads(x, eps, objective)
        assert all(type(g) is type(x) for g in grads.values()), device
        out[device] = (to_host(loss), {name: to_host(g) for name, g in grads.items()})
    (loss_cpu, grads_cpu), (loss_strict, grads_strict) = out["cpu"], out["strict"]
    np.testing.assert_allclose(loss_strict, loss_cpu, rtol=1e-12, atol=0)
    assert set(grads_strict) == set(grads_cpu)
    for name, g in grads_cpu.items():
        np.testing.assert_allclose(grads_strict[name], g, rtol=1e-12, atol=1e-12 * np.max(np.abs(g)), err_msg=name)
