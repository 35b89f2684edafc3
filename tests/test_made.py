"""Tests for minivae/made.py and minivae/parts/made_bernoulli.py: the masked pair's backward against finite
differences and its forward against a plain product; the masks' autoregressive property, by the connectivity
and by the Jacobian of the logits; p(x|z) sums to 1 over every binary x; ancestral samples match it; and the
whole model with the MADE decoder gradient-checked (one, two and three hidden layers; ELBO and IW bound; strict
device; float64, <= 1e-6)."""
import itertools

import numpy as np
import pytest

from minivae.made import check_autoregressive, made_degrees, made_masks, masked_linear_forward
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound
from minivae.rng import RNG

from _fd import batch, gradcheck_all, perturb, same_on_strict_device


def test_masked_linear_forward_is_a_sum_over_unmasked_inputs(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    M = (rng.uniform(size=(4, 5)) < 0.5).astype(np.float64)
    y, _ = masked_linear_forward(x, W, M)
    ref = [[sum(x[n, i] * W[i, k] for i in range(4) if M[i, k]) for k in range(5)] for n in range(3)]
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("x_dim, hidden", [(2, ()), (5, (6,)), (5, (6, 7)), (8, (3, 9, 4)), (64, (400, 400)),
                                           (784, (400, 400))])
def test_masks_are_autoregressive(x_dim, hidden):
    masks = made_masks(x_dim, hidden)
    assert check_autoregressive(masks)
    assert [m.shape for m in masks] == list(zip((x_dim,) + hidden, hidden + (x_dim,), strict=True))
    deg = made_degrees(x_dim, hidden)
    assert all(d.min() >= 1 and d.max() <= max(x_dim - 1, 1) for d in deg[1:])
    assert all(d.max() >= (x_dim - 1) * (len(d) - 1) / len(d) for d in deg[1:])   # the degrees reach the end
    if all(h >= x_dim - 1 for h in hidden):                             # every earlier pixel reaches every output
        reach = masks[0]
        for m in masks[1:]:
            reach = (reach @ m > 0).astype(float)
        np.testing.assert_array_equal(reach, np.tril(np.ones((x_dim, x_dim)), -1).T)


def test_check_autoregressive_can_fail():
    masks = made_masks(5, (6, 7))
    masks[-1][:, 0] = 1.0                                               # output 1 now sees hidden units
    assert not check_autoregressive(masks)


def made_model(hidden=(4,), made_hidden=(6, 7), x_dim=5, z_dim=2, device="cpu", seed=3):
    return perturb(VAE(x_dim, z_dim, hidden=hidden, dtype="float64", device=device, seed=seed, decoder="made",
                       made_hidden=made_hidden))


def test_logit_d_reads_only_earlier_pixels():
    """The Jacobian of the logits in x, by finite differences through the part: d logit_d / d x_j = 0 for j >= d,
    and not 0 for some j < d."""
    model = made_model()
    lik, p = model.likelihood, model.params
    h = np.random.default_rng(1).standard_normal((1, 4))
    x = np.random.default_rng(2).uniform(size=(1, 5))
    jac = np.zeros((5, 5))
    for j in range(5):
        step = np.zeros((1, 5))
        step[0, j] = 1e-6
        jac[:, j] = (lik._logits(p, h, x + step)[0] - lik._logits(p, h, x - step)[0])[0] / 2e-6
    assert np.all(jac[np.triu_indices(5)] == 0)
    assert np.all(np.abs(jac[np.tril_indices(5, -1)]) > 1e-8)


def test_made_likelihood_sums_to_one_over_binary_x():
    """sum over all 2^D binary x of p(x|z) = 1 for each code: the factors form a distribution only if logit d
    ignores x_d .. x_D (a mask that lets x_d into its own logit breaks this)."""
    model = made_model(made_hidden=(6, 7))
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=5)))          # (32, 5)
    z = np.random.default_rng(3).standard_normal((3, 2))
    total = np.exp(model.log_likelihood_grid(xs, z)).sum(axis=0)          # (3,)
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    model.likelihood.masks[-1] = np.ones_like(model.likelihood.masks[-1])   # break the order: no longer sums to 1
    assert np.max(np.abs(np.exp(model.log_likelihood_grid(xs, z)).sum(axis=0) - 1.0)) > 1e-3


def test_ancestral_samples_match_the_likelihood():
    model = made_model(x_dim=3, made_hidden=(5, 5))
    z = np.zeros((20_000, 2)) + np.array([0.4, -0.3])
    x = model.sample_x(z, RNG(0))
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    p = np.exp(model.log_likelihood_grid(xs, z[:1]))[:, 0]                 # (8,)
    freq = np.array([np.mean(np.all(x == row, axis=1)) for row in xs])
    se = np.sqrt(p * (1 - p) / len(x))
    assert np.all(np.abs(freq - p) < 4 * se + 1e-3), (freq, p)


# The whole-model checks use the five-point reference (tests/_fd.py): MADE's hidden units see few inputs, and
# some get gradients of ~1e-5 whose central differences at h = 1e-5 carry ~3e-10 of roundoff (an error that
# falls as h grows: roundoff, not the backward).


@pytest.mark.parametrize("hidden, made_hidden", [((), (5,)), ((4,), (6, 7)), ((4, 3), (3, 9, 4))],
                         ids=["linear-1", "hidden-2", "deep-3"])
def test_made_elbo_gradcheck(hidden, made_hidden):
    model = made_model(hidden, made_hidden)
    x, eps = batch(model, 4)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, ELBO(0.7)), fourth_order=True)


def test_made_iw_gradcheck():
    model = made_model()
    x, eps = batch(model, 3, k=3)
    gradcheck_all(model, lambda: model.loss_and_grads(x, eps, IWBound()), fourth_order=True)


def test_made_gradient_on_strict_device():
    """test_made_iw_gradcheck's model and bound on the strict device."""
    same_on_strict_device(lambda device: made_model(device=device), 3, 3, IWBound())


@pytest.mark.parametrize("kwargs, name", [(dict(decoder="pixelcnn"), "decoder must be one of"),
                                          (dict(decoder="made", likelihood="gaussian"), "offers the likelihoods"),
                                          (dict(decoder="made", made_hidden=(4, 0)), "made_hidden")])
def test_bad_decoder_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VAE(4, 2, hidden=(3,), **kwargs)


def test_masked_linear_names_a_bad_shape():
    with pytest.raises(ValueError, match=r"masked_linear_forward: M must have shape \(3, 4\)"):
        masked_linear_forward(np.zeros((2, 3)), np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"masked_linear_forward: W must have shape \(3, \*\)"):
        masked_linear_forward(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 4)))
