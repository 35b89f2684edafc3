"""The notes' executable maths: each claim a note makes about a formula or a number, checked.

Every claim below is a function registered for its note; the note names it as
``derivations/check_notes.py::<claim>`` (tests/test_docs.py checks both directions). A claim checks a note's final
formulas against an independent reference (scipy, numpy.linalg, complex-step derivatives, Gauss-Hermite
quadrature, Monte Carlo with a fixed seed) and, where the note says so, against minivae's own code, so that a
change to either the prose or the code that breaks the claim fails here. The unit tests of the code are in
tests/ (one file per module); these are the notes' own checks.

    python derivations/check_notes.py            every claim, one line each; exit status 1 if any fails
    python derivations/check_notes.py kl adam    the claims of kl.md and adam.md only

tests/test_docs.py runs every claim as one parametrised test, so a failure names its claim.
"""
import functools
import itertools
import math
import sys
import traceback
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import special, stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                 # run as a script: this checkout's minivae, not an installed one
    sys.path.insert(0, str(ROOT))

from minivae.gradcheck import complex_step_gradient  # noqa: E402  (the reference derivative, after the path)

CLAIMS = {}                                   # claim name -> (note, function), in the order of the notes


def claim(note):
    """Register the decorated function as a claim of derivations/<note>.md."""
    def register(fn):
        if fn.__name__ in CLAIMS:
            raise ValueError(f"two claims named {fn.__name__}")
        CLAIMS[fn.__name__] = (note, fn)
        return fn
    return register


# ---- helpers ---------------------------------------------------------------------------------------------------

LOG_2PI = math.log(2.0 * math.pi)


def close(got, want, rel=0.0, atol=0.0):
    """|got - want| <= max(rel |want|, atol), for scalars (pytest.approx's rule)."""
    return abs(got - want) <= max(rel * abs(want), atol)


def raises(error, fn):
    try:
        fn()
    except error:
        return True
    return False


def within_standard_errors(samples, expected, k=4.0):
    """Assert the Monte Carlo mean of samples is within k standard errors of expected (fixed seeds: exact)."""
    samples = np.asarray(samples)
    mean, se = float(np.mean(samples)), float(np.std(samples, ddof=1) / math.sqrt(samples.size))
    assert abs(mean - expected) <= k * se, f"mean {mean:.6g}, expected {expected:.6g}, standard error {se:.3g}"


@functools.cache
def _gauss_hermite(n=10):
    """Nodes and weights of E[g(t)], t ~ N(0, 1): exact for polynomials of degree <= 2n - 1."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return t, w / math.sqrt(2.0 * math.pi)


def normal_expectation(g):
    t, w = _gauss_hermite()
    return float(np.sum(w * g(t)))


def kl_two_gaussians(mu0, S0, mu1, S1):
    """kl.md, Step 3: 1/2 [tr(S1^-1 S0) + (mu1-mu0)^T S1^-1 (mu1-mu0) - k + log det S1 - log det S0]."""
    k = mu0.shape[0]
    d = mu1 - mu0
    _, logdet1 = np.linalg.slogdet(S1)
    _, logdet0 = np.linalg.slogdet(S0)
    return 0.5 * (np.trace(np.linalg.solve(S1, S0)) + d @ np.linalg.solve(S1, d) - k + logdet1 - logdet0)


def kl_closed_form(mu, logvar):
    """kl.md, Step 6 (complex-capable)."""
    return 0.5 * np.sum(np.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1)


def gaussian_nll_formula(x, mean, logvar):
    """likelihoods.md, Gaussian forward (complex-capable)."""
    return 0.5 * np.sum(LOG_2PI + logvar + (x - mean) ** 2 * np.exp(-logvar), axis=-1)


def bernoulli_reference_ll(x, a):
    """x log sigmoid(a) + (1 - x) log(1 - sigmoid(a)), per element, with scipy; log(1 - sigmoid(a)) = log_expit(-a)."""
    return x * special.log_expit(a) + (1.0 - x) * special.log_expit(-a)


def _spd(rng, k):
    A = rng.standard_normal((k, k))
    return A @ A.T + 0.5 * np.eye(k)


def _linear_gaussian(seed=12, Z=2, D=3):
    """p(z) = N(0, I), p(x|z) = N(z A + c, s2 I): every term of the decomposition has a closed form."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((Z, D)), rng.standard_normal(D), 0.6, rng.standard_normal(D)


def _expected_loglik(x, A, c, s2, m, S):
    """E_{z ~ N(m, S)} log N(x; z A + c, s2 I) = -D/2 log(2 pi s2) - (|x - m A - c|^2 + tr(A^T S A)) / (2 s2)."""
    D = x.shape[0]
    r = x - m @ A - c
    return -0.5 * D * math.log(2.0 * math.pi * s2) - (r @ r + np.trace(A.T @ S @ A)) / (2.0 * s2)


# ---- linear.md -------------------------------------------------------------------------------------------------

@claim("linear")
def linear_backward_matches_index_form():
    """The index form (loops as the note writes them) equals complex-step derivatives of sum(dy * (x W + b)), the
    matrix form dy W^T, x^T dy, and linear_backward."""
    from minivae.layers import linear_backward, linear_forward
    rng = np.random.default_rng(0)
    N, D_in, D_out = 3, 4, 5
    x, W, b = rng.standard_normal((N, D_in)), rng.standard_normal((D_in, D_out)), rng.standard_normal(D_out)
    dy = rng.standard_normal((N, D_out))
    dx = np.array([[sum(dy[n, k] * W[i, k] for k in range(D_out)) for i in range(D_in)] for n in range(N)])
    dW = np.array([[sum(x[m, i] * dy[m, j] for m in range(N)) for j in range(D_out)] for i in range(D_in)])
    db = np.array([sum(dy[m, j] for m in range(N)) for j in range(D_out)])

    def s(x_, W_, b_):
        return np.sum(dy * (x_ @ W_ + b_))

    np.testing.assert_allclose(dx, complex_step_gradient(lambda a: s(a, W, b), x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dW, complex_step_gradient(lambda a: s(x, a, b), W), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db, complex_step_gradient(lambda a: s(x, W, a), b), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dy @ W.T, dx, rtol=1e-12)
    np.testing.assert_allclose(x.T @ dy, dW, rtol=1e-12)
    _, cache = linear_forward(x, W, b)
    for got, want in zip(linear_backward(dy, cache), (dx, dW, db), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---- activations.md --------------------------------------------------------------------------------------------

@claim("activations")
def softplus_derivative_identity():
    """-expm1(-softplus(x)) = sigmoid(x) to 1e-12 over [-40, 40], in the op too; 1 - exp(-y) returns 0 at x = -40
    where sigmoid(-40) = 4.2e-18; and the stable forward max(x, 0) + log1p(exp(-|x|)) is log(1 + e^x)."""
    from minivae.layers import softplus_backward, softplus_forward
    x = np.linspace(-40.0, 40.0, 801)
    y = np.logaddexp(0.0, x)                       # softplus, independent of minivae
    np.testing.assert_allclose(-np.expm1(-y), special.expit(x), rtol=1e-12, atol=0)
    y_op, cache = softplus_forward(x)
    np.testing.assert_allclose(y_op, y, rtol=1e-14, atol=0)
    np.testing.assert_allclose(softplus_backward(np.ones_like(x), cache), special.expit(x), rtol=1e-12, atol=0)
    y40 = np.logaddexp(0.0, -40.0)
    assert 1.0 - np.exp(-y40) == 0.0
    assert close(-np.expm1(-y40), special.expit(-40.0), rel=1e-12)
    np.testing.assert_allclose(np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))), y, rtol=1e-14)


@claim("activations")
def stable_forms_do_not_overflow():
    """Both branches of the stable sigmoid are finite everywhere, the naive sigmoid and softplus overflow at
    |x| = 1000, and the ops (the stable forms) raise no floating-point error and equal expit / logaddexp."""
    from minivae.layers import sigmoid_forward, softplus_forward
    x = np.array([-1000.0, -800.0, -50.0, -1.0, 0.0, 1.0, 50.0, 800.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        e = np.exp(-np.abs(x))
        for branch in (1.0 / (1.0 + e), e / (1.0 + e)):
            assert np.all(np.isfinite(branch))
        y_sig, _ = sigmoid_forward(x)
        y_sp, _ = softplus_forward(x)
        assert raises(FloatingPointError, lambda: 1.0 / (1.0 + np.exp(-x)))       # the naive sigmoid at -1000
        assert raises(FloatingPointError, lambda: np.log(1.0 + np.exp(x)))        # the naive softplus at 1000
    np.testing.assert_allclose(y_sig, special.expit(x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(y_sp, np.logaddexp(0.0, x), rtol=1e-15, atol=0)


# ---- reparameterization.md -------------------------------------------------------------------------------------

@claim("reparameterization")
def reparam_partial_derivatives():
    """dmu = dz and dlogvar = dz eps sigma / 2 = dz (z - mu) / 2, against complex-step derivatives of
    z = mu + exp(logvar / 2) eps, and reparameterize_backward."""
    from minivae.reparam import reparameterize_backward, reparameterize_forward
    rng = np.random.default_rng(2)
    mu, logvar, eps, dz = (rng.standard_normal((3, 4)) for _ in range(4))

    def z(m, lv):
        return m + np.exp(lv / 2.0) * eps

    dmu_ref = complex_step_gradient(lambda a: np.sum(dz * z(a, logvar)), mu)
    dlv_ref = complex_step_gradient(lambda a: np.sum(dz * z(mu, a)), logvar)
    sigma = np.exp(logvar / 2.0)
    np.testing.assert_allclose(dz, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(0.5 * dz * eps * sigma, dlv_ref, rtol=1e-12)
    np.testing.assert_allclose(0.5 * dz * (mu + sigma * eps - mu), dlv_ref, rtol=1e-10, atol=1e-14)
    _, cache = reparameterize_forward(mu, logvar, eps)
    dmu, dlv = reparameterize_backward(dz, cache)
    np.testing.assert_allclose(dmu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


@claim("reparameterization")
def score_function_variance_claims():
    """q = N(0, 1), f(z) = z^2 + c, the gradient in mu at mu = 0: the moments E[z^2] = 1, E[z^4] = 3, E[z^6] = 15;
    the score estimator (z^2 + c) z has mean 0 and variance 15 + 6c + c^2; the pathwise 2z has mean 0 and
    variance 4 (c = 0, 1, 5; Gauss-Hermite quadrature, exact for these polynomials)."""
    for power, moment in ((2, 1.0), (4, 3.0), (6, 15.0)):
        assert close(normal_expectation(lambda t, p=power: t ** p), moment, rel=1e-12), power
    for c in (0.0, 1.0, 5.0):
        def score(t, c=c):
            return (t * t + c) * t
        assert abs(normal_expectation(score)) < 1e-12, c
        assert close(normal_expectation(lambda t, s=score: s(t) ** 2), 15.0 + 6.0 * c + c * c, rel=1e-12), c
        assert abs(normal_expectation(lambda t: 2.0 * t)) < 1e-12
        assert close(normal_expectation(lambda t: (2.0 * t) ** 2), 4.0, rel=1e-12)


# ---- kl.md -----------------------------------------------------------------------------------------------------

@claim("kl")
def kl_general_formula_matches_monte_carlo():
    """Step 3's KL between two full-covariance Gaussians against a Monte Carlo average of log p0 - log p1
    (scipy's multivariate_normal.logpdf, 2 x 10^5 draws, within 4 standard errors)."""
    rng = np.random.default_rng(4)
    k, M = 3, 200_000
    mu0, mu1 = rng.standard_normal(k), rng.standard_normal(k)
    S0, S1 = _spd(rng, k), _spd(rng, k)
    z = rng.multivariate_normal(mu0, S0, size=M)
    log_ratio = stats.multivariate_normal.logpdf(z, mu0, S0) - stats.multivariate_normal.logpdf(z, mu1, S1)
    within_standard_errors(log_ratio, kl_two_gaussians(mu0, S0, mu1, S1))


@claim("kl")
def kl_closed_form_matches_general_formula():
    """Step 6 (and Step 5's sigma form) is Step 3 at S0 = diag(sigma^2), mu1 = 0, S1 = I; kl_std_normal_forward
    computes it; it is 0 at the prior."""
    from minivae.kl import kl_std_normal_forward
    rng = np.random.default_rng(5)
    N, Z = 6, 4
    mu, logvar = rng.standard_normal((N, Z)), rng.uniform(-2.0, 2.0, (N, Z))
    general = np.array([kl_two_gaussians(mu[n], np.diag(np.exp(logvar[n])), np.zeros(Z), np.eye(Z))
                        for n in range(N)])
    np.testing.assert_allclose(kl_closed_form(mu, logvar), general, rtol=1e-12)
    sigma2 = np.exp(logvar)
    np.testing.assert_allclose(0.5 * np.sum(sigma2 + mu ** 2 - 1.0 - np.log(sigma2), axis=1), general, rtol=1e-12)
    kl, _ = kl_std_normal_forward(mu, logvar)
    np.testing.assert_allclose(kl, general, rtol=1e-12)
    assert kl_closed_form(np.zeros(Z), np.zeros(Z)) == 0.0


@claim("kl")
def kl_gradients_match_complex_step():
    """dmu = dkl mu and dlogvar = dkl (e^logvar - 1) / 2 against complex-step derivatives of Step 6, and
    kl_std_normal_backward."""
    from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
    rng = np.random.default_rng(7)
    mu, logvar, dkl = rng.standard_normal((3, 4)), rng.uniform(-2, 2, (3, 4)), rng.standard_normal(3)
    dmu_ref = complex_step_gradient(lambda a: np.sum(dkl * kl_closed_form(a, logvar)), mu)
    dlv_ref = complex_step_gradient(lambda a: np.sum(dkl * kl_closed_form(mu, a)), logvar)
    np.testing.assert_allclose(dkl[:, None] * mu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dkl[:, None] * (np.exp(logvar) - 1.0) / 2.0, dlv_ref, rtol=1e-12)
    _, cache = kl_std_normal_forward(mu, logvar)
    dmu, dlv = kl_std_normal_backward(dkl, cache)
    np.testing.assert_allclose(dmu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


# ---- likelihoods.md --------------------------------------------------------------------------------------------

@claim("likelihoods")
def bernoulli_nll_formula_matches_log_expit():
    """sum_d softplus(a) - x a, and its stable form, equal -[x log sigmoid(a) + (1 - x) log(1 - sigmoid(a))]
    (scipy's log_expit) for binary and soft targets; so does bernoulli_nll_forward."""
    from minivae.likelihoods import bernoulli_nll_forward
    rng = np.random.default_rng(8)
    a = rng.uniform(-5.0, 5.0, (5, 7))
    for x in (rng.integers(0, 2, a.shape).astype(np.float64), rng.uniform(0.0, 1.0, a.shape)):
        formula = np.sum(np.logaddexp(0.0, a) - x * a, axis=1)
        stable = np.sum(np.maximum(a, 0.0) + np.log1p(np.exp(-np.abs(a))) - x * a, axis=1)
        reference = -np.sum(bernoulli_reference_ll(x, a), axis=1)
        np.testing.assert_allclose(formula, reference, rtol=1e-12)
        np.testing.assert_allclose(stable, reference, rtol=1e-12)
        nll, _ = bernoulli_nll_forward(x, a)
        np.testing.assert_allclose(nll, reference, rtol=1e-12)


@claim("likelihoods")
def bernoulli_stable_where_log_sigmoid_fails():
    """At a = -800 (x = 1) and a = 40 (x = 0) the textbook log sigmoid form gives inf twice (log 0); the stable
    form, and the op with every floating-point error raising, give 800 and 40, and the gradient sigmoid(a) - x."""
    from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
    x = np.array([[1.0, 0.0]])
    a = np.array([[-800.0, 40.0]])
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        naive = -(x * np.log(special.expit(a)) + (1.0 - x) * np.log(1.0 - special.expit(a)))
    assert np.all(np.isinf(naive))
    reference = -bernoulli_reference_ll(x, a)
    np.testing.assert_allclose(reference, [[800.0, 40.0]], rtol=1e-15)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        stable = np.maximum(a, 0.0) + np.log1p(np.exp(-np.abs(a))) - x * a
        nll, cache = bernoulli_nll_forward(x, a)
        da = bernoulli_nll_backward(np.ones(1), cache)
    np.testing.assert_allclose(stable, reference, rtol=1e-15)
    np.testing.assert_allclose(nll, reference.sum(axis=1), rtol=1e-15)
    np.testing.assert_allclose(da, special.expit(a) - x, rtol=1e-15, atol=0)


LOGVAR_SHAPES = [(5, 3), (3,), (1, 3), ()]


@claim("likelihoods")
def gaussian_nll_formula_matches_norm_logpdf():
    """The Gaussian forward, 1/2 sum_d [log 2 pi + logvar + (x - mean)^2 e^-logvar], equals scipy's
    -norm.logpdf for a per-element, per-dimension (1-D and 2-D) and scalar logvar; so does gaussian_nll_forward."""
    from minivae.likelihoods import gaussian_nll_forward
    rng = np.random.default_rng(9)
    for shape in LOGVAR_SHAPES:
        x, mean = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
        logvar = rng.uniform(-1.5, 1.5, shape)
        reference = -np.sum(stats.norm.logpdf(x, loc=mean, scale=np.exp(logvar / 2.0)), axis=1)
        np.testing.assert_allclose(gaussian_nll_formula(x, mean, logvar), reference, rtol=1e-12)
        nll, _ = gaussian_nll_forward(x, mean, logvar)
        np.testing.assert_allclose(nll, reference, rtol=1e-12)


@claim("likelihoods")
def likelihood_gradients_match_complex_step():
    """The Bernoulli dlogits = dnll (sigmoid(a) - x), the Gaussian dmean = -dnll (x - mean) / var and dlogvar =
    dnll (1 - (x - mean)^2 / var) / 2 summed over the broadcast axes, against complex-step derivatives of the
    forwards, for every logvar shape; the backward ops equal them, dlogvar with logvar's shape."""
    from minivae.likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, gaussian_nll_backward,
                                     gaussian_nll_forward)
    rng = np.random.default_rng(11)
    N, D = 5, 3
    for shape in LOGVAR_SHAPES:
        dnll = rng.standard_normal(N)
        x01, a = rng.uniform(0.0, 1.0, (N, D)), rng.uniform(-4.0, 4.0, (N, D))

        def ref_nll(t, x01=x01):
            sig = 1.0 / (1.0 + np.exp(-t))
            return -np.sum(x01 * np.log(sig) + (1.0 - x01) * np.log(1.0 - sig), axis=1)

        da_ref = complex_step_gradient(lambda t, dnll=dnll, f=ref_nll: np.sum(dnll * f(t)), a)
        np.testing.assert_allclose(dnll[:, None] * (special.expit(a) - x01), da_ref, rtol=1e-11)
        _, cache = bernoulli_nll_forward(x01, a)
        np.testing.assert_allclose(bernoulli_nll_backward(dnll, cache), da_ref, rtol=1e-11)
        x, mean = rng.standard_normal((N, D)), rng.standard_normal((N, D))
        logvar = rng.uniform(-1.0, 1.0, shape)
        dm_ref = complex_step_gradient(lambda t, x=x, lv=logvar, d=dnll: np.sum(d * gaussian_nll_formula(x, t, lv)),
                                       mean)
        dlv_ref = complex_step_gradient(lambda t, x=x, m=mean, d=dnll: np.sum(d * gaussian_nll_formula(x, m, t)),
                                        logvar)
        var = np.exp(logvar)
        np.testing.assert_allclose(-dnll[:, None] * (x - mean) / var, dm_ref, rtol=1e-12)
        g = 0.5 * dnll[:, None] * (1.0 - (x - mean) ** 2 / var)            # (N, D): one entry per use
        reduced = {(N, D): g, (D,): np.sum(g, axis=0), (1, D): np.sum(g, axis=0, keepdims=True),
                   (): np.sum(g)}[shape]
        np.testing.assert_allclose(reduced, dlv_ref, rtol=1e-12)
        _, cache = gaussian_nll_forward(x, mean, logvar)
        dm, dlv = gaussian_nll_backward(dnll, cache)
        np.testing.assert_allclose(dm, dm_ref, rtol=1e-12)
        assert np.shape(dlv) == shape
        np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


@claim("likelihoods")
def naive_bernoulli_loss_keeps_about_six_and_a_half_digits_in_float64():
    """softplus(20) - 20 at x = 1 in float64: 2.9e-7 relative error, at most half a spacing of 20 over the loss,
    8.6e-7; in float32 the difference is 0."""
    exact = math.log1p(math.exp(-20.0))                                       # 2.06e-9
    naive = (np.float64(20.0) + np.log1p(np.exp(np.float64(-20.0)))) - np.float64(20.0)
    assert close(abs(naive - exact) / exact, 2.88e-7, rel=0.01)
    assert close(np.spacing(20.0) / 2 / exact, 8.62e-7, rel=0.01)
    assert 6.0 < -math.log10(abs(naive - exact) / exact) < 7.0
    assert (np.float32(20.0) + np.float32(exact)) - np.float32(20.0) == 0.0


@claim("likelihoods")
def one_minus_x_is_exact_only_from_one_half():
    """1 - x is exact for x in [1/2, 1] (Sterbenz), rounded below: 1 - 1e-20 is 1, and never below 0."""
    rng = np.random.default_rng(31)
    for x in np.concatenate([rng.uniform(0.5, 1.0, 1000), [0.5, 1.0]]):
        assert Fraction(float(1.0 - x)) == 1 - Fraction(float(x)), x
    assert 1.0 - 1e-20 == 1.0 and Fraction(1.0 - 0.1) != 1 - Fraction(0.1)
    assert np.all(1.0 - rng.uniform(0.0, 0.5, 1000) >= 0.0)


# ---- elbo.md ---------------------------------------------------------------------------------------------------

@claim("elbo")
def elbo_decomposition_linear_gaussian():
    """On a linear-Gaussian model: log p(x) = ELBO + KL(q || posterior) for arbitrary diagonal q, so ELBO <=
    log p(x), with equality at the true (full-covariance) posterior."""
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    log_px = stats.multivariate_normal.logpdf(x, c, A.T @ A + s2 * np.eye(D))
    P = np.eye(Z) + A @ A.T / s2                                      # posterior precision
    S_post = np.linalg.inv(P)
    m_post = np.linalg.solve(P, A @ (x - c)) / s2
    rng = np.random.default_rng(13)
    for _ in range(5):
        m, v = rng.standard_normal(Z), np.exp(rng.uniform(-1.0, 1.0, Z))
        elbo = _expected_loglik(x, A, c, s2, m, np.diag(v)) - kl_closed_form(m, np.log(v))
        gap = kl_two_gaussians(m, np.diag(v), m_post, S_post)
        np.testing.assert_allclose(elbo + gap, log_px, rtol=1e-12)
        assert elbo < log_px and gap > 0.0
    elbo_post = (_expected_loglik(x, A, c, s2, m_post, S_post)
                 - kl_two_gaussians(m_post, S_post, np.zeros(Z), np.eye(Z)))
    np.testing.assert_allclose(elbo_post, log_px, rtol=1e-12)


@claim("elbo")
def single_sample_elbo_estimate_is_unbiased():
    """-(nll + kl) at one eps per example, from the ops (sampler, Gaussian NLL, closed-form KL), averages to the
    closed-form ELBO of a linear-Gaussian model (2 x 10^5 draws, within 4 standard errors)."""
    from minivae.kl import kl_std_normal_forward
    from minivae.likelihoods import gaussian_nll_forward
    from minivae.reparam import reparameterize_forward
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    m, logvar = np.array([0.3, -0.4]), np.array([-0.7, 0.2])
    elbo = _expected_loglik(x, A, c, s2, m, np.diag(np.exp(logvar))) - kl_closed_form(m, logvar)
    M = 200_000
    rng = np.random.default_rng(14)
    mu, lv = np.tile(m, (M, 1)), np.tile(logvar, (M, 1))
    z, _ = reparameterize_forward(mu, lv, rng.standard_normal((M, Z)))
    nll, _ = gaussian_nll_forward(np.tile(x, (M, 1)), z @ A + c, np.array(math.log(s2)))
    kl, _ = kl_std_normal_forward(mu, lv)
    within_standard_errors(-(nll + kl), elbo)


# ---- adam.md ---------------------------------------------------------------------------------------------------

@claim("adam")
def adam_bias_correction_constant_gradient():
    """For a constant gradient g, m_t = (1 - beta1^t) g and v_t = (1 - beta2^t) g^2, so the corrected moments are
    exactly g and g^2; minivae's Adam keeps those moments (50 steps, gradients from 1e-3 to 1e3)."""
    from minivae.optim import Adam
    rng = np.random.default_rng(16)
    g = rng.standard_normal(10) * np.logspace(-3, 3, 10)
    b1, b2 = 0.9, 0.999
    m, v = np.zeros_like(g), np.zeros_like(g)
    opt = Adam({"w": np.zeros_like(g)}, lr=1e-3, betas=(b1, b2))
    for t in range(1, 51):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        np.testing.assert_allclose(m, (1.0 - b1 ** t) * g, rtol=1e-12)
        np.testing.assert_allclose(m / (1.0 - b1 ** t), g, rtol=1e-12)
        np.testing.assert_allclose(v / (1.0 - b2 ** t), g * g, rtol=1e-12)
        opt.step({"w": g})
        np.testing.assert_allclose(opt.m["w"] / (1.0 - b1 ** t), g, rtol=1e-12)
        np.testing.assert_allclose(opt.v["w"] / (1.0 - b2 ** t), g * g, rtol=1e-12)


@claim("adam")
def adam_first_moment_bias_stationary():
    """For i.i.d. gradients, E[m_t] = (1 - beta1^t) E[g] and E[v_t] = (1 - beta2^t) E[g^2]: minivae's Adam over
    4 x 10^5 independent coordinates (chains), t = 5, g ~ N(1.5, 2^2); within 4 standard errors."""
    from minivae.optim import Adam
    rng = np.random.default_rng(17)
    b1, b2, t, chains, mean_g, sd_g = 0.9, 0.999, 5, 400_000, 1.5, 2.0
    opt = Adam({"w": np.zeros(chains)}, lr=1e-3, betas=(b1, b2))
    for _ in range(t):
        opt.step({"w": rng.normal(mean_g, sd_g, chains)})
    m, v = opt.m["w"], opt.v["w"]
    within_standard_errors(m, (1.0 - b1 ** t) * mean_g)
    within_standard_errors(m / (1.0 - b1 ** t), mean_g)
    within_standard_errors(v / (1.0 - b2 ** t), mean_g ** 2 + sd_g ** 2)


@claim("adam")
def sgd_momentum_constant_gradient():
    """SGD with momentum mu under a constant gradient: v_t = g (1 - mu^t) / (1 - mu) and theta_t = -lr g
    sum_s (1 - mu^s) / (1 - mu), in minivae's SGD."""
    from minivae.optim import SGD
    g = np.array([0.5, -2.0, 3.0])
    lr, mu = 0.1, 0.9
    theta = {"w": np.zeros_like(g)}
    opt = SGD(theta, lr=lr, momentum=mu)
    for t in range(1, 31):
        opt.step({"w": g})
        np.testing.assert_allclose(opt.v["w"], g * (1.0 - mu ** t) / (1.0 - mu), rtol=1e-12)
        total = sum((1.0 - mu ** s) / (1.0 - mu) for s in range(1, t + 1))
        np.testing.assert_allclose(theta["w"], -lr * g * total, rtol=1e-12)


@claim("adam")
def adam_step_is_bounded_by_kingma_and_ba():
    """|step| <= lr (1 - beta1) / sqrt(1 - beta2) = 3.16 lr at the defaults; a gradient of 1 after 2,999 zero
    gradients nearly reaches it (3.08 lr); random gradients with rare spikes stay under it."""
    from minivae.optim import Adam
    p = {"w": np.zeros(1)}
    opt = Adam(p, lr=1e-3)
    for _ in range(2999):
        opt.step({"w": np.zeros(1)})
    before = p["w"].copy()
    opt.step({"w": np.ones(1)})
    bound = 0.1 / math.sqrt(0.001)
    assert close(abs(p["w"][0] - before[0]) / 1e-3, 3.0827, atol=1e-4) and 3.08 < bound < 3.17
    rng = np.random.default_rng(30)
    p = {"w": np.zeros(50)}
    opt = Adam(p, lr=1e-3)
    for _ in range(3000):
        g = rng.standard_normal(50) * np.where(rng.uniform(size=50) < 0.01, 100.0, 0.01)
        before = p["w"].copy()
        opt.step({"w": g})
        assert np.max(np.abs(p["w"] - before)) <= bound * 1e-3 * (1 + 1e-9)


# ---- gradcheck.md ----------------------------------------------------------------------------------------------

@claim("gradcheck")
def central_difference_truncation_is_order_h_squared():
    """numerical_gradient's error on sin at 1 is h^2/6 f''' (to 0.2%), the one-sided difference's h/2 f''."""
    from minivae.gradcheck import numerical_gradient
    x0 = 1.0
    for h in (1e-1, 3e-2, 1e-2):
        x = np.array([x0])
        central = numerical_gradient(lambda x=x: np.sin(x), x, np.ones(1), h=h)[0]
        predicted = h * h / 6.0 * (-math.cos(x0))
        assert close((central - math.cos(x0)) / predicted, 1.0, atol=2e-3), h
        one_sided = (math.sin(x0 + h) - math.sin(x0)) / h
        assert close((one_sided - math.cos(x0)) / (h / 2.0 * -math.sin(x0)), 1.0, atol=0.1), h


def _median_central_error(dtype, xs, **h):
    """The median relative error of minivae's numerical_gradient of sin (at its default step unless ``h``
    is given) on xs rounded to dtype, against cos."""
    from minivae.gradcheck import numerical_gradient
    x = xs.astype(dtype)
    num = numerical_gradient(lambda: np.sin(x), x, np.ones(x.shape), **h)
    exact = np.cos(x.astype(np.float64))
    return float(np.median(np.abs(num - exact) / np.maximum(np.abs(num) + np.abs(exact), 1e-8)))


@claim("gradcheck")
def step_size_near_optimum_in_float64_not_in_float32():
    """minivae's default step H is within a factor of 2 of eps^(1/3); in float64 numerical_gradient at that
    default beats larger steps (truncation) and smaller ones (roundoff), to better than 1e-10; in float32 no step
    gets within 1e-6, and the default step is off by more than 1e-4."""
    from minivae import gradcheck
    xs = np.random.default_rng(18).uniform(-2.0, 2.0, 200)
    assert 0.5 < gradcheck.H / np.finfo(np.float64).eps ** (1 / 3) < 2.0
    at_default = _median_central_error(np.float64, xs)
    others = [_median_central_error(np.float64, xs, h=h) for h in (1e-2, 1e-3, 1e-7, 1e-9)]
    assert at_default < 1e-10 and at_default < min(others), (at_default, others)
    e32 = [_median_central_error(np.float32, xs, h=h) for h in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4)]
    assert min(e32) > 1e-6, e32
    assert _median_central_error(np.float32, xs) > 1e-4


@claim("gradcheck")
def rel_error_formula():
    """rel_error is max_i |a - b| / max(|a| + |b|, 1e-8): symmetric, 0 for 0 against 0, scale-free."""
    from minivae.gradcheck import rel_error
    rng = np.random.default_rng(19)
    a, b = rng.standard_normal(20), rng.standard_normal(20)
    a[:3] = b[:3] = 0.0
    a[3], b[3] = 1e-12, 2e-12
    direct = np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-8))
    assert close(rel_error(a, b), direct, rel=1e-15)
    assert rel_error(b, a) == rel_error(a, b)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert close(rel_error(1e3 * a[4:], 1e3 * b[4:]), rel_error(a[4:], b[4:]), rel=1e-12)


@claim("gradcheck")
def all_ones_upstream_hides_a_missing_upstream_factor():
    """A Bernoulli backward that forgets dnll passes the check with an all-ones upstream gradient and fails it
    with a random one; the real backward passes with the random one."""
    from minivae.gradcheck import numerical_gradient, rel_error
    from minivae.likelihoods import bernoulli_nll_backward, bernoulli_nll_forward
    rng = np.random.default_rng(20)
    x, a = rng.uniform(0.0, 1.0, (3, 4)), rng.standard_normal((3, 4))

    def wrong(dnll, cache):
        return special.expit(cache[1]) - cache[0]      # forgets dnll[:, None]

    def f():
        return bernoulli_nll_forward(x, a)[0]

    _, cache = bernoulli_nll_forward(x, a)
    ones, rand = np.ones(3), rng.standard_normal(3)
    assert rel_error(wrong(ones, cache), numerical_gradient(f, a, ones)) < 1e-8
    assert rel_error(wrong(rand, cache), numerical_gradient(f, a, rand)) > 0.1
    assert rel_error(bernoulli_nll_backward(rand, cache), numerical_gradient(f, a, rand)) < 1e-8


@claim("gradcheck")
def per_element_differencing_reduces_roundoff():
    """With 100 large outputs that x does not touch, differencing the weighted sums loses digits (> 1e-7) that
    numerical_gradient, differencing per output element, keeps (< 1e-9)."""
    from minivae.gradcheck import numerical_gradient, rel_error
    rng = np.random.default_rng(21)
    x = np.array([0.3, -0.7, 1.1])
    big = 1e6 * rng.standard_normal(100)
    dout = rng.standard_normal(103)

    def f():
        return np.concatenate([np.sin(x), big])

    exact = np.cos(x) * dout[:3]
    h = 1e-5
    naive = np.zeros(3)
    for i in range(3):
        old = x[i]
        x[i] = old + h
        pos = np.sum(f() * dout)
        x[i] = old - h
        neg = np.sum(f() * dout)
        x[i] = old
        naive[i] = (pos - neg) / (2.0 * h)
    assert rel_error(numerical_gradient(f, x, dout, h=h), exact) < 1e-9
    assert rel_error(naive, exact) > 1e-7


def _small_vae(rng):
    from minivae.model import VAE
    model = VAE(4, 2, hidden=(3,), activation="tanh", likelihood="bernoulli", dtype="float64", seed=1)
    return model, rng.uniform(0.0, 1.0, (3, 4)), rng.standard_normal((3, 2))


@claim("gradcheck")
def redrawn_noise_breaks_the_check():
    """The directional check of VAE.loss_and_grads passes with eps held fixed (< 1e-7) and fails by order 1
    (> 0.5) when every evaluation redraws eps."""
    from minivae.gradcheck import directional_check
    rng = np.random.default_rng(23)
    model, x, eps = _small_vae(rng)
    _, grads, _ = model.loss_and_grads(x, eps)
    fixed = directional_check(lambda: model.loss_and_grads(x, eps)[0], model.params, grads)
    redrawn = directional_check(lambda: model.loss_and_grads(x, rng.standard_normal(eps.shape))[0],
                                model.params, grads)
    assert fixed < 1e-7, fixed
    assert redrawn > 0.5, redrawn


@claim("gradcheck")
def saturated_tanh_is_ill_conditioned():
    """At x = 15 the stored tanh has lost 1 - y to about 3 digits, the central difference is exactly 0, and the
    check reports over 1e-6 there; at moderate inputs it passes below 1e-8."""
    from minivae.gradcheck import check_backward, numerical_gradient
    from minivae.layers import tanh_backward, tanh_forward
    x = np.array([15.0])
    true_derivative = 4.0 * math.exp(-30.0) / (1.0 + math.exp(-30.0)) ** 2
    y = np.tanh(x)
    assert abs((1.0 - y[0] * y[0]) - true_derivative) / true_derivative > 1e-5
    assert numerical_gradient(lambda: np.tanh(x), x, np.array([0.8]))[0] == 0.0
    assert check_backward(tanh_forward, tanh_backward, [x])[0] > 1e-6
    moderate = np.random.default_rng(24).uniform(-2.0, 2.0, (3, 4))
    assert check_backward(tanh_forward, tanh_backward, [moderate])[0] < 1e-8


@claim("gradcheck")
def saturated_tanh_rel_error_scales_with_the_upstream_gradient():
    """At tanh(15) the analytic gradient 3.7e-13 dy is below rel_error's 1e-8 floor: the check reports 3.7e-5 |dy|,
    from 4.6e-8 to 7.6e-5 over seeds 0-19, and fails the 1e-6 tolerance exactly when |dy| > 0.027."""
    from minivae.gradcheck import check_backward
    from minivae.layers import tanh_backward, tanh_forward
    x = np.array([15.0])
    errors, dys = [], []
    for seed in range(20):
        errors.append(check_backward(tanh_forward, tanh_backward, [x], seed=seed)[0])
        dys.append(abs(np.random.default_rng(seed).standard_normal(1)[0]))   # check_backward's dy
    errors, dys = np.array(errors), np.array(dys)
    np.testing.assert_allclose(errors / dys, 4 * math.exp(-30.0) / 1e-8, rtol=1e-3)
    assert close(errors.min(), 4.6e-8, rel=0.05) and close(errors.max(), 7.6e-5, rel=0.05)
    assert np.all((errors > 1e-6) == (dys > 0.027))


# ---- evaluation.md ---------------------------------------------------------------------------------------------

@claim("evaluation")
def an_inactive_unit_can_carry_two_nats():
    """Codes mu(x) with variance 0.005 are below the 0.01 threshold, yet with q = N(mu(x), 0.01^2) the information
    I(x; z) = 1/2 log(1 + 0.005 / 0.01^2) = 1/2 log 51, about 2 nats: Monte Carlo of E[log q(z|x) - log q(z)],
    q(z) = N(0, 0.005 + s^2), against the closed form (4 standard errors) and the note's 2 (0.05)."""
    rng = np.random.default_rng(32)
    s, var_mu = 0.01, 0.005
    mu = rng.normal(0.0, math.sqrt(var_mu), 200_000)
    assert np.var(mu) < 0.01
    z = mu + s * rng.standard_normal(mu.shape)
    info = stats.norm.logpdf(z, mu, s) - stats.norm.logpdf(z, 0.0, math.sqrt(var_mu + s * s))
    within_standard_errors(info, 0.5 * math.log(1.0 + var_mu / s ** 2))
    assert abs(np.mean(info) - 2.0) < 0.05


@claim("evaluation")
def logsumexp_shift_identity():
    """m + log sum exp(a - m) is log sum exp(a), its sum lies in [1, k], minivae's logsumexp equals scipy's where
    the naive form gives log inf and log 0, at (1000, 1000), (-1000, -1000) and a mixed row."""
    from minivae.logsumexp import logsumexp
    for a in (np.array([1000.0, 1000.0]), np.array([-1000.0, -1000.0]), np.array([3.0, -2.0, 0.5, 700.0])):
        m = np.max(a)
        shifted = m + np.log(np.sum(np.exp(a - m)))
        assert 1.0 <= np.sum(np.exp(a - m)) <= a.size
        np.testing.assert_allclose(shifted, special.logsumexp(a), rtol=1e-15)
        np.testing.assert_allclose(logsumexp(a, axis=0), special.logsumexp(a), rtol=1e-15)
    with np.errstate(over="ignore", divide="ignore"):
        assert np.log(np.sum(np.exp(np.array([1000.0, 1000.0])))) == np.inf
        assert np.log(np.sum(np.exp(np.array([-1000.0, -1000.0])))) == -np.inf
    assert close(special.logsumexp([1000.0, 1000.0]), 1000.0 + math.log(2.0), rel=1e-15)


@claim("evaluation")
def iw_bound_subset_averages_rise_with_m():
    """The monotonicity argument on minivae's iw_bound_forward: L_K = log (1/K) sum_i w_i, equal weights give the
    log-weight itself, and the average of L_m over all m-subsets of K = 6 weights rises with m to L_K."""
    from minivae.iwae import iw_bound_forward
    log_w = np.log(np.random.default_rng(26).exponential(size=(6, 3)))
    L = iw_bound_forward(log_w)[0]
    np.testing.assert_allclose(L, np.log(np.mean(np.exp(log_w), axis=0)), rtol=1e-13)
    np.testing.assert_allclose(iw_bound_forward(np.full((5, 2), -3.7))[0], -3.7, rtol=1e-15)
    means = [np.mean([iw_bound_forward(log_w[list(idx)])[0] for idx in itertools.combinations(range(6), m)], axis=0)
             for m in range(1, 7)]
    assert all(np.all(a < b) for a, b in itertools.pairwise(means)), means
    np.testing.assert_allclose(means[-1], L, rtol=1e-14)


@claim("evaluation")
def iw_bound_properties_linear_gaussian():
    """On a linear-Gaussian model, through minivae's iw_bound_forward: with q the exact posterior every
    log-weight is log p(x); with a diagonal q that is not, L_1 averages to the ELBO, ELBO < L_10 < L_100 <=
    log p(x), and L_100 closes most of the gap."""
    from minivae.iwae import iw_bound_forward
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    log_px = stats.multivariate_normal.logpdf(x, c, A.T @ A + s2 * np.eye(D))

    def log_joint(z):                                                 # log p(x|z) + log p(z)
        return (np.sum(stats.norm.logpdf(x, loc=z @ A + c, scale=math.sqrt(s2)), axis=-1)
                + np.sum(stats.norm.logpdf(z), axis=-1))

    P = np.eye(Z) + A @ A.T / s2
    S_post, m_post = np.linalg.inv(P), np.linalg.solve(P, A @ (x - c)) / s2
    z = np.random.default_rng(27).multivariate_normal(m_post, S_post, size=7)
    log_w = log_joint(z) - stats.multivariate_normal.logpdf(z, m_post, S_post)
    np.testing.assert_allclose(log_w, log_px, rtol=1e-12)
    np.testing.assert_allclose(iw_bound_forward(log_w[:, None])[0], log_px, rtol=1e-12)
    m, logvar = np.array([0.3, -0.4]), np.array([-0.7, 0.2])
    sigma = np.exp(logvar / 2.0)
    elbo = _expected_loglik(x, A, c, s2, m, np.diag(sigma ** 2)) - kl_closed_form(m, logvar)
    rng = np.random.default_rng(28)
    reps = 4000
    L = {}
    for k in (1, 10, 100):
        eps = rng.standard_normal((k, reps, Z))
        lw = log_joint(m + sigma * eps) + 0.5 * np.sum(eps * eps + logvar + LOG_2PI, axis=-1)   # (k, reps)
        L[k] = iw_bound_forward(lw)[0]
    within_standard_errors(L[1], elbo)
    means = {k: float(np.mean(v)) for k, v in L.items()}
    assert elbo < means[10] < means[100], means
    se100 = np.std(L[100], ddof=1) / math.sqrt(reps)
    assert means[100] <= log_px + 4 * se100
    assert log_px - means[100] < 0.2 * (log_px - elbo)


def _poisson_log_error(s, h, offset, terms=4):
    """log of h sum_n N(offset + n h; 0, s^2) (Poisson summation): log(1 + 2 sum_k e^(-2 pi^2 s^2 k^2/h^2)
    cos(2 pi k offset / h)), per offset."""
    k = np.arange(1, terms + 1)[:, None]
    return np.log1p(2.0 * np.sum(np.exp(-2.0 * math.pi ** 2 * s * s * k * k / (h * h))
                                 * np.cos(2.0 * math.pi * k * offset / h), axis=0))


@claim("evaluation")
def trapezoid_error_of_exact_log_px():
    """minivae's exact_log_px on a model whose p(x|z) p(z) is exactly Gaussian in z (linear, Z = 1, posterior
    N(m_n, s^2)): at spacing h = s, 0.8 s and s/3 its error against the closed form is the Poisson term
    log(1 + 2 e^(-2 pi^2 s^2/h^2) cos(2 pi c/h)) (c the grid's offset from m_n) to 1e-12, within the note's bound
    2 e^(-2 pi^2 s^2/h^2) (5e-9 at h = s); its quadrature_error is the same term at 2h, and at h = s it is an
    upper estimate of the error at h."""
    from minivae.evaluate import exact_log_px
    from minivae.model import VAE
    model = VAE(3, 1, hidden=(), likelihood="gaussian", dtype="float64", seed=0)
    p = model.params
    p["enc.mu.W"][...] = np.random.default_rng(40).standard_normal((3, 1)) * 0.5
    p["enc.logvar.W"][...] = 0.0
    p["enc.logvar.b"][...] = math.log(4.0)            # q's sigma 2, wider than the prior's: h = 1 / points_per_sigma
    p["dec.out.W"][...] = [[1.0, -0.6, 0.8]]
    p["dec.out.b"][...] = [0.2, -0.1, 0.3]
    p["dec.logvar"][...] = math.log(0.5)
    W, b = p["dec.out.W"][0], p["dec.out.b"]
    var = model.config["sigma_min"] ** 2 + math.exp(float(p["dec.logvar"]))
    x = np.random.default_rng(41).standard_normal((6, 3))
    truth = stats.multivariate_normal(b, np.outer(W, W) + var * np.eye(3)).logpdf(x)
    s = 1.0 / math.sqrt(1.0 + W @ W / var)                                     # the posterior's sd
    m = s * s * (x - b) @ W / var                                              # its means, (N,)
    mu_q, logvar_q = model.encode(x)
    lo = min(float(np.min(mu_q - 10.0 * np.exp(logvar_q / 2))), -6.0)        # the grid's first point
    for ratio in (1.0, 0.8, 1.0 / 3.0):
        ex = exact_log_px(model, x, points_per_sigma=1.0 / (ratio * s), tol=1.0)   # tol 1: keep the first grid
        h = ex["grid_spacing"]
        assert close(h, ratio * s, rel=1e-12), (h, ratio * s)
        error = ex["per_example"] - truth
        predicted = _poisson_log_error(s, h, lo - m)
        bound = 2.0 * math.exp(-2.0 * math.pi ** 2 * s * s / (h * h))
        np.testing.assert_allclose(error, predicted, rtol=0, atol=1e-12)
        assert np.all(np.abs(error) <= bound * (1 + 1e-6) + 1e-12), (ratio, error, bound)
        at_2h = _poisson_log_error(s, 2.0 * h, lo - m)
        assert close(ex["quadrature_error"], float(np.max(np.abs(predicted - at_2h))), rel=1e-6, atol=1e-12)
        if ratio == 1.0:
            assert 1e-9 < np.max(np.abs(error)) < ex["quadrature_error"], (error, ex["quadrature_error"])


@claim("evaluation")
def kl_decomposition_identity():
    """mean_n KL(q_n || p) = I_q + KL(q || p) for a 1-D mixture q = mean_n q_n (the integrals on a fine grid), with
    0 < I_q <= log N; I_q = 0 when every q_n is the same."""
    t = np.linspace(-15.0, 15.0, 6001)
    dt = t[1] - t[0]

    def pieces(mu, sd):
        log_q_n = stats.norm.logpdf(t, mu[:, None], sd[:, None])                 # (N, T)
        log_q = special.logsumexp(log_q_n, axis=0) - math.log(mu.size)          # the mixture, (T,)
        info = np.mean(np.sum(np.exp(log_q_n) * (log_q_n - log_q), axis=1) * dt)
        marginal = np.sum(np.exp(log_q) * (log_q - stats.norm.logpdf(t))) * dt
        return info, marginal, float(np.mean(kl_closed_form(mu[:, None], np.log(sd[:, None] ** 2))))

    mu, sd = np.array([-1.0, 0.2, 0.9, 2.0]), np.array([0.5, 0.8, 0.3, 1.1])
    info, marginal, mean_kl = pieces(mu, sd)
    assert close(info + marginal, mean_kl, rel=1e-9), (info, marginal, mean_kl)
    assert 0.0 < info <= math.log(mu.size) and marginal > 0.0
    info0, marginal0, mean_kl0 = pieces(np.full(4, 0.4), np.full(4, 0.6))
    assert abs(info0) < 1e-10 and close(marginal0, mean_kl0, rel=1e-9)


# ---- running them ----------------------------------------------------------------------------------------------

def run(name):
    """Run one claim; None if it holds, else the reason it does not (one line)."""
    _, fn = CLAIMS[name]
    try:
        fn()
    except Exception as error:                 # an AssertionError, or the claim could not be evaluated at all
        last = traceback.extract_tb(error.__traceback__)[-1]
        message = " ".join(str(error).split()) or type(error).__name__
        if len(message) > 300:
            message = message[:300] + " ..."
        return f"{type(error).__name__} at line {last.lineno}: {message}"
    return None


def main(argv=None):
    """Run every claim (or those of the notes named in argv, e.g. ``kl adam``); one line per claim; 1 if any
    fails."""
    if not __debug__:
        print("check_notes: the claims are assertions; run without -O", file=sys.stderr)
        return 2
    notes = list(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(notes) - {note for note, _ in CLAIMS.values()})
    if unknown:
        print(f"check_notes: no claims for {', '.join(unknown)}", file=sys.stderr)
        return 2
    failed = 0
    for name, (note, _) in CLAIMS.items():
        if notes and note not in notes:
            continue
        problem = run(name)
        failed += problem is not None
        print(f"{'FAIL' if problem else 'ok  '}  {note}.md  {name}" + (f"  {problem}" if problem else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
