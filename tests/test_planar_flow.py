"""Tests for minivae/parts/planar_flow.py in the model: the whole-model gradient with a planar-flow posterior
(K = 1 and K > 1, several shapes, ELBO and IW bound, both priors; float64, <= 1e-6), its loss against an
independent NumPy/SciPy computation (explicit Jacobian matrices and numpy's determinant), the strict device, and
evaluation's sampled ELBO for a posterior whose density is known only at its samples."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from minivae.backend import to_host
from minivae.evaluate import evaluate_sections, exact_log_px
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound

from _fd import CONFIG_PARAMS, CONFIGS, batch, gradcheck_all, perturb, same_on_strict_device


def flow_model(config, steps, prior="normal", device="cpu"):
    return perturb(VAE(**config, dtype="float64", device=device, seed=3, prior=prior, prior_components=3,
                       posterior="flow", flow_steps=steps))


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_flow_elbo_gradcheck(config, steps):
    model = flow_model(config, steps)
    x, eps = batch(model, 5)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO(0.7)))


@pytest.mark.parametrize("prior", ["normal", "mog"])
@pytest.mark.parametrize("k", [1, 3])
def test_flow_iw_gradcheck(k, prior):
    model = flow_model(CONFIGS["one-hidden"], 2, prior=prior)
    x, eps = batch(model, 4, k=k)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, IWBound()))


def test_flow_gradient_on_strict_device():
    """test_flow_iw_gradcheck[3-mog]'s model and bound on the strict device."""
    same_on_strict_device(lambda device: flow_model(CONFIGS["one-hidden"], 2, prior="mog", device=device), 4, 3,
                          IWBound())


def reference_flow_loss(model, x, eps, beta):
    """The negative ELBO with the flow, computed independently: plain NumPy layers, each step's Jacobian
    I + tanh'(w^T z + b) u_hat w^T built as a matrix and its determinant from numpy.linalg.det."""
    p = {k: to_host(v) for k, v in model.params.items()}
    act = {"tanh": np.tanh, "softplus": lambda a: np.log1p(np.exp(a))}[model.config["activation"]]

    def mlp(h, prefix):
        for i in range(len(model.hidden)):
            h = act(h @ p[f"{prefix}.{i}.W"] + p[f"{prefix}.{i}.b"])
        return h

    def head(h, name):
        return h @ p[name + ".W"] + p[name + ".b"]

    h = mlp(x, "enc")
    mu, logvar = head(h, "enc.mu"), head(h, "enc.logvar")
    z = mu + np.exp(logvar / 2) * eps
    log_q = scipy.stats.norm.logpdf(z, mu, np.exp(logvar / 2)).sum(axis=1)
    for k in range(model.config["flow_steps"]):
        u, w, b = head(h, f"enc.flow.{k}.u"), head(h, f"enc.flow.{k}.w"), head(h, f"enc.flow.{k}.b")[:, 0]
        for n in range(len(x)):
            a = w[n] @ u[n]
            u_hat = u[n] + (np.logaddexp(0, a) - 1 - a) * w[n] / (w[n] @ w[n])
            t = np.tanh(w[n] @ z[n] + b[n])
            jac = np.eye(model.z_dim) + (1 - t ** 2) * np.outer(u_hat, w[n])
            log_q[n] -= np.log(abs(np.linalg.det(jac)))
            z[n] = z[n] + u_hat * t
    out = head(mlp(z, "dec"), "dec.out")
    log_px = (x * scipy.special.log_expit(out) + (1 - x) * scipy.special.log_expit(-out)).sum(axis=1)
    kl = log_q - scipy.stats.norm.logpdf(z).sum(axis=1)
    return np.mean(-log_px + beta * kl), np.mean(kl)


@pytest.mark.parametrize("steps", [1, 4])
def test_flow_loss_matches_independent_reference(device, steps):
    model = flow_model(CONFIGS["one-hidden"], steps, device=device)
    x, eps = batch(model, 6)
    loss, _, stats = model.loss_and_grads(x, eps, ELBO(0.7))
    ref_loss, ref_kl = reference_flow_loss(model, to_host(x), to_host(eps), 0.7)
    np.testing.assert_allclose(float(to_host(loss)), ref_loss, rtol=1e-12)
    np.testing.assert_allclose(float(to_host(stats["kl"])), ref_kl, rtol=1e-11)


def test_flow_is_not_the_gaussian():
    """The check above can fail: the same weights without the flow give another loss."""
    model = flow_model(CONFIGS["one-hidden"], 2)
    x, eps = batch(model, 6)
    loss, _, _ = model.loss_and_grads(x, eps, ELBO(0.7))
    plain = VAE(**CONFIGS["one-hidden"], dtype="float64", seed=3)
    plain.params.update({k: v for k, v in model.params.items() if k in plain.params})
    assert abs(float(plain.loss_and_grads(x, eps, ELBO(0.7))[0]) - float(loss)) > 1e-3


@pytest.mark.parametrize("kwargs, name", [(dict(posterior="iaf"), "posterior must be one of"),
                                          (dict(posterior="flow", flow_steps=0), "flow_steps"),
                                          (dict(posterior="flow", flow_steps=1.5), "flow_steps")])
def test_bad_posterior_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VAE(4, 2, hidden=(3,), **kwargs)


def test_exact_section_estimates_the_flow_elbo_by_sampling():
    """log p(x) by quadrature does not read q; the ELBO does, and the flow's density is known only at its
    samples, so the gap comes from the sampled ELBO, with its standard error, and it is >= 0 within it."""
    model = VAE(6, 2, hidden=(5,), dtype="float64", seed=0, posterior="flow", flow_steps=2)
    x = (np.random.default_rng(1).uniform(size=(8, 6)) > 0.5).astype(np.float64)
    ex = exact_log_px(model, x, tol=1e-5)
    assert ex["converged"] and ex["elbo_se"] > 0
    assert ex["gap"] > -4 * ex["elbo_se"]
    sections = dict(evaluate_sections(model, x, k=50, samples=4))
    assert sections["exact"]["posterior_gap_se"] == ex["elbo_se"] or sections["exact"]["posterior_gap_se"] > 0
    assert "surgery_skipped" in sections["surgery"]


def test_the_posterior_picture_refuses_a_flow_with_a_reason():
    from minivae.posterior import posterior_grid
    model = VAE(6, 2, hidden=(5,), dtype="float64", posterior="flow", flow_steps=2)
    with pytest.raises(ValueError, match="needs its density at any z"):
        posterior_grid(model, np.zeros((1, 6)))
