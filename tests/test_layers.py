"""Tests for minivae/layers.py: forwards against independent references, backwards against finite
differences (float64, relative error <= 1e-6), on every device."""
import numpy as np
import pytest
import scipy.special

from minivae import layers
from minivae.backend import to_host

SHAPES = [(1, 1), (3, 5), (7, 2)]
ACTIVATIONS = sorted(layers.ACTIVATIONS)

# Independent references (SciPy / plain NumPy definitions, not the stable forms the ops use).
REFERENCE = {
    "tanh": np.tanh,
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "sigmoid": scipy.special.expit,
    "softplus": lambda x: np.log(1.0 + np.exp(x)),
    "identity": lambda x: x,
}
DERIVATIVE = {
    "tanh": lambda x: 1.0 / np.cosh(x) ** 2,
    "relu": lambda x: (x > 0).astype(float),
    "sigmoid": lambda x: scipy.special.expit(x) * scipy.special.expit(-x),
    "softplus": scipy.special.expit,
    "identity": np.ones_like,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_forward_matches_reference(device, rng, shape):
    n, d_in = shape
    x, W, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, 4)), rng.standard_normal(4)
    y, _ = layers.linear_forward(device.asarray(x), device.asarray(W), device.asarray(b))
    ref = np.einsum("ni,io->no", x, W) + b
    np.testing.assert_allclose(to_host(y), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_matches_reference(device, rng, name):
    x = rng.standard_normal((6, 5)) * 4.0
    forward, _ = layers.ACTIVATIONS[name]
    y, _ = forward(device.asarray(x))
    np.testing.assert_allclose(to_host(y), REFERENCE[name](x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_matches_reference(device, rng, name):
    """dx = dy * f'(x), with f' from an independent formula, at an upstream gradient dy that is not all ones."""
    x, dy = rng.standard_normal((6, 5)) * 4.0, rng.standard_normal((6, 5))
    forward, backward = layers.ACTIVATIONS[name]
    _, cache = forward(device.asarray(x))
    dx = backward(device.asarray(dy), cache)
    np.testing.assert_allclose(to_host(dx), dy * DERIVATIVE[name](x), rtol=1e-12, atol=1e-15)


def test_relu_derivative_at_zero_is_zero(device):
    """At exactly 0 relu's derivative is taken to be 0 (derivations/activations.md#relu)."""
    x = device.asarray(np.array([[-1.0, 0.0, 2.0]]))
    y, cache = layers.relu_forward(x)
    dx = layers.relu_backward(device.asarray(np.array([[5.0, 5.0, 5.0]])), cache)
    np.testing.assert_array_equal(to_host(dx), [[0.0, 0.0, 5.0]])


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "tanh"])
def test_activation_stable_at_extremes(name):
    """The stable forms give finite values and derivatives where the textbook formulas overflow."""
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    forward, backward = layers.ACTIVATIONS[name]
    with np.errstate(over="raise", divide="raise", invalid="raise"):   # underflow to 0 is fine
        y, cache = forward(x)
        dx = backward(np.ones_like(x), cache)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    if name == "softplus":
        np.testing.assert_allclose(y, np.logaddexp(0.0, x), rtol=1e-15)
        np.testing.assert_allclose(dx, scipy.special.expit(x), rtol=1e-12, atol=0)
    if name == "sigmoid":
        np.testing.assert_allclose(y, scipy.special.expit(x), rtol=1e-15)


def test_dtype_and_namespace_are_preserved(device, rng):
    x32 = device.asarray(rng.standard_normal((3, 4)), dtype="float32")
    for name in ACTIVATIONS:
        forward, backward = layers.ACTIVATIONS[name]
        y, cache = forward(x32)
        dx = backward(x32, cache)
        assert y.dtype == x32.dtype and dx.dtype == x32.dtype, name
        assert type(y) is type(x32) and type(dx) is type(x32), name


def test_unknown_activation_names_the_argument():
    with pytest.raises(ValueError, match="activation"):
        layers.get_activation("swish")
