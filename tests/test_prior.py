"""Tests for minivae/prior.py: the standard normal and mixture log-densities against scipy.stats, their backward
passes against finite differences (float64, <= 1e-6), the sampled KL against the closed form by Monte Carlo, and
the mixture sampler against the mixture's distribution."""
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats

from minivae.backend import get_device, to_host
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.prior import (init_mog_params, mog_log_prob_backward, mog_log_prob_forward, mog_sample,
                           reparam_log_q_backward, reparam_log_q_forward, std_normal_log_prob_backward,
                           std_normal_log_prob_forward)
from minivae.reparam import reparameterize_backward, reparameterize_forward
from minivae.rng import RNG


def mixture(rng, c, z, spread=1.5):
    """Random mixture parameters (logits (C,), mu (C, Z), logvar (C, Z)), host float64."""
    return rng.standard_normal(c), spread * rng.standard_normal((c, z)), 0.5 * rng.standard_normal((c, z))


def scipy_mog_log_prob(z, logits, mu, logvar):
    """log sum_c pi_c N(z; mu_c, diag exp(logvar_c)) with scipy.stats.multivariate_normal densities."""
    log_pi = logits - scipy.special.logsumexp(logits)
    terms = np.stack([log_pi[c] + scipy.stats.multivariate_normal(mu[c], np.diag(np.exp(logvar[c]))).logpdf(z)
                      for c in range(len(logits))], axis=-1)                    # (N, C)
    return scipy.special.logsumexp(terms.reshape(len(z), -1), axis=1)


def test_std_normal_log_prob_matches_scipy(device, rng):
    z = rng.standard_normal((6, 3))
    log_p, _ = std_normal_log_prob_forward(device.asarray(z))
    np.testing.assert_allclose(to_host(log_p), scipy.stats.norm.logpdf(z).sum(axis=1), rtol=1e-13)


def test_reparam_log_q_matches_scipy(device, rng):
    """-1/2 sum (eps^2 + logvar + log 2 pi) is log N(z; mu, sigma^2) at z = mu + sigma eps."""
    mu, logvar, eps = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    sigma = np.exp(logvar / 2)
    log_q, _ = reparam_log_q_forward(device.asarray(eps), device.asarray(logvar))
    ref = scipy.stats.norm.logpdf(mu + sigma * eps, mu, sigma).sum(axis=1)
    np.testing.assert_allclose(to_host(log_q), ref, rtol=1e-12)


@pytest.mark.parametrize("c, z", [(1, 1), (3, 2), (5, 4)])
def test_mog_log_prob_matches_scipy(device, rng, c, z):
    logits, mu, logvar = mixture(rng, c, z)
    codes = rng.standard_normal((7, z)) * 2.0
    log_p, (_, _, r, pi) = mog_log_prob_forward(*(device.asarray(a) for a in (codes, logits, mu, logvar)))
    np.testing.assert_allclose(to_host(log_p), scipy_mog_log_prob(codes, logits, mu, logvar), rtol=1e-12)
    np.testing.assert_allclose(to_host(device.xp.sum(r, axis=1)), np.ones(7), rtol=1e-13)   # responsibilities
    np.testing.assert_allclose(to_host(pi), scipy.special.softmax(logits), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mog_log_prob_is_finite_far_from_every_component(dtype):
    """Codes 30 to 60 standard deviations from every component: each pi_c N(z; .) underflows to 0, the
    log-sum-exp does not. Compared with scipy in float64."""
    logits, mu, logvar = np.array([0.0, 1.0]), np.array([[0.0, 0.0], [1.0, -1.0]]), np.zeros((2, 2))
    codes = np.array([[30.0, 40.0], [-60.0, 10.0]])
    with np.errstate(under="ignore"):
        assert np.all(np.exp(scipy_mog_log_prob(codes, logits, mu, logvar)) == 0.0)
    log_p, (_, _, r, _) = mog_log_prob_forward(*(a.astype(dtype) for a in (codes, logits, mu, logvar)))
    assert log_p.dtype == np.dtype(dtype) and np.all(np.isfinite(log_p)) and np.all(np.isfinite(r))
    np.testing.assert_allclose(log_p, scipy_mog_log_prob(codes, logits, mu, logvar),
                               rtol=1e-6 if dtype == "float32" else 1e-13)


def test_one_standard_component_is_the_standard_normal(rng):
    """C = 1, logits 0, mu 0, logvar 0: the mixture's log-density and gradient in z are N(0, I)'s."""
    z, dlogp = rng.standard_normal((5, 3)), rng.standard_normal(5)
    log_p, cache = mog_log_prob_forward(z, np.zeros(1), np.zeros((1, 3)), np.zeros((1, 3)))
    ref, ref_cache = std_normal_log_prob_forward(z)
    np.testing.assert_allclose(log_p, ref, rtol=1e-14)
    dz, dlogits, _, _ = mog_log_prob_backward(dlogp, cache)
    np.testing.assert_allclose(dz, std_normal_log_prob_backward(dlogp, ref_cache), rtol=1e-14)
    np.testing.assert_allclose(dlogits, 0.0, atol=1e-14)          # one component: its weight is always 1


def test_sampled_kl_matches_closed_form_in_expectation():
    """With one component fixed at N(0, I), the sampled KL log q(z|x) - log p(z) at z = mu + sigma eps, and its
    gradient in (mu, logvar) with eps held fixed, average over 2e5 draws (fixed seed) to the closed form and its
    gradient: each within 4 Monte Carlo standard errors."""
    mu, logvar = np.array([[0.7, -1.2, 0.1]]), np.array([[-0.5, 0.4, 1.0]])
    n = 200_000
    eps = np.random.default_rng(7).standard_normal((n, 3))
    mu_n, logvar_n = np.repeat(mu, n, axis=0), np.repeat(logvar, n, axis=0)
    z, rep_cache = reparameterize_forward(mu_n, logvar_n, eps)
    log_q, q_cache = reparam_log_q_forward(eps, logvar_n)
    log_p, p_cache = mog_log_prob_forward(z, np.zeros(1), np.zeros((1, 3)), np.zeros((1, 3)))
    kl_hat = log_q - log_p                                                      # (n,)
    ones = np.ones(n)
    dz, _, _, _ = mog_log_prob_backward(-ones, p_cache)                          # d(-log p)/dz
    dmu, dlogvar = reparameterize_backward(dz, rep_cache)
    dlogvar = dlogvar + reparam_log_q_backward(ones, q_cache)                   # per-draw gradients (n, 3)
    kl, kl_cache = kl_std_normal_forward(mu, logvar)
    dmu_ref, dlogvar_ref = kl_std_normal_backward(np.ones(1), kl_cache)
    for est, ref in ((kl_hat[:, None], kl[:, None]), (dmu, dmu_ref), (dlogvar, dlogvar_ref)):
        mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / math.sqrt(n)
        assert np.all(np.abs(mean - ref[0]) < 4 * se), (mean, ref, se)


def test_mog_sample_matches_the_mixture():
    """1-D draws against the mixture's CDF (Kolmogorov-Smirnov), component counts against pi (chi-square), on
    the CPU and, bit for bit, on the strict device."""
    logits, mu, logvar = np.array([0.5, -1.0, 1.2]), np.array([[-3.0], [0.5], [4.0]]), np.array([[0.0], [-1.0], [0.6]])
    pi, sd = scipy.special.softmax(logits), np.exp(logvar[:, 0] / 2)
    n = 20_000
    cpu = get_device("cpu")
    rng = RNG(3)
    u, eps = rng.uniform((n, 3), cpu, "float64"), rng.normal((n, 1), cpu, "float64")
    z = mog_sample(logits, mu, logvar, u, eps)[:, 0]
    cdf = lambda t: np.sum(pi * scipy.stats.norm.cdf((np.asarray(t)[:, None] - mu[:, 0]) / sd), axis=1)  # noqa: E731
    assert scipy.stats.kstest(z, cdf).pvalue > 0.01
    picked = np.argmax(logits - np.log(-np.log(u)), axis=1)
    counts = np.bincount(picked, minlength=3)
    assert scipy.stats.chisquare(counts, n * pi).pvalue > 0.01
    np.testing.assert_array_equal(z, mu[picked, 0] + sd[picked] * eps[:, 0])
    strict = get_device("strict")
    zs = mog_sample(*(strict.asarray(a) for a in (logits, mu, logvar, u[:50], eps[:50])))
    np.testing.assert_array_equal(to_host(zs)[:, 0], z[:50])


def test_init_mog_params():
    p = init_mog_params(RNG(0), 4, 3)
    assert p["prior.logits"].shape == (4,) and np.all(p["prior.logits"] == 0)
    assert p["prior.logvar"].shape == (4, 3) and np.all(p["prior.logvar"] == 0)
    np.testing.assert_array_equal(p["prior.mu"], np.random.Generator(np.random.PCG64(0)).standard_normal((4, 3)))
