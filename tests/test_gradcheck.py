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
# One run of the command serves the three tests below (it takes seconds): run with two faults planted, tanh's op
# backward off by a factor 1 + 1e-4 and the closed-form KL's gradient into mu off by the same inside the model
# (its op stays right), so every other row must still pass and exactly the planted ones fail.

def parse_table(out):
    """The command's output -> ({check name: (shape, error, limit, result)}, last line)."""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["check", "shape", "rel.", "error", "limit", "result"]
    rows = {}
    for line in lines[1:-1]:
        *name_shape, error, limit, result = line.rsplit(None, 3)
        name, shape = name_shape[0].rsplit("  ", 1)
        rows[name.strip()] = (shape.strip(), float(error), float(limit), result)
    return rows, lines[-1]


def planted_fault(row):
    return row == "layers.tanh dx" or ", normal, ELBO [" in row


@pytest.fixture(scope="module")
def faulty_table():
    """(exit status, rows, last line) of ``minivae gradcheck`` with the two faults planted."""
    import contextlib
    import io

    import minivae.ops
    from minivae.cli import main
    from minivae.parts.kl_term import ClosedFormKL
    real_pairs, real_kl = minivae.ops.pairs(), ClosedFormKL.backward
    broken_pairs = tuple(p._replace(backward=lambda dy, c, b=p.backward: 1.0001 * b(dy, c))
                         if p.key == "layers.tanh" else p for p in real_pairs)

    def broken_kl(self, dkl, cache, grads):
        dmu, dlogvar, dz, dlogq = real_kl(self, dkl, cache, grads)
        return 1.0001 * dmu, dlogvar, dz, dlogq

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(minivae.ops, "pairs", lambda: broken_pairs)
        mp.setattr(ClosedFormKL, "backward", broken_kl)
        status = main(["gradcheck"])
    return (status, *parse_table(out.getvalue()))


def test_gradcheck_command_checks_every_pair_and_model(faulty_table):
    """A row per differentiated input of every pair and per model (likelihood x prior x objective); every row
    but the planted faults within 1e-6; the last line counts them."""
    import inspect

    from minivae.gradcheck import LIMIT, MODEL_LIKELIHOODS
    from minivae.ops import pairs
    status, rows, last = faulty_table
    expected = {f"{p.key} d{list(inspect.signature(p.forward).parameters)[j]}" for p in pairs() for j in p.spec.wrt}
    assert expected <= set(rows)                                   # every differentiated input of every pair
    models = [name for name in rows if name.startswith("model ")]
    assert len(models) == len(MODEL_LIKELIHOODS) * 2 * 2           # x prior normal / mog x ELBO / L_3
    for prior in ("normal", "mog"):
        for objective in ("ELBO", "L_3"):
            assert sum(f", {prior}, {objective} [" in m for m in models) == len(MODEL_LIKELIHOODS)
    assert len(rows) == len(expected) + len(models)
    for name, (_shape, error, limit, result) in rows.items():
        assert limit == LIMIT == 1e-6, name
        if not planted_fault(name):
            assert 0 <= error <= limit and result == "ok", name
    failed = sum(planted_fault(name) for name in rows)
    assert failed == 1 + len(MODEL_LIKELIHOODS)
    assert last.startswith(f"{len(rows) - failed} of {len(rows)} checks within 1e-06")


def test_gradcheck_command_fails_on_a_broken_op_backward(faulty_table):
    """tanh's row fails (its error ~1e-4, far above the limit) and the exit status is 1."""
    status, rows, _ = faulty_table
    assert status == 1
    assert rows["layers.tanh dx"][3] == "FAIL" and rows["layers.tanh dx"][1] > 1e-5


def test_gradcheck_command_fails_on_a_broken_model_backward(faulty_table):
    """Exactly the models that use the closed-form KL (the N(0, I) prior with the ELBO) fail."""
    _, rows, _ = faulty_table
    for name, (_, _error, _, result) in rows.items():
        if name.startswith("model "):
            assert (result == "FAIL") == (", normal, ELBO [" in name), name


def test_gradcheck_command_exits_0_when_every_check_passes_and_filters_by_name(capsys, monkeypatch):
    """The table's status and --only, on a planted list of checks (the real ones run above): all within the
    limit gives 0; --only keeps the rows whose name contains the text, and one that matches none is an error."""
    import minivae.gradcheck
    from minivae.cli import main
    monkeypatch.setattr(minivae.gradcheck, "run_checks", lambda: [("layers.a dx", "(2, 3)", 3e-9, 1e-6),
                                                                   ("model b [W]", "1x5x4", 2e-7, 1e-6)])
    assert main(["gradcheck"]) == 0
    rows, last = parse_table(capsys.readouterr().out)
    assert rows == {"layers.a dx": ("(2, 3)", 3e-9, 1e-6, "ok"), "model b [W]": ("1x5x4", 2e-7, 1e-6, "ok")}
    assert last.startswith("2 of 2 checks within 1e-06")
    assert main(["gradcheck", "--only", "model "]) == 0
    assert list(parse_table(capsys.readouterr().out)[0]) == ["model b [W]"]
    assert main(["gradcheck", "--only", "nothing"]) == 2
    assert "--only 'nothing' matches no check" in capsys.readouterr().err
