"""Tests for minivae/backend.py: dispatch by array type, explicit transfers, the proof that the training step holds
no NumPy-only call (it runs unmodified on array-api-strict's non-default device), and the CuPy path on a GPU."""
import numpy as np
import pytest

from minivae.backend import DeviceError, array_namespace, get_device, sum_to_shape, to_host
from minivae.gradcheck import directional_check, numerical_gradient, rel_error
from minivae.model import VAE
from minivae.optim import Adam
from minivae.rng import RNG
from minivae.train import fit, train


def test_array_namespace_dispatch():
    strict = get_device("strict")
    assert array_namespace(np.ones(2), 1.0, None) is np
    assert array_namespace(strict.asarray(np.ones(2))) is strict.xp
    with pytest.raises(TypeError, match="different array modules"):
        array_namespace(np.ones(2), strict.asarray(np.ones(2)))
    with pytest.raises(TypeError, match="expected an array"):
        array_namespace([1.0, 2.0])


def test_strict_device_refuses_implicit_numpy_conversion():
    """What makes the strict device a stand-in for CuPy: np.asarray on its arrays is an error."""
    a = get_device("strict").asarray(np.ones(3))
    with pytest.raises(RuntimeError):
        np.asarray(a)
    np.testing.assert_array_equal(to_host(a), np.ones(3))    # the explicit path works


@pytest.mark.parametrize("shape", [(), (5,), (1, 5), (4, 1), (4, 5)])
def test_sum_to_shape(device, rng, shape):
    g = rng.standard_normal((4, 5))
    ref = g.sum(axis=0) if shape == (5,) else g.sum() if shape == () else g.sum(
        axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
    out = sum_to_shape(device.asarray(g), shape)
    assert tuple(out.shape) == shape
    np.testing.assert_allclose(to_host(out), ref, rtol=1e-14)


def test_rng_same_seed_same_stream_on_every_device():
    a = RNG(5).normal((3, 2), get_device("cpu"), "float64")
    b = RNG(5).normal((3, 2), get_device("strict"), "float64")
    np.testing.assert_array_equal(a, to_host(b))
    r = RNG(5)
    state = r.state
    first = r.permutation(10)
    r.set_state(state)
    np.testing.assert_array_equal(r.permutation(10), first)


def test_unknown_device_names_the_argument():
    with pytest.raises(ValueError, match="device must be one of"):
        get_device("tpu")


def test_gpu_without_cupy_is_a_device_error():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    with pytest.raises(DeviceError, match="--device gpu needs CuPy"):
        get_device("gpu")


def test_training_steps_run_on_array_api_strict_device(rng):
    """A few Adam steps of the full model with every array on array_api_strict.Device('device1'): no step
    converts to NumPy behind the user's back. The result equals the same steps on NumPy (float64)."""
    results = {}
    for name in ("strict", "cpu"):
        device = get_device(name)
        model = VAE(12, 3, hidden=(8, 6), activation="tanh", dtype="float64", device=device, seed=2)
        opt = Adam(model.params, lr=1e-2)
        r = RNG(4)
        x = device.asarray(np.random.default_rng(0).uniform(size=(40, 12)))
        losses = []
        for _step in range(5):
            eps = r.normal((40, 3), device, "float64")
            loss, grads, stats = model.loss_and_grads(x, eps)
            opt.step(grads)
            assert array_namespace(loss, stats["kl"], stats["nll"], *grads.values()) is device.xp
            assert all(g.device == x.device for g in grads.values())
            losses.append(float(to_host(loss)))
        results[name] = (losses, {k: to_host(v) for k, v in model.params.items()})
    np.testing.assert_allclose(results["strict"][0], results["cpu"][0], rtol=1e-12)
    assert results["cpu"][0][-1] < results["cpu"][0][0]
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(results["strict"][1][k], v, rtol=1e-11, atol=1e-14)


def test_train_loop_runs_on_array_api_strict_device(tmp_path):
    """The whole training loop (data order, noise, steps, held-out evaluation, checkpoint) on the strict
    device, and it matches the NumPy run."""
    kw = dict(epochs=1, batch_size=256, hidden=(16,), z_dim=2, dtype="float64", log=lambda s: None)
    strict = train(device="strict", out=str(tmp_path / "strict"), **kw)
    cpu = train(device="cpu", out=str(tmp_path / "cpu"), **kw)
    assert strict.history[0]["heldout_neg_elbo"] == pytest.approx(cpu.history[0]["heldout_neg_elbo"], rel=1e-12)
    assert (tmp_path / "strict" / "checkpoint.npz").exists()


def test_train_loop_with_warmup_iw_and_mog_on_array_api_strict_device(tmp_path):
    """The same with the objective and prior options: a KL warm-up, K = 2 importance samples (eps of shape
    (K, B, Z)) and the learned mixture prior (its sampled KL, its parameters in the optimizer) on the strict
    device, matching NumPy."""
    kw = dict(epochs=1, batch_size=256, hidden=(16,), z_dim=2, dtype="float64", log=lambda s: None,
              kl_warmup_epochs=2, iw_samples=2, prior="mog", prior_components=3)
    strict = train(device="strict", out=str(tmp_path / "strict"), **kw)
    cpu = train(device="cpu", out=str(tmp_path / "cpu"), **kw)
    for key in ("train_loss", "heldout_neg_elbo", "kl_weight"):
        assert strict.history[0][key] == pytest.approx(cpu.history[0][key], rel=1e-12), key
    np.testing.assert_allclose(to_host(strict.model.params["prior.mu"]), cpu.model.params["prior.mu"], rtol=1e-11)


@pytest.mark.parametrize("options", [dict(posterior="flow", flow_steps=2), dict(prior="vamp", pseudo_inputs=3),
                                     dict(decoder="made", made_hidden=(70, 70))], ids=["flow", "vamp", "made"])
def test_train_loop_with_new_parts_on_array_api_strict_device(tmp_path, options):
    """The flow posterior, the VampPrior and the MADE decoder on the strict device: a step of each reads no value
    back to the host (array-api-strict refuses what NumPy would silently allow), and it matches the NumPy run."""
    kw = dict(epochs=1, batch_size=256, hidden=(16,), z_dim=2, dtype="float64", log=lambda s: None, **options)
    if options.get("decoder") == "made":
        # The MADE decoder on digits (D = 64, width 70) spent ~100 s in the held-out evaluation (its exact
        # log p(x) over a grid of z) on array-api-strict; a small array run (D = 6, width 8) takes every same
        # path (steps, held-out evaluation, exact log p(x), checkpoint) in ~2 s.
        gen = np.random.default_rng(0)
        x, v = gen.uniform(size=(48, 6)), gen.uniform(size=(16, 6))
        kw.update(batch_size=16, hidden=(8,), made_hidden=(8, 8))
        strict = fit(x, v, device="strict", out=str(tmp_path / "strict"), **kw)
        cpu = fit(x, v, device="cpu", out=str(tmp_path / "cpu"), **kw)
        assert strict.history[0]["exact_converged"] and (tmp_path / "strict" / "checkpoint.npz").exists()
        assert strict.history[0]["heldout_log_px"] == pytest.approx(cpu.history[0]["heldout_log_px"], rel=1e-12)
    else:
        strict = train(device="strict", out=str(tmp_path / "strict"), **kw)
        cpu = train(device="cpu", out=str(tmp_path / "cpu"), **kw)
    for key in ("train_loss", "heldout_neg_elbo"):
        assert strict.history[0][key] == pytest.approx(cpu.history[0][key], rel=1e-12), key


# ---- on a GPU (marker gpu; skipped where CuPy or a CUDA GPU is missing) ----------------------------------------
# With the same seed, data and noise, drawn on the host and moved explicitly, training on CuPy follows NumPy's loss
# trajectory to 1e-5 relative in float64 over 50 Adam steps, and the whole-model gradient passes the
# finite-difference checks on CuPy. The op-level checks run on CuPy through the ``device`` fixture
# (tests/conftest.py, tests/test_ops.py), and the fused CuPy kernels are checked in tests/test_kernels.py.

def _gpu():
    try:
        return get_device("gpu")
    except DeviceError as e:
        return str(e)


GPU = _gpu()
needs_gpu = pytest.mark.skipif(isinstance(GPU, str), reason=f"no CuPy/CUDA GPU ({GPU})")

GPU_CONFIGS = [
    dict(x_dim=64, z_dim=4, hidden=(32,), activation="relu", likelihood="bernoulli"),
    dict(x_dim=16, z_dim=2, hidden=(24, 12), activation="tanh", likelihood="gaussian"),
]


def _trajectory(device_name, config, steps, x_host):
    """Adam on a fixed batch; the noise of every step drawn on the host by one seeded RNG, then moved."""
    device = get_device(device_name)
    model = VAE(**config, dtype="float64", device=device, seed=7)
    opt = Adam(model.params, lr=3e-3)
    rng = RNG(11)
    x = device.asarray(x_host, dtype="float64")
    losses = []
    for _ in range(steps):
        eps = rng.normal((x_host.shape[0], model.z_dim), device, "float64")
        loss, grads, _ = model.loss_and_grads(x, eps)
        opt.step(grads)
        losses.append(float(to_host(loss)))
    return np.array(losses), {k: to_host(v) for k, v in model.params.items()}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: f"{c['activation']}-{c['likelihood']}")
def test_cupy_loss_trajectory_matches_numpy(config):
    r = np.random.default_rng(3)
    x_host = r.uniform(size=(96, config["x_dim"]))
    if config["likelihood"] == "bernoulli":
        x_host = (x_host < 0.4).astype(np.float64)
    cpu_losses, cpu_params = _trajectory("cpu", config, 50, x_host)
    gpu_losses, gpu_params = _trajectory("gpu", config, 50, x_host)
    assert cpu_losses[-1] < cpu_losses[0]                        # it trains
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    for k, v in cpu_params.items():
        np.testing.assert_allclose(gpu_params[k], v, rtol=1e-5, atol=1e-8, err_msg=k)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: f"{c['activation']}-{c['likelihood']}")
def test_cupy_whole_model_gradcheck(config):
    """Element-wise central differences for the small parameters, one directional derivative over all of them."""
    model = VAE(**config, dtype="float64", device="gpu", seed=3)
    r = np.random.default_rng(4)
    for p in model.params.values():
        p += model.device.asarray(0.3 * r.standard_normal(tuple(p.shape)), dtype="float64")
    x = model.device.asarray(r.uniform(size=(5, model.x_dim)), dtype="float64")
    eps = model.device.asarray(r.standard_normal((5, model.z_dim)), dtype="float64")
    _, grads, _ = model.loss_and_grads(x, eps)
    for name, p in model.params.items():
        if int(np.prod(p.shape)) <= 64:
            num = numerical_gradient(lambda: model.loss_and_grads(x, eps)[0], p, np.array(1.0))
            assert rel_error(grads[name], num) <= 1e-6, name
    for seed in range(3):
        err = directional_check(lambda: model.loss_and_grads(x, eps)[0], model.params, grads, seed=seed)
        assert err <= 1e-6, err


@pytest.mark.gpu
@needs_gpu
def test_cupy_step_stays_on_the_device():
    """Every gradient and the loss are CuPy arrays: nothing in the step came back to the host."""
    import cupy
    model = VAE(12, 3, hidden=(8,), dtype="float32", device="gpu")
    x = model.device.asarray(np.random.default_rng(0).uniform(size=(10, 12)), dtype="float32")
    eps = model.device.asarray(np.random.default_rng(1).standard_normal((10, 3)), dtype="float32")
    loss, grads, stats = model.loss_and_grads(x, eps)
    Adam(model.params).step(grads)
    assert all(isinstance(a, cupy.ndarray) for a in (loss, *grads.values(), *stats.values(), *model.params.values()))
