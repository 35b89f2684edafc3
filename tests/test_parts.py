"""Tests for minivae/parts/: each likelihood's and prior's interface against independent references (the mean
of p(x|z) against Monte Carlo draws of its own sampler, the log-likelihood grid against the per-example NLL and
scipy.stats), the registry's errors, a new likelihood added by registering one class, and the rule that no
module outside parts/ branches on a part's name."""
import pathlib
import re

import numpy as np
import pytest
import scipy.stats

import minivae
import minivae.parts as parts
from minivae.backend import to_host
from minivae.gradcheck import numerical_gradient, rel_error
from minivae.mlp import Dense
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound
from minivae.rng import RNG

LIKELIHOOD_OPTIONS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-fixed": dict(likelihood="gaussian", gaussian_variance="fixed", sigma=0.3),
    "gaussian-shared": dict(likelihood="gaussian", sigma_min=0.1),
    "gaussian-per-dim": dict(likelihood="gaussian", gaussian_variance="per-dim", sigma_min=0.1),
    "gaussian-per-element": dict(likelihood="gaussian", gaussian_variance="per-element", sigma_min=0.1),
    "categorical": dict(likelihood="categorical", levels=5),
}


def model_with(options, device="cpu", seed=0):
    model = VAE(4, 2, hidden=(6,), dtype="float64", device=device, seed=seed, **options)
    r = np.random.default_rng(seed + 1)
    for p in model.params.values():
        p += model.device.asarray(0.5 * r.standard_normal(tuple(p.shape)), dtype="float64")
    return model


@pytest.mark.parametrize("name", LIKELIHOOD_OPTIONS)
def test_mean_is_the_mean_of_the_sampler(name):
    """E[x|z] (``model.decoder_mean``) against the average of 20,000 draws of ``model.sample_x`` at the same
    codes, within 5 standard errors per pixel: a sampler and a mean that disagree (a variance used as a standard
    deviation, an off-by-one level) fail."""
    model = model_with(LIKELIHOOD_OPTIONS[name])
    z = model.device.asarray(np.random.default_rng(2).standard_normal((3, 2)))
    mean = to_host(model.decoder_mean(z))
    n = 20_000
    draws = model.sample_x(np.repeat(z, n, axis=0), RNG(7)).reshape(3, n, 4)        # (3, n, D)
    se = draws.std(axis=1) / np.sqrt(n)
    assert np.all(np.abs(draws.mean(axis=1) - mean) <= 5 * se + 1e-12), (draws.mean(axis=1), mean)


@pytest.mark.parametrize("name", LIKELIHOOD_OPTIONS)
def test_log_likelihood_grid_pairs_every_example_with_every_code(name, device):
    """log p(x_n | z_g) from the grid form equals -nll of the per-example forward for every pair (n, g)."""
    model = model_with(LIKELIHOOD_OPTIONS[name], device)
    r = np.random.default_rng(3)
    x_host = r.uniform(size=(5, 4))
    x = model.device.asarray(x_host)
    z = model.device.asarray(r.standard_normal((3, 2)))
    grid = to_host(model.log_likelihood_grid(x, z))                           # (5, 3)
    assert grid.shape == (5, 3)
    for g in range(3):
        codes = model.device.asarray(np.repeat(to_host(z)[g:g + 1], 5, axis=0))
        np.testing.assert_allclose(grid[:, g], -to_host(model.reconstruction_nll(x, codes)), rtol=1e-12)


def test_gaussian_grid_matches_scipy():
    """The expanded-square Gaussian grid against scipy.stats.norm.logpdf with the decoder's floored variance."""
    model = model_with(LIKELIHOOD_OPTIONS["gaussian-per-element"])
    r = np.random.default_rng(4)
    x, z = r.uniform(size=(6, 4)), r.standard_normal((2, 2))
    out = model.decode(z)
    for g in range(2):
        ref = scipy.stats.norm.logpdf(x, out["mean"][g], np.exp(0.5 * out["logvar"][g])).sum(axis=1)
        np.testing.assert_allclose(model.log_likelihood_grid(x, z)[:, g], ref, rtol=1e-12)


def test_discrete_and_unit_interval():
    bern, gauss, cat = (model_with(LIKELIHOOD_OPTIONS[k]).likelihood
                        for k in ("bernoulli", "gaussian-shared", "categorical"))
    binary, grey = np.array([[0.0, 1.0, 1.0, 0.0]]), np.array([[0.0, 0.5, 1.0, 0.0]])
    assert bern.discrete(binary) and not bern.discrete(grey)
    assert cat.discrete(grey) and not gauss.discrete(binary)
    assert bern.unit_interval and cat.unit_interval and not gauss.unit_interval


@pytest.mark.parametrize("build, message", [
    (lambda: parts.build_likelihood("poisson", 4, 3, None, "float64", "shared", 1.0, 1e-3, 256),
     "likelihood must be one of bernoulli, gaussian, categorical; got 'poisson'"),
    (lambda: parts.build_prior("cauchy", 2, 10), "prior must be one of normal, mog, vamp; got 'cauchy'"),
    (lambda: parts.check_likelihood_options("bernoulli", "diagonal", 1.0, 1e-3, 256), "gaussian_variance"),
    (lambda: parts.check_likelihood_options("bernoulli", "shared", -1.0, 1e-3, 256), "sigma must be"),
    (lambda: parts.check_likelihood_options("bernoulli", "shared", 1.0, 1e-3, 1), "levels must be"),
])
def test_the_registry_names_the_bad_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_standard_normal_box_and_mixture_box():
    normal = VAE(4, 2, hidden=(), dtype="float64").prior
    lo, hi, sigma = normal.quadrature_box({})
    assert list(lo) == [-6.0, -6.0] and list(hi) == [6.0, 6.0] and sigma == 1.0
    model = VAE(4, 2, hidden=(), dtype="float64", prior="mog", prior_components=2)
    model.params["prior.mu"][...] = [[-10.0, 0.0], [0.0, 3.0]]
    model.params["prior.logvar"][...] = [[0.0, 0.0], [2 * np.log(0.5), 0.0]]
    lo, hi, sigma = model.prior.quadrature_box(model.params)
    np.testing.assert_allclose(lo, [-16.0, -6.0])
    np.testing.assert_allclose(hi, [6.0, 9.0])
    assert sigma == pytest.approx(0.5)


# ---- a likelihood added by registering one class ----------------------------------------------------------------

class Laplace:
    """p(x|z) = prod_d exp(-|x_d - m_d| / b) / (2 b), m = h W + b0, a fixed scale b: the whole of a new
    likelihood, written here as a user would, from the interface in minivae/parts/__init__.py."""

    OPTIONS = ("sigma",)
    unit_interval = False
    row_width = 1

    def __init__(self, x_dim, h_dim, device, dtype, sigma):
        self.head, self.b = Dense("dec.out", h_dim, x_dim), float(sigma)

    def init_params(self, rng, gain):
        return self.head.init_params(rng, gain)

    def forward(self, params, h, x):
        m, head_cache = self.head.forward(params, h)
        r = x - m
        return np.sum(np.abs(r) / self.b + np.log(2 * self.b), axis=1), (head_cache, np.sign(r))

    def backward(self, dnll, cache, grads):
        head_cache, sign = cache
        return self.head.backward(-dnll[:, None] * sign / self.b, head_cache, grads)

    def decode(self, params, h):
        return {"mean": self.head.forward(params, h)[0]}

    def mean(self, params, h):
        return self.decode(params, h)["mean"]

    def sample(self, params, h, rng):
        m = to_host(self.mean(params, h))
        return m + rng.generator.laplace(0.0, self.b, m.shape)

    def log_prob_grid(self, params, x, h):
        m = self.mean(params, h)
        return -np.sum(np.abs(x[:, None, :] - m[None, :, :]) / self.b + np.log(2 * self.b), axis=2)

    def discrete(self, x):
        return False


def test_a_new_likelihood_needs_one_class_and_one_registry_line(monkeypatch):
    """Registering ``Laplace`` is enough: the model trains it (its gradient passes the finite-difference check
    for both objectives), its log-weights and grid evaluate it, and the pictures' mean and sampler read it;
    model.py, evaluate.py and plots.py are not touched."""
    from minivae import plots
    monkeypatch.setitem(parts.LIKELIHOODS, "laplace", Laplace)
    model = VAE(4, 2, hidden=(5,), likelihood="laplace", sigma=0.7, dtype="float64", seed=2)
    r = np.random.default_rng(0)
    x, eps = r.uniform(size=(6, 4)), r.standard_normal((3, 6, 2))
    for objective in (ELBO(0.5), IWBound()):
        _, grads, _ = model.loss_and_grads(x, eps, objective)
        for name, p in model.params.items():
            num = numerical_gradient(lambda objective=objective: model.loss_and_grads(x, eps, objective)[0], p,
                                     np.array(1.0))
            assert rel_error(grads[name], num) <= 1e-6, (objective, name)
    z = r.standard_normal((2, 2))
    m = model.decode(z)["mean"]
    ref = scipy.stats.laplace.logpdf(x[:, None, :], m[None], 0.7).sum(axis=2)
    np.testing.assert_allclose(model.log_likelihood_grid(x, z), ref, rtol=1e-12)
    assert model.log_weights(x, eps).shape == (3, 6)
    np.testing.assert_allclose(plots.decoder_mean(model, z), m)
    assert plots.sample_likelihood(model, z, RNG(0)).shape == (2, 4)


# ---- no module outside parts/ asks which part it holds ------------------------------------------------------------

NAMES = r"bernoulli|gaussian|categorical|normal|mog|fixed|shared|per-dim|per-element"
BRANCH = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({NAMES})["']|["']({NAMES})["']\s*(==|!=)""")


def test_no_branch_on_a_part_name_outside_the_parts():
    """The model, evaluation, pictures, data and training compose parts through their interface: no comparison
    with a likelihood, variance-mode or prior name anywhere in minivae/ outside minivae/parts/."""
    root = pathlib.Path(minivae.__file__).parent
    found = [f"{path.relative_to(root)}:{i}: {line.strip()}"
             for path in sorted(root.rglob("*.py")) if "parts" not in path.relative_to(root).parts
             for i, line in enumerate(path.read_text().splitlines(), 1) if BRANCH.search(line)]
    assert not found, "\n".join(found)


def test_the_branch_pattern_finds_a_branch():
    """The pattern above catches the forms the old model used."""
    for line in ('if self.likelihood == "categorical":', 'if prior != "normal":', 'if m in ("fixed", "shared"):',
                 'closed = "normal" == prior'):
        assert BRANCH.search(line), line
    assert not BRANCH.search('likelihood="bernoulli", dtype="float32"')
