"""Tests for minivae/model.py: the whole-model gradient ``loss_and_grads`` against finite differences with the
noise eps held fixed (float64, <= 1e-6), its forward against an independent NumPy/SciPy computation, and the
input checks."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from minivae.backend import to_host
from minivae.gradcheck import directional_check, numerical_gradient, rel_error
from minivae.model import VAE

CONFIGS = [
    dict(x_dim=5, z_dim=2, hidden=(), activation="tanh", likelihood="bernoulli"),
    dict(x_dim=6, z_dim=3, hidden=(4,), activation="tanh", likelihood="bernoulli"),
    dict(x_dim=4, z_dim=2, hidden=(5, 3), activation="softplus", likelihood="gaussian"),
    dict(x_dim=5, z_dim=3, hidden=(4,), activation="sigmoid", likelihood="gaussian"),
    dict(x_dim=5, z_dim=2, hidden=(6,), activation="relu", likelihood="bernoulli"),
]


def make_batch(model, n, seed):
    r = np.random.default_rng(seed)
    x = r.uniform(size=(n, model.x_dim))
    eps = r.standard_normal((n, model.z_dim))
    return model.device.asarray(x, dtype="float64"), model.device.asarray(eps, dtype="float64")


def perturb_params(model, seed):
    """Move the biases off zero so every term of the gradient is exercised."""
    r = np.random.default_rng(seed)
    for p in model.params.values():
        p += model.device.asarray(0.3 * r.standard_normal(tuple(p.shape)), dtype="float64")   # in place


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['hidden']}-{c['activation']}-{c['likelihood']}")
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_loss_and_grads_gradcheck(config, beta):
    model = VAE(**config, dtype="float64", seed=3)
    perturb_params(model, 4)
    x, eps = make_batch(model, 7, 5)
    loss, grads, _ = model.loss_and_grads(x, eps, beta)
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype, name
        num = numerical_gradient(lambda: model.loss_and_grads(x, eps, beta)[0], p, np.array(1.0))
        err = rel_error(grads[name], num)
        assert err <= 1e-6, (name, err)


def test_loss_and_grads_gradcheck_on_strict_device():
    """The same check with every array on array-api-strict's non-default device."""
    model = VAE(**CONFIGS[2], dtype="float64", device="strict", seed=3)
    perturb_params(model, 4)
    x, eps = make_batch(model, 3, 5)
    _, grads, _ = model.loss_and_grads(x, eps)
    for name, p in model.params.items():
        num = numerical_gradient(lambda: model.loss_and_grads(x, eps)[0], p, np.array(1.0))
        assert rel_error(grads[name], num) <= 1e-6, name


def test_loss_and_grads_directional_check():
    """A wider model (64-32-(8)): one directional derivative along a random direction over all parameters."""
    model = VAE(64, 8, hidden=(32,), dtype="float64", seed=1)
    x, eps = make_batch(model, 16, 2)
    _, grads, _ = model.loss_and_grads(x, eps)
    for seed in range(3):
        err = directional_check(lambda: model.loss_and_grads(x, eps)[0], model.params, grads, seed=seed)
        assert err <= 1e-6, err


def reference_loss(model, x, eps, beta):
    """The negative ELBO computed independently: plain NumPy layers, scipy.stats densities."""
    p = {k: to_host(v) for k, v in model.params.items()}
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": scipy.special.expit,
           "softplus": lambda a: np.log1p(np.exp(a)), "identity": lambda a: a}[model.activation]

    def mlp(h, prefix):
        for i in range(len(model.hidden)):
            h = act(h @ p[f"{prefix}.{i}.W"] + p[f"{prefix}.{i}.b"])
        return h

    h = mlp(x, "enc")
    mu, logvar = h @ p["enc.mu.W"] + p["enc.mu.b"], h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    sigma = np.sqrt(np.exp(logvar))
    z = mu + sigma * eps
    out = mlp(z, "dec") @ p["dec.out.W"] + p["dec.out.b"]
    if model.likelihood == "bernoulli":
        log_px = (x * scipy.special.log_expit(out) + (1 - x) * scipy.special.log_expit(-out)).sum(axis=1)
    else:
        log_px = scipy.stats.norm.logpdf(x, out, np.exp(p["dec.logvar"] / 2)).sum(axis=1)
    # KL(q || p) as E_q[log q - log p] is not what we want to Monte Carlo here; use scipy's entropy identity:
    # KL = -H(q) - E_q[log p(z)] with both terms in closed form per dimension.
    entropy = scipy.stats.norm(mu, sigma).entropy().sum(axis=1)
    cross = (0.5 * np.log(2 * np.pi) + 0.5 * (mu**2 + sigma**2)).sum(axis=1)
    kl = cross - entropy
    return np.mean(-log_px + beta * kl), np.mean(-log_px), np.mean(kl)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['hidden']}-{c['activation']}-{c['likelihood']}")
def test_loss_matches_independent_reference(device, config):
    model = VAE(**config, dtype="float64", device=device, seed=3)
    perturb_params(model, 4)
    x, eps = make_batch(model, 9, 5)
    loss, _, stats = model.loss_and_grads(x, eps, 0.7)
    ref_loss, ref_nll, ref_kl = reference_loss(model, to_host(x), to_host(eps), 0.7)
    np.testing.assert_allclose(float(to_host(loss)), ref_loss, rtol=1e-12)
    np.testing.assert_allclose(float(to_host(stats["nll"])), ref_nll, rtol=1e-12)
    np.testing.assert_allclose(float(to_host(stats["kl"])), ref_kl, rtol=1e-12)


def test_encode_decode_shapes_and_types(device):
    model = VAE(6, 3, hidden=(5,), device=device)
    x, eps = make_batch(model, 4, 0)
    x, eps = (device.asarray(to_host(a), dtype="float32") for a in (x, eps))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3) and mu.dtype == device.xp.float32
    assert model.decode(mu)["logits"].shape == (4, 6)
    g = VAE(6, 3, hidden=(5,), likelihood="gaussian", device=device).decode(mu)
    assert g["mean"].shape == (4, 6) and g["logvar"].shape == ()


def test_params_names_shapes_and_init():
    model = VAE(10, 2, hidden=(7, 5), activation="relu", dtype="float64", seed=0)
    shapes = {k: v.shape for k, v in model.params.items()}
    assert shapes == {"enc.0.W": (10, 7), "enc.0.b": (7,), "enc.1.W": (7, 5), "enc.1.b": (5,),
                      "enc.mu.W": (5, 2), "enc.mu.b": (2,), "enc.logvar.W": (5, 2), "enc.logvar.b": (2,),
                      "dec.0.W": (2, 7), "dec.0.b": (7,), "dec.1.W": (7, 5), "dec.1.b": (5,),
                      "dec.out.W": (5, 10), "dec.out.b": (10,)}
    assert all(np.all(model.params[k] == 0) for k in shapes if k.endswith(".b"))
    big = VAE(2000, 2, hidden=(500,), activation="relu", dtype="float64", seed=0)
    assert abs(big.params["enc.0.W"].std() - np.sqrt(2 / 2000)) < 0.01 * np.sqrt(2 / 2000)   # He: N(0, 2/D_in)


def test_same_seed_same_params_and_loss():
    a, b = VAE(8, 2, hidden=(4,), seed=11), VAE(8, 2, hidden=(4,), seed=11)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    x, eps = make_batch(a, 5, 1)
    x, eps = x.astype(np.float32), eps.astype(np.float32)
    assert a.loss_and_grads(x, eps)[0] == b.loss_and_grads(x, eps)[0]


@pytest.mark.parametrize("make_args, message", [
    (lambda m: (np.zeros((3, 5)), np.zeros((3, 2))), "x must have shape"),
    (lambda m: (np.zeros((3, 6), dtype=np.int64), np.zeros((3, 2))), "x must have dtype"),
    (lambda m: (np.zeros((3, 6), dtype=object), np.zeros((3, 2))), "x must have dtype"),
    (lambda m: (np.zeros((0, 6)), np.zeros((0, 2))), "empty batch"),
    (lambda m: (np.zeros(6), np.zeros((1, 2))), "x must have shape"),
    (lambda m: (np.zeros((3, 6)), np.zeros((3, 3))), "eps must have shape"),
    (lambda m: (np.zeros((3, 6)), np.zeros((4, 2))), "eps must have one row per example"),
    (lambda m: ([[0.0] * 6], np.zeros((1, 2))), "x must be an array"),
])
def test_loss_and_grads_rejects_bad_input(make_args, message):
    model = VAE(6, 2, hidden=(3,), dtype="float64")
    with pytest.raises(ValueError, match=message):
        model.loss_and_grads(*make_args(model))


def test_loss_and_grads_rejects_arrays_from_another_device():
    model = VAE(6, 2, hidden=(3,), dtype="float64", device="strict")
    with pytest.raises(ValueError, match="x is a numpy array but the model lives on strict"):
        model.loss_and_grads(np.zeros((2, 6)), np.zeros((2, 2)))


@pytest.mark.parametrize("kwargs, name", [
    (dict(activation="swish"), "activation"), (dict(likelihood="poisson"), "likelihood"),
    (dict(x_dim=0), "x_dim"), (dict(z_dim=-1), "z_dim"), (dict(hidden=(4, 0)), "hidden"),
    (dict(dtype="float16"), "dtype"), (dict(device="tpu"), "device"), (dict(seed=-1), "seed"),
])
def test_constructor_rejects_bad_arguments(kwargs, name):
    args = dict(x_dim=6, z_dim=2) | kwargs
    with pytest.raises(ValueError, match=name):
        VAE(**args)


@pytest.mark.parametrize("beta", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_beta_is_rejected(beta):
    model = VAE(6, 2, hidden=(3,), dtype="float64")
    with pytest.raises(ValueError, match="beta"):
        model.loss_and_grads(np.zeros((2, 6)), np.zeros((2, 2)), beta)
