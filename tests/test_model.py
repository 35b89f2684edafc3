"""Tests for minivae/model.py: the whole-model gradient ``loss_and_grads`` against finite differences with the
noise eps held fixed (float64, <= 1e-6), its forward against an independent NumPy/SciPy computation.
Its input checks: tests/test_checks.py."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from _fd import perturb, same_on_strict_device
from minivae.backend import to_host
from minivae.gradcheck import complex_step_gradient, directional_check, numerical_gradient, rel_error
from minivae.likelihoods import SIGMA_MIN
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound
from minivae.reparam import LOGVAR_MAX

CONFIGS = {   # by id: every architecture, activation, likelihood and variance the whole-model checks run on
    "linear-tanh-bernoulli":
        dict(x_dim=5, z_dim=2, hidden=(), activation="tanh", likelihood="bernoulli"),
    "one-hidden-tanh-bernoulli":
        dict(x_dim=6, z_dim=3, hidden=(4,), activation="tanh", likelihood="bernoulli"),
    "two-hidden-softplus-gaussian":
        dict(x_dim=4, z_dim=2, hidden=(5, 3), activation="softplus", likelihood="gaussian"),
    "sigmoid-gaussian":
        dict(x_dim=5, z_dim=3, hidden=(4,), activation="sigmoid", likelihood="gaussian"),
    "relu-bernoulli":
        dict(x_dim=5, z_dim=2, hidden=(6,), activation="relu", likelihood="bernoulli"),
    "gaussian-fixed":
        dict(x_dim=4, z_dim=2, hidden=(3,), activation="tanh", likelihood="gaussian", gaussian_variance="fixed",
        sigma=0.4),
    "gaussian-per-dim-floored":
        dict(x_dim=4, z_dim=2, hidden=(3,), activation="tanh", likelihood="gaussian", gaussian_variance="per-dim",
        sigma_min=0.3),
    "gaussian-per-element-floored":
        dict(x_dim=4, z_dim=2, hidden=(3,), activation="tanh", likelihood="gaussian", gaussian_variance="per-element",
        sigma_min=0.3),
    "linear-gaussian-per-element":
        dict(x_dim=4, z_dim=2, hidden=(), activation="tanh", likelihood="gaussian", gaussian_variance="per-element"),
    "categorical":
        dict(x_dim=3, z_dim=2, hidden=(3,), activation="tanh", likelihood="categorical", levels=4),
}


def configs(*names):
    """The CONFIGS named (every one if none), as pytest parameters with their ids."""
    return [pytest.param(CONFIGS[n], id=n) for n in names or CONFIGS]


def make_batch(model, n, seed):
    r = np.random.default_rng(seed)
    x = r.uniform(size=(n, model.x_dim))
    eps = r.standard_normal((n, model.z_dim))
    return model.device.asarray(x, dtype="float64"), model.device.asarray(eps, dtype="float64")


@pytest.mark.parametrize("config", configs())
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_loss_and_grads_gradcheck(config, beta):
    model = VAE(**config, dtype="float64", seed=3)
    perturb(model, 4)
    x, eps = make_batch(model, 7, 5)
    loss, grads, _ = model.loss_and_grads(x, eps, ELBO(beta))
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype, name
        num = numerical_gradient(lambda: model.loss_and_grads(x, eps, ELBO(beta))[0], p, np.array(1.0))
        err = rel_error(grads[name], num)
        assert err <= 1e-6, (name, err)


@pytest.mark.parametrize("config", configs("two-hidden-softplus-gaussian", "gaussian-per-element-floored",
                                            "categorical"))
def test_loss_and_grads_gradcheck_on_strict_device(config):
    """test_loss_and_grads_gradcheck's models (shared, per-element, categorical) on array-api-strict's
    non-default device give the CPU's loss and gradients (tests/_fd.py: same_on_strict_device)."""
    same_on_strict_device(lambda device: perturb(VAE(**config, dtype="float64", device=device, seed=3), 4), 7,
                          None, ELBO())


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
    c = model.config
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "sigmoid": scipy.special.expit,
           "softplus": lambda a: np.log1p(np.exp(a)), "identity": lambda a: a}[c["activation"]]

    def mlp(h, prefix):
        for i in range(len(model.hidden)):
            h = act(h @ p[f"{prefix}.{i}.W"] + p[f"{prefix}.{i}.b"])
        return h

    h = mlp(x, "enc")
    mu, logvar = h @ p["enc.mu.W"] + p["enc.mu.b"], h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    sigma = np.sqrt(np.exp(logvar))
    z = mu + sigma * eps
    h = mlp(z, "dec")
    out = h @ p["dec.out.W"] + p["dec.out.b"]
    if c["likelihood"] == "bernoulli":
        log_px = (x * scipy.special.log_expit(out) + (1 - x) * scipy.special.log_expit(-out)).sum(axis=1)
    elif c["likelihood"] == "categorical":                    # level k = round(x (L - 1)), L logits per pixel
        L = c["levels"]
        k = np.rint(x * (L - 1)).astype(int)
        logp = scipy.special.log_softmax(out.reshape(len(x), model.x_dim, L), axis=2)
        log_px = np.take_along_axis(logp, k[..., None], axis=2)[..., 0].sum(axis=1)
    else:                                                     # variance: sigma^2, or sigma_min^2 + exp(raw)
        if c["gaussian_variance"] == "fixed":
            var = c["sigma"]**2
        elif c["gaussian_variance"] == "per-element":
            var = c["sigma_min"]**2 + np.exp(h @ p["dec.logvar.W"] + p["dec.logvar.b"])
        else:
            var = c["sigma_min"]**2 + np.exp(p["dec.logvar"])
        log_px = scipy.stats.norm.logpdf(x, out, np.sqrt(var)).sum(axis=1)
    # KL(q || p) as E_q[log q - log p] is not what we want to Monte Carlo here; use scipy's entropy identity:
    # KL = -H(q) - E_q[log p(z)] with both terms in closed form per dimension.
    entropy = scipy.stats.norm(mu, sigma).entropy().sum(axis=1)
    cross = (0.5 * np.log(2 * np.pi) + 0.5 * (mu**2 + sigma**2)).sum(axis=1)
    kl = cross - entropy
    return np.mean(-log_px + beta * kl), np.mean(-log_px), np.mean(kl)


@pytest.mark.parametrize("config", configs())
def test_loss_matches_independent_reference(device, config):
    model = VAE(**config, dtype="float64", device=device, seed=3)
    perturb(model, 4)
    x, eps = make_batch(model, 9, 5)
    loss, _, stats = model.loss_and_grads(x, eps, ELBO(0.7))
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


@pytest.mark.parametrize("objective", [ELBO, IWBound])
@pytest.mark.parametrize("beta", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_beta_is_rejected(beta, objective):
    with pytest.raises(ValueError, match="beta"):
        objective(beta)


@pytest.mark.parametrize("objective", [0.5, "iw"])
def test_the_objective_is_an_objective_not_a_number(objective):
    """The objective is explicit: a bare beta (the old third argument) is refused, naming the argument."""
    model = VAE(6, 2, hidden=(3,), dtype="float64")
    with pytest.raises(ValueError, match="objective must be"):
        model.loss_and_grads(np.zeros((2, 6)), np.zeros((2, 2)), objective)


@pytest.mark.parametrize("kwargs, decoder_params", [
    (dict(likelihood="bernoulli"), {"dec.out.W": (5, 10), "dec.out.b": (10,)}),
    (dict(likelihood="gaussian", gaussian_variance="fixed", sigma=0.5), {"dec.out.W": (5, 10), "dec.out.b": (10,)}),
    (dict(likelihood="gaussian"), {"dec.out.W": (5, 10), "dec.out.b": (10,), "dec.logvar": ()}),
    (dict(likelihood="gaussian", gaussian_variance="per-dim"),
     {"dec.out.W": (5, 10), "dec.out.b": (10,), "dec.logvar": (10,)}),
    (dict(likelihood="gaussian", gaussian_variance="per-element"),
     {"dec.out.W": (5, 10), "dec.out.b": (10,), "dec.logvar.W": (5, 10), "dec.logvar.b": (10,)}),
    (dict(likelihood="categorical", levels=17), {"dec.out.W": (5, 170), "dec.out.b": (170,)}),
], ids=lambda v: v.get("gaussian_variance", v.get("likelihood")) if "likelihood" in v else "")
def test_likelihood_params_decode_and_config_round_trip(kwargs, decoder_params):
    """The decoder's head(s) and likelihood parameters per option; decode's shapes; VAE(**config) rebuilds it."""
    model = VAE(10, 2, hidden=(5,), dtype="float64", seed=0, **kwargs)
    shapes = {k: tuple(v.shape) for k, v in model.params.items() if k.startswith("dec.") and not k[4].isdigit()}
    assert shapes == decoder_params
    z = np.random.default_rng(0).standard_normal((3, 2))
    out, c = model.decode(z), model.config
    if c["likelihood"] == "gaussian":
        expected = {"fixed": (), "shared": (), "per-dim": (10,), "per-element": (3, 10)}[c["gaussian_variance"]]
        assert out["mean"].shape == (3, 10) and out["logvar"].shape == expected
        assert np.all(out["logvar"] >= 2 * np.log(c["sigma"] if c["gaussian_variance"] == "fixed"
                                                  else c["sigma_min"]))
    else:
        assert out["logits"].shape == ((3, 10, 17) if c["likelihood"] == "categorical" else (3, 10))
    rebuilt = VAE(**model.config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.params.items()} == {k: v.shape for k, v in model.params.items()}


# ---- objectives and priors (derivations/objectives.md, derivations/prior.md) ------------------------------------

PRIOR_CONFIGS = configs("linear-tanh-bernoulli", "one-hidden-tanh-bernoulli", "two-hidden-softplus-gaussian")


def prior_model(config, prior, device="cpu", components=3):
    model = VAE(**config, dtype="float64", device=device, seed=3, prior=prior, prior_components=components)
    perturb(model, 4)
    return model


def gradcheck_all(model, loss):
    _, grads, _ = loss()
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape, name
        num = numerical_gradient(lambda: loss()[0], p, np.array(1.0))
        err = rel_error(grads[name], num)
        assert err <= 1e-6, (name, err)


@pytest.mark.parametrize("config", PRIOR_CONFIGS)
def test_mog_prior_gradcheck(config):
    """The ELBO with the mixture prior and its sampled KL: every parameter, the prior's included."""
    model = prior_model(config, "mog")
    x, eps = make_batch(model, 5, 5)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO(0.7)))


@pytest.mark.parametrize("prior", ["normal", "mog"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("config", PRIOR_CONFIGS)
def test_iw_loss_and_grads_gradcheck(config, k, prior):
    """The importance-weighted loss with all K noises (K, N, Z) held fixed."""
    model = prior_model(config, prior)
    x, _ = make_batch(model, 4, 5)
    eps = model.device.asarray(np.random.default_rng(6).standard_normal((k, 4, model.z_dim)))
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, IWBound(1.0 if k == 3 else 0.6)))


def test_iw_and_mog_gradcheck_on_strict_device():
    """test_iw_loss_and_grads_gradcheck's mixture prior and K = 3 bound on the strict device."""
    same_on_strict_device(lambda device: prior_model(CONFIGS["one-hidden-tanh-bernoulli"], "mog", device=device),
                          4, 3, IWBound())


def scipy_log_prior(model, z):
    """log p(z) from scipy: N(0, I), or the mixture as a logsumexp of weighted multivariate normal densities."""
    if model.config["prior"] == "normal":
        return scipy.stats.norm.logpdf(z).sum(axis=1)
    logits, mu, logvar = (to_host(model.params[f"prior.{k}"]) for k in ("logits", "mu", "logvar"))
    log_pi = logits - scipy.special.logsumexp(logits)
    terms = [log_pi[c] + scipy.stats.multivariate_normal(mu[c], np.diag(np.exp(logvar[c]))).logpdf(z)
             for c in range(len(logits))]
    return scipy.special.logsumexp(np.stack(terms, axis=-1).reshape(len(z), -1), axis=1)


def sampled_kl_reference(model, x, eps):
    """log q(z|x) - log p(z) at z = mu + sigma eps, the densities from scipy.stats. (N,)"""
    mu, logvar = (to_host(a) for a in model.encode(x))
    sigma = np.exp(logvar / 2)
    z = mu + sigma * to_host(eps)
    return scipy.stats.norm.logpdf(z, mu, sigma).sum(axis=1) - scipy_log_prior(model, z)


@pytest.mark.parametrize("config", PRIOR_CONFIGS)
def test_mog_loss_matches_independent_reference(device, config):
    model = prior_model(config, "mog", device=device)
    x, eps = make_batch(model, 6, 5)
    loss, _, stats = model.loss_and_grads(x, eps, ELBO(0.7))
    _, ref_nll, _ = reference_loss(model, to_host(x), to_host(eps), 0.7)      # its NLL part, from plain NumPy
    ref_kl = np.mean(sampled_kl_reference(model, x, eps))
    np.testing.assert_allclose(float(to_host(stats["kl"])), ref_kl, rtol=1e-11)
    np.testing.assert_allclose(float(to_host(loss)), ref_nll + 0.7 * ref_kl, rtol=1e-11)
    np.testing.assert_allclose(to_host(model.log_prior(x[:, :model.z_dim] * 3.0)),
                               scipy_log_prior(model, to_host(x)[:, :model.z_dim] * 3.0), rtol=1e-12)


@pytest.mark.parametrize("prior", ["normal", "mog"])
def test_iw_at_k_1_is_the_elbo_with_the_sampled_kl(prior):
    """K = 1: the loss is mean(nll + beta (log q - log p)) at the sample. For the mixture that is exactly the
    ELBO loss (whose KL is sampled too), gradients included; for N(0, I) it matches a one-component mixture
    fixed at N(0, I), whose ELBO loss has the sampled KL."""
    model = prior_model(CONFIGS["one-hidden-tanh-bernoulli"], prior, components=1)
    x, eps = make_batch(model, 5, 5)
    loss1, grads1, stats1 = model.loss_and_grads(x, eps[None, ...], IWBound(0.8))
    nll, _ = model.elbo_terms(x, eps)
    expected = np.mean(to_host(nll) + 0.8 * sampled_kl_reference(model, x, eps))
    np.testing.assert_allclose(float(to_host(loss1)), expected, rtol=1e-12)
    if prior == "mog":
        ref_loss, ref_grads, _ = model.loss_and_grads(x, eps, ELBO(0.8))
    else:
        ref_model = VAE(**{**model.config, "prior": "mog", "prior_components": 1}, seed=3)
        ref_model.params.update({k: v.copy() for k, v in model.params.items()})
        ref_model.params.update({"prior.logits": np.zeros(1), "prior.mu": np.zeros((1, model.z_dim)),
                                 "prior.logvar": np.zeros((1, model.z_dim))})
        ref_loss, ref_grads, _ = ref_model.loss_and_grads(x, eps, ELBO(0.8))
    np.testing.assert_allclose(float(to_host(loss1)), float(to_host(ref_loss)), rtol=1e-13)
    for name, g in grads1.items():
        np.testing.assert_allclose(g, ref_grads[name], rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("prior", ["normal", "mog"])
def test_iw_loss_matches_iw_bound_per_example(prior):
    """The training loss for one example and K noises is -L_K of minivae.evaluate.iw_bound with the same noise
    (iw_bound draws eps = RNG(seed).normal((K, N, Z)) when K N fits one chunk)."""
    from minivae.evaluate import iw_bound
    from minivae.rng import RNG
    model = prior_model(CONFIGS["one-hidden-tanh-bernoulli"], prior)
    x, _ = make_batch(model, 4, 5)
    k = 5
    eps = RNG(9).normal((k, 4, model.z_dim), model.device, "float64")
    per_example = iw_bound(model, x, k=k, seed=9)["per_example"]
    for n in range(4):
        loss, _, _ = model.loss_and_grads(x[n:n + 1], eps[:, n:n + 1], IWBound())
        np.testing.assert_allclose(-float(to_host(loss)), per_example[n], rtol=1e-12)
    loss, _, _ = model.loss_and_grads(x, eps, IWBound())
    np.testing.assert_allclose(-float(to_host(loss)), np.mean(per_example), rtol=1e-12)


def test_iw_gradient_is_the_weighted_sum_of_per_sample_gradients():
    """Burda et al.'s Eq. 14 for one example: grad L_K = sum_i w~_i grad log w_i, with each grad log w_i from the
    K = 1 loss at eps_i (whose loss is -log w_i) and w~ the softmax of the log-weights."""
    model = prior_model(CONFIGS["two-hidden-softplus-gaussian"], "mog")
    x, _ = make_batch(model, 1, 5)
    eps = model.device.asarray(np.random.default_rng(6).standard_normal((4, 1, model.z_dim)))
    _, grads, _ = model.loss_and_grads(x, eps, IWBound())
    singles = [model.loss_and_grads(x, eps[i:i + 1], IWBound()) for i in range(4)]
    w_tilde = scipy.special.softmax([-float(to_host(loss)) for loss, _, _ in singles])
    for name, g in grads.items():
        expected = sum(w * single[1][name] for w, single in zip(w_tilde, singles, strict=True))
        np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-14, err_msg=name)


def test_prior_params_config_and_sampling():
    model = VAE(6, 3, hidden=(4,), dtype="float64", seed=2, prior="mog", prior_components=4)
    shapes = {k: v.shape for k, v in model.params.items() if k.startswith("prior.")}
    assert shapes == {"prior.logits": (4,), "prior.mu": (4, 3), "prior.logvar": (4, 3)}
    plain = VAE(6, 3, hidden=(4,), dtype="float64", seed=2)
    assert all(np.array_equal(plain.params[k], model.params[k]) for k in plain.params)   # weights unchanged
    assert np.std(model.params["prior.mu"]) > 0.3 and np.all(model.params["prior.logvar"] == 0)
    rebuilt = VAE(**model.config)
    assert rebuilt.config == model.config
    assert (rebuilt.config["prior"], rebuilt.config["prior_components"]) == ("mog", 4)
    from minivae.rng import RNG
    z = model.sample_prior(1000, RNG(0))
    assert z.shape == (1000, 3) and np.array_equal(z, model.sample_prior(1000, RNG(0)))
    np.testing.assert_array_equal(plain.sample_prior(5, RNG(1)), RNG(1).normal((5, 3), plain.device, "float64"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(prior="cauchy"), "prior must be one of"), (dict(prior="mog", prior_components=0), "prior_components"),
])
def test_bad_prior_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(6, 2, **kwargs)


@pytest.mark.parametrize("shape, message", [((0, 3, 2), "K >= 1"), ((2, 4, 2), "one row per example"),
                                            ((2, 3, 5), "eps must have shape")])
def test_iw_rejects_bad_noise(shape, message):
    model = VAE(6, 2, hidden=(3,), dtype="float64")
    with pytest.raises(ValueError, match=message):
        model.loss_and_grads(np.zeros((3, 6)), np.zeros(shape))


# ---- one chain for every objective; the clamp at the head --------------------------------------------------------

@pytest.mark.parametrize("config", configs("one-hidden-tanh-bernoulli", "gaussian-per-element-floored", "categorical"))
def test_elbo_over_k_samples_is_the_mean_of_k_single_sample_losses(config):
    """ELBO with eps (K, N, Z) runs the one chain over K*N rows: its loss and every gradient equal the mean of the
    K one-sample losses and gradients, and its gradients pass the finite-difference check."""
    model = VAE(**config, dtype="float64", seed=3)
    perturb(model, 4)
    x, _ = make_batch(model, 4, 5)
    eps = np.random.default_rng(7).standard_normal((3, 4, model.z_dim))
    loss, grads, _ = model.loss_and_grads(x, eps, ELBO(0.6))
    singles = [model.loss_and_grads(x, eps[i], ELBO(0.6)) for i in range(3)]
    np.testing.assert_allclose(loss, np.mean([s_[0] for s_ in singles]), rtol=1e-13)
    for name, g in grads.items():
        np.testing.assert_allclose(g, np.mean([s_[1][name] for s_ in singles], axis=0), rtol=1e-10, atol=1e-15,
                                   err_msg=name)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO(0.6)))


def test_the_logvar_clamp_is_applied_once_at_the_head():
    """With enc.logvar.b = 50 every log-variance is beyond LOGVAR_MAX = 40: the encoder reports 40, the loss is the
    closed form at 40 (finite in float32 too), the log-variance head gets exactly zero gradient (the clamp is
    flat), and the one-sample ELBO terms and the log-weights read the same clamped q (derivations/
    reparameterization.md#the-clamp)."""
    for dtype in ("float64", "float32"):
        model = VAE(5, 2, hidden=(3,), dtype=dtype, seed=1)
        model.params["enc.logvar.W"][...] = 0.0
        model.params["enc.logvar.b"][...] = 50.0
        x, eps = (a.astype(dtype) for a in make_batch(model, 4, 2))
        mu, logvar = model.encode(x)
        assert np.all(logvar == 40.0)
        loss, grads, stats = model.loss_and_grads(x, eps)
        assert np.isfinite(loss) and np.all(grads["enc.logvar.W"] == 0) and np.all(grads["enc.logvar.b"] == 0)
        kl40 = 0.5 * np.sum(np.exp(40.0) + np.asarray(mu, np.float64) ** 2 - 1.0 - 40.0, axis=1)
        np.testing.assert_allclose(stats["kl"], np.mean(kl40), rtol=1e-6)
        nll, kl = model.elbo_terms(x, eps)
        log_w = model.log_weights(x, eps[None, ...])                      # sampled KL: log q - log p at z
        z = np.asarray(mu, np.float64) + np.exp(20.0) * np.asarray(eps, np.float64)
        log_q = scipy.stats.norm.logpdf(z, np.asarray(mu, np.float64), np.exp(20.0)).sum(axis=1)
        np.testing.assert_allclose(-log_w[0] - nll, log_q - scipy.stats.norm.logpdf(z).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("free_bits", [0.5, 50.0], ids=["above-the-floor", "below-the-floor"])
def test_free_bits_gradcheck_and_reference(free_bits):
    """ELBO(beta, free_bits): loss = mean(nll) + beta max(lambda, mean(kl)). Above the floor it is the beta-ELBO
    (same loss and gradients); below, the KL's gradient is 0 and the loss is mean(nll) + beta lambda. Both sides
    gradient-checked (<= 1e-6); the batch's mean KL here is ~1.6 nats, far from either floor's kink."""
    model = VAE(**CONFIGS["one-hidden-tanh-bernoulli"], dtype="float64", seed=3)
    perturb(model, 4)
    x, eps = make_batch(model, 7, 5)
    loss, grads, stats = model.loss_and_grads(x, eps, ELBO(0.7, free_bits=free_bits))
    plain, plain_grads, _ = model.loss_and_grads(x, eps, ELBO(0.7))
    nll_only, nll_grads, _ = model.loss_and_grads(x, eps, ELBO(0.0))
    kl = float(to_host(stats["kl"]))
    assert 0.5 < kl < 50.0
    if kl > free_bits:
        np.testing.assert_allclose(float(loss), float(plain), rtol=1e-14)   # mean(nll) + b mean(kl): rounding
        ref_grads = plain_grads
    else:
        np.testing.assert_allclose(float(loss), float(nll_only) + 0.7 * free_bits, rtol=1e-14)
        ref_grads = nll_grads
    for name, g in grads.items():
        np.testing.assert_allclose(g, ref_grads[name], rtol=1e-13, atol=1e-15, err_msg=name)
        num = numerical_gradient(lambda: model.loss_and_grads(x, eps, ELBO(0.7, free_bits=free_bits))[0],
                                 model.params[name], np.array(1.0))
        assert rel_error(g, num) <= 1e-6, name


@pytest.mark.parametrize("value", [-1.0, float("inf"), "2", True])
def test_free_bits_rejects_bad_values(value):
    with pytest.raises(ValueError, match="free_bits"):
        ELBO(1.0, free_bits=value)


# ==== The whole-model backward against complex-step derivatives (from tests/test_derivations.py) ==================
# The forward lines of derivations/elbo.md#whole-model-backward written again in plain, complex-capable NumPy, and
# every gradient of loss_and_grads checked against complex-step derivatives of that re-implementation to 1e-10 (the
# loss to 1e-12): for every likelihood, both objectives, K = 1 and K > 1, both priors, and through the clamp.
# This section is appended whole; it uses the imports at the top of the file and these two.


LOG_2PI = float(np.log(2.0 * np.pi))
CS_ACTIVATIONS = {    # complex-capable forward formulas, independent of the ops
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "identity": lambda x: x,
}


def _cs_logsumexp(a, axis):
    """log sum exp over ``axis``, complex-capable: shifted by the maximum of the real part, a constant, so the
    complex step still sees the exact derivative."""
    m = np.max(np.real(a), axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _reference_vae_loss(p, x, eps, beta, likelihood, activation, n_hidden, objective="elbo", prior="normal",
                        variance="shared", sigma_min=SIGMA_MIN, levels=4):
    """The forward lines of elbo.md#whole-model-backward, written again with plain (complex-capable) numpy.
    eps: (K, N, Z); the K samples broadcast against the encoder's (N, Z) outputs instead of being stacked as rows."""
    act = CS_ACTIVATIONS[activation]
    h = x
    for i in range(n_hidden):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]                                       # (N, Z)
    r = h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    logvar = np.where(np.real(r) > LOGVAR_MAX, LOGVAR_MAX, r)                   # min(r, 40): the clamp
    z = mu + np.exp(logvar / 2.0) * eps                                          # (K, N, Z)
    if objective == "elbo" and prior == "normal":                               # (K, N): the closed form
        kl = 0.5 * np.sum(np.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1) * np.ones(eps.shape[:2])
    else:                                                                        # at the sample: log q - log p
        log_q = -0.5 * np.sum(eps * eps + logvar + LOG_2PI, axis=-1)
        if prior == "normal":
            log_p = -0.5 * np.sum(z * z + LOG_2PI, axis=-1)
        else:
            log_pi = p["prior.logits"] - _cs_logsumexp(p["prior.logits"], 0)     # (C,)
            diff = z[..., None, :] - p["prior.mu"]                               # (K, N, C, Z)
            a = log_pi - 0.5 * np.sum(diff * diff * np.exp(-p["prior.logvar"]) + p["prior.logvar"] + LOG_2PI,
                                      axis=-1)
            log_p = _cs_logsumexp(a, -1)
        kl = log_q - log_p
    h = z
    for i in range(n_hidden):
        h = act(h @ p[f"dec.{i}.W"] + p[f"dec.{i}.b"])
    o = h @ p["dec.out.W"] + p["dec.out.b"]                                      # (K, N, D) or (K, N, D L)
    if likelihood == "bernoulli":
        nll = np.sum(np.log1p(np.exp(o)) - x * o, axis=-1)
    elif likelihood == "categorical":
        a = np.reshape(o, o.shape[:-1] + (x.shape[1], levels))                   # (K, N, D, L)
        onehot = np.rint(x * (levels - 1))[..., None] == np.arange(levels)       # (N, D, L)
        nll = -np.sum(onehot * (a - _cs_logsumexp(a, -1)[..., None]), axis=(-2, -1))
    else:
        raw = h @ p["dec.logvar.W"] + p["dec.logvar.b"] if variance == "per-element" else p["dec.logvar"]
        logvar_x = np.log(sigma_min**2 + np.exp(raw))                            # the variance floor
        nll = 0.5 * np.sum(LOG_2PI + logvar_x + (x - o) ** 2 * np.exp(-logvar_x), axis=-1)
    if objective == "elbo":
        return np.mean(nll + beta * kl)
    log_w = -(nll + beta * kl)                                                   # (K, N)
    return -np.mean(_cs_logsumexp(log_w, 0) - np.log(eps.shape[0]))


def _check_whole_model(model, x, eps, beta, objective, ref):
    """loss_and_grads against ref (the loss as a function of the params dict): the loss to 1e-12, every gradient
    to 1e-10 against complex-step derivatives, with the shape of its parameter."""
    obj = ELBO(beta) if objective == "elbo" else IWBound(beta)
    loss, grads, _ = model.loss_and_grads(x, eps, objective=obj)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in model.params.items()}
    assert float(loss) == pytest.approx(ref(params), rel=1e-12)
    problems = []
    for k, value in params.items():
        cs = complex_step_gradient(lambda a, k=k: ref({**params, k: a}), value)
        err = rel_error(grads[k], cs)
        if np.shape(grads[k]) != np.shape(value) or err > 1e-10:
            problems.append(f"{k}: rel error {err:.2e}")
    assert not problems, problems
    return grads


@pytest.mark.parametrize("likelihood, variance, activation, hidden, objective, k, prior", [
    ("bernoulli", None, "tanh", (3,), "elbo", 1, "normal"), ("gaussian", "shared", "tanh", (3,), "elbo", 1, "normal"),
    ("bernoulli", None, "tanh", (), "elbo", 1, "normal"), ("gaussian", "shared", "tanh", (3, 2), "elbo", 1, "normal"),
    ("bernoulli", None, "sigmoid", (3,), "elbo", 1, "normal"),
    ("gaussian", "shared", "softplus", (3,), "elbo", 1, "normal"),
    ("bernoulli", None, "identity", (3, 2), "elbo", 1, "normal"),
    ("gaussian", "per-element", "tanh", (3,), "elbo", 1, "normal"),
    ("categorical", None, "tanh", (3,), "elbo", 1, "normal"),
    ("gaussian", "per-dim", "tanh", (3,), "elbo", 3, "normal"),               # K samples averaged, closed-form KL
    ("bernoulli", None, "tanh", (3,), "iw", 3, "normal"),                     # the IW bound, KL at the sample
    ("gaussian", "shared", "tanh", (), "iw", 3, "mog"),
    ("bernoulli", None, "tanh", (3,), "elbo", 2, "mog"),
])
def test_whole_model_backward_matches_complex_step(likelihood, variance, activation, hidden, objective, k, prior):
    """The one chain of elbo.md#whole-model-backward for every likelihood, objective, K and prior; the Gaussian's
    floor at sigma_min = 0.5, where its factor e^l / (sigma_min^2 + e^l) is far from 1."""
    rng = np.random.default_rng(15)
    N, D, Z, beta, sigma_min, levels = 4, 5, 2, 0.7, 0.5, 4
    model = VAE(D, Z, hidden=hidden, activation=activation, likelihood=likelihood, dtype="float64", seed=0,
                gaussian_variance=variance or "shared", sigma_min=sigma_min, levels=levels, prior=prior,
                prior_components=3)
    for name in model.params:                               # nonzero biases, decoder log-variance and prior
        model.params[name] = model.params[name] + 0.3 * rng.standard_normal(np.shape(model.params[name]))
    x = rng.standard_normal((N, D)) if likelihood == "gaussian" else rng.uniform(0.0, 1.0, (N, D))
    eps = rng.standard_normal((k, N, Z))

    def ref(p):
        return _reference_vae_loss(p, x, eps, beta, likelihood, activation, len(hidden), objective, prior,
                                   variance, sigma_min, levels)

    _check_whole_model(model, x, eps[0] if k == 1 else eps, beta, objective, ref)    # K = 1: eps as (N, Z)


def test_whole_model_backward_through_the_clamp():
    """Latent coordinate 1's raw log-variance is beyond LOGVAR_MAX for every example (its eps is 0, so z stays
    finite): the model reads logvar = 40 there, the KL's gradient (e^40 - 1) beta / 2N into it is stopped by the
    clamp's backward (Step 5), so its head's column gets exactly 0, and every gradient matches the complex step."""
    rng = np.random.default_rng(31)
    N, D, Z, beta = 4, 5, 2, 0.7
    model = VAE(D, Z, hidden=(3,), activation="tanh", likelihood="bernoulli", dtype="float64", seed=0)
    for name in model.params:
        model.params[name] = model.params[name] + 0.3 * rng.standard_normal(np.shape(model.params[name]))
    model.params["enc.logvar.b"][1] = LOGVAR_MAX + 5.0
    x = rng.uniform(0.0, 1.0, (N, D))
    eps = rng.standard_normal((N, Z))
    eps[:, 1] = 0.0
    _, logvar = model.encode(x)
    assert np.all(logvar[:, 1] == LOGVAR_MAX) and np.all(logvar[:, 0] < LOGVAR_MAX)

    def ref(p):
        return _reference_vae_loss(p, x, eps[None], beta, "bernoulli", "tanh", 1)

    grads = _check_whole_model(model, x, eps, beta, "elbo", ref)
    assert np.all(grads["enc.logvar.W"][:, 1] == 0.0) and grads["enc.logvar.b"][1] == 0.0
    assert np.all(grads["enc.logvar.W"][:, 0] != 0.0)


# ---- NaN and inf at the model's boundary -----------------------------------------------------------------------

@pytest.mark.edge
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("where", ["x NaN", "x +inf", "eps NaN", "eps -inf", "parameter NaN"])
def test_non_finite_input_gives_a_non_finite_loss_or_gradient(likelihood, where):
    """With the value checks off, as the training loop runs it (check_input=False: reading values on a device
    would be a device-to-host transfer each step), a NaN or inf in the data, the noise or a weight comes out as
    a non-finite loss or gradient, which the training loop reports (tests/test_health.py); never as a finite
    loss with finite gradients. (An infinite eps may leave the loss finite, z = -inf saturating tanh, but not
    its gradient: dlogvar = dz eps sigma / 2.) With them on, host data is refused (tests/test_checks.py)."""
    model = VAE(5, 2, hidden=(4,), likelihood=likelihood, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x, eps = rng.uniform(size=(3, 5)), rng.standard_normal((3, 2))
    if where.startswith("x"):
        x[1, 2] = np.nan if "NaN" in where else np.inf
    elif where.startswith("eps"):
        eps[0, 1] = np.nan if "NaN" in where else -np.inf
    else:
        model.params["dec.0.W"][0, 0] = np.nan
    with np.errstate(all="ignore"):
        loss, grads, _ = model.loss_and_grads(x, eps, check_input=False)
    assert not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values()))
    if where != "eps -inf":
        assert not np.isfinite(loss)


@pytest.mark.edge
def test_an_infinite_bias_behind_tanh_leaves_the_loss_finite():
    """Why training checks the parameters as well as the loss: tanh saturates, so an infinite hidden bias gives
    h = 1 and a finite loss, with the parameter stuck at inf (its gradient is 0)."""
    model = VAE(5, 2, hidden=(4,), dtype="float64", seed=0)
    model.params["enc.0.b"][1] = np.inf
    rng = np.random.default_rng(0)
    loss, grads, _ = model.loss_and_grads(rng.uniform(size=(3, 5)), rng.standard_normal((3, 2)))
    assert np.isfinite(loss) and grads["enc.0.b"][1] == 0.0
