"""Tests for minivae/gradcheck.py: the checker itself must pass a right gradient and fail a wrong one."""
import numpy as np
import pytest

from minivae.gradcheck import check_backward, directional_check, numerical_gradient, rel_error


def test_rel_error_cs231n():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([0.0]), np.array([1e-10])) == pytest.approx(1e-2)   # the 1e-8 floor


def test_numerical_gradient_known_function(rng):
    """f(x) = sin(x) * dout elementwise: the gradient is cos(x) * dout, to O(h^2) + roundoff."""
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    num = numerical_gradient(lambda: np.sin(x), x, dout)
    np.testing.assert_allclose(num, np.cos(x) * dout, rtol=1e-8, atol=1e-10)


def test_numerical_gradient_restores_input(rng):
    x = rng.standard_normal(5)
    before = x.copy()
    numerical_gradient(lambda: x**3, x, np.ones(5))
    np.testing.assert_array_equal(x, before)


def test_check_backward_catches_wrong_backward(rng):
    """A backward with a factor off by 1e-4 or a missing transpose is caught at the 1e-6 tolerance."""
    def square_forward(x):
        return x * x, x

    x = rng.standard_normal((4, 3))
    assert max(check_backward(square_forward, lambda dy, c: 2 * c * dy, (x,))) < 1e-9
    assert max(check_backward(square_forward, lambda dy, c: 2.0002 * c * dy, (x,))) > 1e-6

    def matmul_forward(a, b):
        return a @ b, (a, b)

    a, b = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    wrong = check_backward(matmul_forward, lambda dy, c: (dy @ c[1], c[0].T @ dy), (a, b))
    assert wrong[0] > 1e-2 and wrong[1] < 1e-9


def test_check_backward_requires_float64():
    with pytest.raises(ValueError, match="float64"):
        check_backward(lambda x: (x, None), lambda dy, c: dy, (np.ones(3, dtype=np.float32),))


def test_directional_check(rng):
    params = {"a": rng.standard_normal(5), "b": rng.standard_normal((2, 2))}

    def f():
        return np.sum(params["a"] ** 2) + np.sum(np.sin(params["b"]))

    good = {"a": 2 * params["a"], "b": np.cos(params["b"])}
    bad = {"a": 2 * params["a"], "b": np.cos(params["b"]) * 1.01}
    assert directional_check(f, params, good) < 1e-7
    assert directional_check(f, params, bad) > 1e-4
    np.testing.assert_array_equal(params["a"], good["a"] / 2)    # restored
