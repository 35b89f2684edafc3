"""Tests for minivae/parts/vamp.py: the whole-model gradient with the VampPrior (C > 1 pseudo-inputs, several
shapes, ELBO and IW bound, with the diagonal and the flow posterior; float64, <= 1e-6), the encoder's two gradient
paths, the loss and log p(z) against an independent NumPy/SciPy computation, and exact log p(x) against scipy's
quadrature."""
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

from minivae.backend import to_host
from minivae.evaluate import exact_log_px
from minivae.gradcheck import numerical_gradient, rel_error
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound

from _fd import CONFIG_PARAMS, CONFIGS, batch, gradcheck_all, perturb, same_on_strict_device


def vamp_model(config, pseudo_inputs=3, device="cpu", **kwargs):
    return perturb(VAE(**config, dtype="float64", device=device, seed=3, prior="vamp", pseudo_inputs=pseudo_inputs,
                       **kwargs))


@pytest.mark.parametrize("pseudo_inputs", [2, 4])
@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_vamp_elbo_gradcheck(config, pseudo_inputs):
    model = vamp_model(config, pseudo_inputs)
    x, eps = batch(model, 5)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO(0.7)))


@pytest.mark.parametrize("k", [1, 3])
def test_vamp_iw_gradcheck(k):
    """Against the five-point reference: at K = 3 dL/d dec.out.W has an entry of 1.76e-7 at L = 4.5, where central
    differences at h = 1e-5 carry ~1e-12 of roundoff (5e-6 relative); the five-point stencil agrees to 1.4e-7,
    every other entry to 1e-9."""
    model = vamp_model(CONFIGS["one-hidden"])
    x, eps = batch(model, 4, k=k)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, IWBound()), fourth_order=True)   # see below


def test_vamp_with_flow_posterior_gradcheck():
    model = vamp_model(CONFIGS["one-hidden"], posterior="flow", flow_steps=2)
    x, eps = batch(model, 4)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO()))


def test_vamp_gradient_on_strict_device():
    """test_vamp_iw_gradcheck[3]'s model and bound on the strict device."""
    same_on_strict_device(lambda device: vamp_model(CONFIGS["one-hidden"], device=device), 4, 3, IWBound())


def test_encoder_gets_gradients_from_both_paths():
    """The prior's path on its own: log p(z) at fixed codes reads the encoder's weights through the pseudo-inputs,
    and its backward writes their gradients (and the pseudo-inputs') as finite differences give them, non-zero.
    In the loss, the data's path adds to these (the whole-model checks above)."""
    model = vamp_model(CONFIGS["one-hidden"])
    z = model.device.asarray(np.random.default_rng(9).standard_normal((5, model.z_dim)))
    p = model.params["enc.0.W"]
    num = numerical_gradient(lambda: model.device.xp.sum(model.log_prior(z)), p, np.array(1.0))
    assert np.max(np.abs(num)) > 1e-3                                  # the prior's path reaches the encoder
    _, g_prior = model.prior.log_prob_forward(model.params, z)
    prior_grads = {}
    model.prior.log_prob_backward(model.device.xp.ones((5,)), g_prior, prior_grads)
    assert rel_error(prior_grads["enc.0.W"], num) <= 1e-6
    assert rel_error(prior_grads["prior.u"], numerical_gradient(
        lambda: model.device.xp.sum(model.log_prior(z)), model.params["prior.u"], np.array(1.0))) <= 1e-6


def reference_log_prior(model, z):
    """log (1/C) sum_c N(z; mu(u_c), diag sigma^2(u_c)), the encoder run in plain NumPy, densities from scipy."""
    p = {k: to_host(v) for k, v in model.params.items()}
    h = p["prior.u"]
    for i in range(len(model.hidden)):
        h = np.tanh(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    mu, logvar = h @ p["enc.mu.W"] + p["enc.mu.b"], h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    dens = np.stack([scipy.stats.multivariate_normal(mu[c], np.diag(np.exp(logvar[c]))).logpdf(z)
                     for c in range(len(mu))], axis=-1).reshape(len(z), -1)
    return scipy.special.logsumexp(dens, axis=1) - np.log(len(mu))


def test_vamp_log_prior_matches_scipy(device):
    model = vamp_model(CONFIGS["one-hidden"], pseudo_inputs=4, device=device)
    z = np.random.default_rng(2).standard_normal((7, model.z_dim)) * 2
    got = to_host(model.log_prior(model.device.asarray(z)))
    np.testing.assert_allclose(got, reference_log_prior(model, z), rtol=1e-12)


def test_vamp_sample_matches_the_prior():
    """Samples of p(z) against its density at Z = 1: the fraction below each of a few points vs the integral."""
    model = VAE(3, 1, hidden=(4,), dtype="float64", seed=1, prior="vamp", pseudo_inputs=3)
    from minivae.rng import RNG
    z = to_host(model.sample_prior(100_000, RNG(0)))[:, 0]
    for t in (-1.0, 0.0, 0.7):
        mass, _ = scipy.integrate.quad(lambda v: np.exp(reference_log_prior(model, np.array([[v]]))[0]), -30, t)
        frac = np.mean(z <= t)
        assert abs(frac - mass) < 4 * np.sqrt(mass * (1 - mass) / len(z)) + 1e-3, (t, frac, mass)


def test_vamp_exact_log_px_matches_scipy_quad():
    model = VAE(4, 1, hidden=(3,), dtype="float64", seed=2, prior="vamp", pseudo_inputs=3)
    x = (np.random.default_rng(3).uniform(size=(3, 4)) > 0.5).astype(np.float64)
    ex = exact_log_px(model, x, tol=1e-8)
    for n in range(3):
        def joint(v, n=n):
            zv = np.array([[v]])
            return np.exp(-to_host(model.reconstruction_nll(x[n:n + 1], zv))[0] + reference_log_prior(model, zv)[0])
        ref, _ = scipy.integrate.quad(joint, -40, 40, limit=200, epsabs=0, epsrel=1e-10)
        np.testing.assert_allclose(ex["per_example"][n], np.log(ref), rtol=0, atol=1e-7)
