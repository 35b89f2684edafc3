"""The parts a VAE is made of, and the registry that names them (torch.distributions and Chainer's distributions
give the shape of the interface; CS231n's ``fc_net.py`` how the model uses them). Adding a likelihood or a
prior means one new file here and one line in a registry below; the model, evaluation and pictures call the
interface and never ask which part they hold.

A likelihood p(x|z) (``LIKELIHOODS``) is the decoder's output head(s) on its last hidden layer h and the
distribution they parameterise:
    init_params(rng, gain) -> {name: host array}    its parameters' names, shapes and initial values
    forward(params, h, x) -> (nll (N,), cache)       -log p(x|z) per example
    backward(dnll, cache, grads) -> dh               writes its parameters' gradients
    decode(params, h) -> dict                        the distribution's parameters (logits, mean, logvar)
    mean(params, h) -> E[x|z]; sample(params, h, rng) -> one draw on the host; discrete(x) -> bool
    log_prob_grid(params, x, h) -> (N, G)            log p(x_n | z_g) for every example and code
    unit_interval, row_width, OPTIONS                what data it takes; decoder values per pixel; its options
``DECODERS`` names the likelihoods each decoder offers: "mlp", the heads above; "made", an autoregressive
Bernoulli (made_bernoulli.py) whose logits also read the earlier pixels.
A prior p(z) (``PRIORS``: N(0, I), a learned mixture, the VampPrior):
    init_params, log_prob_forward(params, z) / log_prob_backward(dlogp, cache, grads) -> dz,
    kl_term(closed_form) -> ClosedFormKL or SampledKL (kl_term.py), sample(params, n, rng, device, dtype),
    quadrature_box(params) -> (lo, hi, sigma) on the host, label, OPTIONS
An approximate posterior q(z|x) (``POSTERIORS``): the diagonal Gaussian (diagonal_gaussian.py, whose docstring
gives the interface) or a planar flow on top of it (planar_flow.py).
Tests: tests/test_model.py, tests/test_parts.py.
"""
import numpy as np

from .bernoulli import Bernoulli
from .categorical import Categorical
from .diagonal_gaussian import DiagonalGaussian
from .gaussian import GAUSSIAN_VARIANCES, Gaussian
from .gaussian import check_options as check_gaussian_options
from .made_bernoulli import MadeBernoulli
from .kl_term import ClosedFormKL, SampledKL
from .mixture import Mixture
from .planar_flow import PlanarFlow
from .standard_normal import StandardNormal
from .vamp import VampPrior

LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian, "categorical": Categorical}
DECODERS = {"mlp": LIKELIHOODS, "made": {"bernoulli": MadeBernoulli}}   # decoder -> the likelihoods it offers
PRIORS = {"normal": StandardNormal, "mog": Mixture, "vamp": VampPrior}
POSTERIORS = {"diagonal": DiagonalGaussian, "flow": PlanarFlow}


def _lookup(registry, value, what):
    try:
        return registry[value]
    except (KeyError, TypeError):
        raise ValueError(f"{what} must be one of {', '.join(registry)}; got {value!r}") from None


def check_likelihood_options(likelihood, gaussian_variance, sigma, sigma_min, levels):
    """A ValueError naming the first bad option. Every option is checked whatever the likelihood: a config
    carries all of them."""
    _lookup(LIKELIHOODS, likelihood, "likelihood")
    check_gaussian_options(gaussian_variance, sigma, sigma_min)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")


def build_likelihood(name, x_dim, h_dim, device, dtype, gaussian_variance, sigma, sigma_min, levels,
                     decoder="mlp", made_hidden=(), activation="tanh"):
    """The likelihood part ``name`` for data of x_dim dimensions on top of decoder features of h_dim; with
    ``decoder="made"`` the autoregressive one (hidden sizes ``made_hidden``, activation ``activation``)."""
    check_likelihood_options(name, gaussian_variance, sigma, sigma_min, levels)
    offered = _lookup(DECODERS, decoder, "decoder")
    if name not in offered:
        raise ValueError(f"decoder {decoder!r} offers the likelihoods {', '.join(offered)}; got {name!r}")
    given = dict(gaussian_variance=gaussian_variance, sigma=sigma, sigma_min=sigma_min, levels=int(levels),
                 made_hidden=tuple(made_hidden), activation=activation)
    cls = offered[name]
    return cls(x_dim, h_dim, device, dtype, **{k: given[k] for k in cls.OPTIONS})   # the options it reads


def build_prior(name, z_dim, components, pseudo_inputs=None, x_dim=None, encoder=None, posterior=None):
    """The prior part ``name`` over z_dim dimensions (``components``: the mixture's C; ``pseudo_inputs``: the
    VampPrior's, with the data's x_dim and the model's encoder and posterior, which it shares)."""
    cls = _lookup(PRIORS, name, "prior")
    given = dict(components=components, pseudo_inputs=pseudo_inputs, x_dim=x_dim, encoder=encoder,
                 posterior=posterior)
    return cls(z_dim, **{k: given[k] for k in cls.OPTIONS})


def build_posterior(name, h_dim, z_dim, flow_steps):
    """The posterior part ``name`` on encoder features of h_dim (``flow_steps``: the flow's K)."""
    cls = _lookup(POSTERIORS, name, "posterior")
    given = dict(flow_steps=flow_steps)
    return cls(h_dim, z_dim, **{k: given[k] for k in cls.OPTIONS})


__all__ = ["Bernoulli", "Categorical", "ClosedFormKL", "DECODERS", "DiagonalGaussian", "GAUSSIAN_VARIANCES",
           "Gaussian", "LIKELIHOODS", "MadeBernoulli", "Mixture", "PlanarFlow", "POSTERIORS", "PRIORS", "SampledKL",
           "StandardNormal", "VampPrior", "build_likelihood", "build_posterior", "build_prior",
           "check_likelihood_options"]
