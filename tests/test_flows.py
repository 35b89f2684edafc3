"""Tests for minivae/flows.py (each planar pair's gradient check is tests/test_ops.py's): the log-determinant
against numpy's slogdet of the Jacobian taken by central differences, the reparameterised u against its defining
property, and a chain of K steps against the change of variables: the density log q0(z0) - sum_k logdet_k,
written at points found by inverting the flow with a root finder, integrates to 1 over z_K at Z = 2 and gives a
box the probability the pushed samples give it."""
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from minivae.backend import to_host
from minivae.flows import (planar_forward, planar_logdet_forward,
                           planar_u_forward)

SHAPES = [(1, 1), (4, 2), (3, 5)]


def flow_params(rng, n, z, scale=1.0):
    """Raw (u, w, b) for N examples, w kept off 0 so ||w||^2 is well conditioned."""
    u = scale * rng.standard_normal((n, z))
    w = rng.standard_normal((n, z))
    w += np.where(w >= 0, 0.3, -0.3)
    return u, w, 0.5 * rng.standard_normal(n)


def test_u_hat_keeps_the_step_invertible(rng):
    """w^T u_hat = -1 + log(1 + e^{w^T u}) >= -1 for any u (even u pointing against w; > -1 in exact arithmetic,
    = -1 once softplus underflows), and u_hat differs from u only along w."""
    u, w, _ = flow_params(rng, 200, 3, scale=5.0)
    u[:50] = -10.0 * w[:50]                                           # w^T u far below -1
    u_hat, _ = planar_u_forward(u, w)
    a = np.sum(w * u, axis=1)
    np.testing.assert_allclose(np.sum(w * u_hat, axis=1), -1.0 + np.logaddexp(0.0, a), rtol=1e-12, atol=1e-12)
    s = np.sum(w * u_hat, axis=1)
    assert np.all(s >= -1.0 - 1e-12) and np.any(s < -0.99)                 # to the rounding of the sum
    off_w = u_hat - u - (np.sum((u_hat - u) * w, axis=1) / np.sum(w * w, axis=1))[:, None] * w
    np.testing.assert_allclose(off_w, 0.0, atol=1e-10)


def numerical_jacobian(f, z, h=1e-6):
    """J[n, i, j] = d f(z)_ni / d z_nj by central differences, one column at a time."""
    n, d = z.shape
    jac = np.empty((n, d, d))
    for j in range(d):
        step = np.zeros_like(z)
        step[:, j] = h
        jac[:, :, j] = (f(z + step) - f(z - step)) / (2 * h)
    return jac


@pytest.mark.parametrize("shape", SHAPES)
def test_logdet_matches_slogdet_of_the_numerical_jacobian(rng, shape):
    u, w, b = flow_params(rng, *shape, scale=2.0)
    u_hat, _ = planar_u_forward(u, w)
    z = 1.5 * rng.standard_normal(shape)
    jac = numerical_jacobian(lambda v: planar_forward(v, u_hat, w, b)[0], z)
    sign, ref = np.linalg.slogdet(jac)
    assert np.all(sign > 0)                                           # invertible and orientation-preserving
    logdet, _ = planar_logdet_forward(z, u_hat, w, b)
    np.testing.assert_allclose(logdet, ref, rtol=0, atol=1e-8)


def test_planar_forward_matches_its_formula(rng):
    """z + u_hat tanh(w^T z + b), row by row, with plain Python arithmetic."""
    u, w, b = flow_params(rng, 5, 3)
    z = rng.standard_normal((5, 3))
    got, _ = planar_forward(z, u, w, b)
    for n in range(5):
        t = math.tanh(sum(w[n, j] * z[n, j] for j in range(3)) + b[n])
        np.testing.assert_allclose(got[n], [z[n, j] + u[n, j] * t for j in range(3)], rtol=1e-14)


# ---- a chain of K steps against the change of variables at Z = 2 ------------------------------------------------

K_STEPS = 3


def chain(rng):
    """K steps of one example's flow (each (u_hat (1, 2), w (1, 2), b (1,))) and the base q0 = N(mu, sigma^2)."""
    steps = []
    for _ in range(K_STEPS):
        u, w, b = flow_params(rng, 1, 2, scale=1.0)
        steps.append((planar_u_forward(u, w)[0], w, b))
    return steps, np.array([0.3, -0.2]), np.array([0.8, 0.6])


def push(z, steps):
    """z_K and sum_k logdet_k for rows z: (M, 2)."""
    total = np.zeros(z.shape[0])
    for u_hat, w, b in steps:
        args = (np.broadcast_to(u_hat, z.shape), np.broadcast_to(w, z.shape), np.broadcast_to(b, z.shape[:1]))
        total = total + planar_logdet_forward(z, *args)[0]
        z = planar_forward(z, *args)[0]
    return z, total


def invert(z_k, steps):
    """f^{-1}(z_K) for one point, by a root finder on each step's scalar equation: along w, z' = z + u_hat h(w^T z
    + b) gives w^T z' = alpha + (w^T u_hat) tanh(alpha + b) for alpha = w^T z, increasing in alpha since
    w^T u_hat > -1 (brentq on a bracket), then z = z' - u_hat tanh(alpha + b)."""
    z = z_k
    for u_hat, w, b in reversed(steps):
        u_hat, w, b = u_hat[0], w[0], b[0]
        s, target = w @ u_hat, w @ z
        def g(a, s=s, b=b, target=target):
            return a + s * math.tanh(a + b) - target
        alpha = scipy.optimize.brentq(g, target - abs(s) - 1, target + abs(s) + 1, xtol=1e-14)
        z = z - u_hat * math.tanh(alpha + b)
    return z


def density_on_grid(steps, mu, sigma, z_k, points, with_logdet=True):
    """The grid's axes over the samples z_K (their range, 1 beyond) and q_K at its points x points:
    q0(f^{-1}(z)) exp(-sum_k logdet_k) along the inverted path (without the exp(-sum) when ``with_logdet`` is
    False: a density that ignores the change of volume)."""
    lo, hi = np.min(z_k, axis=0) - 1.0, np.max(z_k, axis=0) + 1.0
    axes = [np.linspace(a, b, points) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    z0 = np.array([invert(p, steps) for p in grid])
    _, total = push(z0, steps)
    log_q = scipy.stats.norm.logpdf(z0, mu, sigma).sum(axis=1) - (total if with_logdet else 0.0)
    return axes, np.exp(log_q).reshape(points, points)


def trapezoid_2d(q, axes):
    return np.trapezoid(np.trapezoid(q, axes[1], axis=1), axes[0])


def test_flow_density_integrates_to_one_and_matches_samples(rng):
    steps, mu, sigma = chain(rng)
    z_k, _ = push(mu + sigma * np.random.default_rng(7).standard_normal((200_000, 2)), steps)
    axes, q = density_on_grid(steps, mu, sigma, z_k, 161)
    mass = trapezoid_2d(q, axes)
    assert abs(mass - 1.0) < 1e-4, mass        # trapezoid error ~4e-5 here; a wrong log-det misses by > 0.05
    # the probability of the box below the samples' median in both coordinates: quadrature vs the samples (the
    # box's edge cuts grid cells, an O(h) error of the quadrature, hence the 0.01 beside 4 standard errors)
    med = np.median(z_k, axis=0)
    inside = (axes[0][:, None] <= med[0]) & (axes[1][None, :] <= med[1])
    box_q = trapezoid_2d(np.where(inside, q, 0.0), axes)
    box_mc = np.mean(np.all(z_k <= med, axis=1))
    se = math.sqrt(box_mc * (1 - box_mc) / len(z_k))
    assert abs(box_q - box_mc) < 0.01 + 4 * se, (box_q, box_mc)


def test_a_wrong_log_det_fails_the_mass_check(rng):
    """The mass check can fail: dropping the log-determinants leaves a mass far from 1."""
    steps, mu, sigma = chain(rng)
    z_k, _ = push(mu + sigma * np.random.default_rng(7).standard_normal((20_000, 2)), steps)
    axes, q = density_on_grid(steps, mu, sigma, z_k, 81, with_logdet=False)
    assert abs(trapezoid_2d(q, axes) - 1.0) > 0.05


def test_ops_keep_the_array_type(device, rng):
    u, w, b = (device.asarray(a) for a in flow_params(rng, 3, 2))
    z = device.asarray(rng.standard_normal((3, 2)))
    u_hat, _ = planar_u_forward(u, w)
    z_new, _ = planar_forward(z, u_hat, w, b)
    logdet, _ = planar_logdet_forward(z, u_hat, w, b)
    assert type(z_new) is type(z) and type(logdet) is type(z) and tuple(logdet.shape) == (3,)
    ref, _ = planar_forward(to_host(z), to_host(u_hat), to_host(w), to_host(b))
    np.testing.assert_allclose(to_host(z_new), ref, rtol=1e-14)


@pytest.mark.parametrize("call, needle", [
    (lambda z: planar_u_forward(z, z[:, :1]), r"planar_u_forward: w must have shape \(3, 2\)"),
    (lambda z: planar_forward(z, z, z, z[:, 0].astype(np.float32)), "planar_forward: b has dtype float32"),
    (lambda z: planar_logdet_forward(z, z, z, z[:2, 0]), r"planar_logdet_forward: b must have shape \(3,\)"),
    (lambda z: planar_forward(z, z, z[:2], z[:, 0]), r"planar_forward: w must have shape \(3, 2\)"),
])
def test_bad_shapes_and_dtypes_are_named(call, needle):
    with pytest.raises(ValueError, match=needle):
        call(np.zeros((3, 2)))
