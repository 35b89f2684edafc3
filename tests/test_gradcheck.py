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


# ---- minivae gradcheck: every op pair and the whole model, as a table ------------------------------------------

def gradcheck_table(capsys, argv=("gradcheck",)):
    """Runs the command; returns (exit status, {check name: (shape, error, limit, result)}, last line)."""
    from minivae.cli import main
    status = main(list(argv))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["check", "shape", "rel.", "error", "limit", "result"]
    rows = {}
    for line in lines[1:-1]:
        *name_shape, error, limit, result = line.rsplit(None, 3)
        name, shape = name_shape[0].rsplit("  ", 1)
        rows[name.strip()] = (shape.strip(), float(error), float(limit), result)
    return status, rows, lines[-1]


def test_gradcheck_command_checks_every_pair_and_model(capsys):
    import inspect
    from minivae.gradcheck import LIMIT, MODEL_LIKELIHOODS
    from minivae.ops import pairs
    status, rows, last = gradcheck_table(capsys)
    assert status == 0
    expected = {f"{p.key} d{list(inspect.signature(p.forward).parameters)[j]}" for p in pairs() for j in p.spec.wrt}
    assert expected <= set(rows)                                   # every differentiated input of every pair
    models = [name for name in rows if name.startswith("model ")]
    assert len(models) == len(MODEL_LIKELIHOODS) * 2 * 2           # x prior normal / mog x ELBO / L_3
    for prior in ("normal", "mog"):
        for objective in ("ELBO", "L_3"):
            assert sum(f", {prior}, {objective} [" in m for m in models) == len(MODEL_LIKELIHOODS)
    assert len(rows) == len(expected) + len(models)
    for name, (_shape, error, limit, result) in rows.items():
        assert limit == LIMIT == 1e-6 and 0 <= error <= limit and result == "ok", name
    assert last.startswith(f"{len(rows)} of {len(rows)} checks within 1e-06")


def test_gradcheck_command_fails_on_a_broken_op_backward(capsys, monkeypatch):
    """tanh's backward off by a factor 1 + 1e-4: its row fails, the others pass, the exit status is 1."""
    import minivae.ops
    real = minivae.ops.pairs()
    broken = tuple(p._replace(backward=lambda dy, c, b=p.backward: 1.0001 * b(dy, c)) if p.key == "layers.tanh"
                   else p for p in real)
    monkeypatch.setattr(minivae.ops, "pairs", lambda: broken)
    status, rows, last = gradcheck_table(capsys, ("gradcheck", "--only", "layers."))
    assert status == 1
    assert rows["layers.tanh dx"][3] == "FAIL" and rows["layers.tanh dx"][1] > 1e-5
    assert all(r[3] == "ok" for name, r in rows.items() if name != "layers.tanh dx")
    assert last.startswith(f"{len(rows) - 1} of {len(rows)} checks")


def test_gradcheck_command_fails_on_a_broken_model_backward(capsys, monkeypatch):
    """The closed-form KL's gradient into mu off by 1e-4 (its op stays right): exactly the models that use it
    (the N(0, I) prior with the ELBO) fail."""
    from minivae.parts.kl_term import ClosedFormKL
    real = ClosedFormKL.backward

    def broken(self, dkl, cache, grads):
        dmu, dlogvar, dz, dlogq = real(self, dkl, cache, grads)
        return 1.0001 * dmu, dlogvar, dz, dlogq
    monkeypatch.setattr(ClosedFormKL, "backward", broken)
    status, rows, _ = gradcheck_table(capsys, ("gradcheck", "--only", "model "))
    assert status == 1
    for name, (_, _error, _, result) in rows.items():
        assert (result == "FAIL") == (", normal, ELBO [" in name), name
