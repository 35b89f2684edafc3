"""Tests for minivae/optim.py: Adam and SGD against the update formulas written out independently, in-place
updates, state round trips, and bad hyperparameters."""
import numpy as np
import pytest

from minivae.backend import to_host
from minivae.optim import SGD, Adam


def reference_adam(theta, grads, lr, b1, b2, eps):
    """Kingma & Ba (2015), Algorithm 1, written out with explicit bias-corrected moments."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def test_adam_matches_reference_formula(device, rng):
    theta0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(25)]
    params = {"W": device.asarray(theta0.copy())}
    opt = Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for g in grads:
        opt.step({"W": device.asarray(g)})
    np.testing.assert_allclose(to_host(params["W"]), reference_adam(theta0, grads, 0.01, 0.8, 0.99, 1e-6),
                               rtol=1e-12, atol=1e-14)
    assert opt.t == 25


def test_adam_first_step_is_lr_times_sign(rng):
    """With m and v bias-corrected, step 1 moves each parameter by lr * g / (|g| + eps) ~ lr * sign(g)."""
    g = rng.standard_normal(6) * 100
    params = {"b": np.zeros(6)}
    Adam(params, lr=0.1, eps=1e-12).step({"b": g})
    np.testing.assert_allclose(params["b"], -0.1 * np.sign(g), rtol=1e-10)


def test_sgd_with_momentum_matches_reference(rng):
    theta0, grads = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(10)]
    params = {"p": theta0.copy()}
    opt = SGD(params, lr=0.05, momentum=0.9)
    v, theta = np.zeros(5), theta0.copy()
    for g in grads:
        opt.step({"p": g})
        v = 0.9 * v + g
        theta = theta - 0.05 * v
    np.testing.assert_allclose(params["p"], theta, rtol=1e-13)


def test_updates_are_in_place_and_keep_dtype(device, rng):
    params = {"W": device.asarray(rng.standard_normal((2, 3)), dtype="float32"),
              "s": device.asarray(0.5, dtype="float32")}
    before = {k: id(v) for k, v in params.items()}
    opt = Adam(params)
    opt.step({k: v * 0.0 + 1.0 for k, v in params.items()})
    assert {k: id(v) for k, v in params.items()} == before
    assert all(v.dtype == device.xp.float32 for v in params.values())
    assert params["s"].shape == ()


def test_adam_state_round_trip(rng):
    grads = [rng.standard_normal(4) for _ in range(6)]
    a = {"p": np.ones(4)}
    opt_a = Adam(a, lr=0.01)
    for g in grads[:3]:
        opt_a.step({"p": g})
    state = opt_a.state_dict()
    b = {"p": a["p"].copy()}
    opt_b = Adam(b, lr=0.01)
    opt_b.load_state_dict({k: ({n: x.copy() for n, x in v.items()} if isinstance(v, dict) else v)
                           for k, v in state.items()})
    for g in grads[3:]:
        opt_a.step({"p": g})
        opt_b.step({"p": g})
    np.testing.assert_array_equal(a["p"], b["p"])


def test_load_state_dict_rejects_mismatch():
    opt = Adam({"p": np.ones(4)})
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({"name": "adam", "t": 1, "m": {"p": np.ones(3)}, "v": {"p": np.ones(3)}})
    with pytest.raises(ValueError, match="sgd"):
        opt.load_state_dict({"name": "sgd", "t": 1, "v": {"p": np.ones(4)}})


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf"), "0.1"])
def test_bad_learning_rate_names_lr(lr):
    with pytest.raises(ValueError, match="lr"):
        Adam({"p": np.ones(2)}, lr=lr)
    with pytest.raises(ValueError, match="lr"):
        SGD({"p": np.ones(2)}, lr=lr)


@pytest.mark.parametrize("device_name", ["cpu", "strict"])
@pytest.mark.parametrize("kernels_on", [True, False])
def test_adam_flushes_subnormal_moments(monkeypatch, device_name, kernels_on):
    """A weight whose gradient turns zero (a dead unit, an always-black pixel): in float32 its m decays as 0.9^t
    into the subnormals and sticks there (0.9 x 4 units of the last place rounds back to 4 units), so every later
    step does arithmetic on subnormals. Adam flushes m and v every FLUSH_EVERY steps: at that step the subnormal
    elements become exactly 0, the normal ones are untouched, and the parameter of the flushed m does not move."""
    from minivae import kernels, optim
    from minivae.backend import get_device
    monkeypatch.setattr(kernels, "ENABLED", kernels_on)
    device = get_device(device_name)
    tiny, unit = np.finfo(np.float32).smallest_normal, np.float32(2.0**-149)
    p = device.asarray(np.ones(3, np.float32))
    opt = Adam({"w": p})
    zero = device.asarray(np.zeros(3, np.float32))
    opt.step({"w": device.asarray(np.array([1e-3, 1e-3, 0.0], np.float32))})         # t = 1
    opt.m["w"][...] = device.asarray(np.array([4 * unit, 1e-3, 0.0], np.float32))      # m[0]: 4 units, stuck
    opt.v["w"][...] = device.asarray(np.array([1e-3, 1e-3, 3 * tiny / 4], np.float32))  # v[2]: subnormal
    for _ in range(optim.FLUSH_EVERY - 2):         # t = 2 .. FLUSH_EVERY - 1: no flush yet
        opt.step({"w": zero})
    assert to_host(opt.m["w"])[0] == 4 * unit      # 0.9^98 times it is still itself: stuck without a flush
    p_before = to_host(p).copy()
    opt.step({"w": zero})                          # t = FLUSH_EVERY: the update, then the flush
    m, v = to_host(opt.m["w"]), to_host(opt.v["w"])
    assert m[0] == 0.0 and v[2] == 0.0             # the subnormals are gone
    assert m[1] > tiny and v[0] > tiny and v[1] > tiny  # the normal elements are not
    assert to_host(p)[0] == p_before[0]            # the flushed m moved nothing
