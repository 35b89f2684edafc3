"""The seed identity, made visible: for a model with z_dim 1 or 2, the true posterior

    p(z|x) = p(x|z) p(z) / p(x)

of each of a few examples on a grid, beside the approximate posterior q(z|x) = N(mu, diag sigma^2), with the
numbers of

    log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)).

log p(x) and the ELBO come from ``evaluate.exact_log_px`` (its own adaptive grid over the whole box); the
picture's grid is a second, independent one, zoomed on where p(z|x) and q(z|x) have their mass. On it the
density integrates to 1 (``mass``; it does only if the two grids agree and the window holds the posterior) and
the gap is recomputed as an explicit KL,

    KL(q || p(z|x)) ~= h^Z sum_g q(z_g|x) [log q(z_g|x) - log p(x|z_g) - log p(z_g) + log p(x)],

which must equal log p(x) - ELBO (``grid_kl`` against ``gap``). Both are what tests/test_posterior.py checks, with
a linear Gaussian model's closed-form posterior. The picture: minivae/plots.py: plot_posterior, command
``minivae posterior CHECKPOINT``.  derivations/evaluation.md#the-posterior-gap-drawn
"""
import math

import numpy as np

from .backend import to_host
from .evaluate import MAX_ELEMENTS, _row_elements, exact_log_px

COARSE = 161          # points per axis of the first pass, over the quadrature box
TAIL = 18.0           # the window keeps every point where log p(z|x) > max - TAIL (e^-18 ~ 1.5e-8 of the peak)
Q_RADIUS = 6.0        # and q(z|x) out to this many standard deviations (mass beyond: e^-18 in 2-D)


def _log_joint(model, x1, z):
    """log p(x|z_g) + log p(z_g) for one example x1: (1, D) and host codes z: (G, Z), host float64 (G,), the
    grid decoded in chunks that keep one (G', row width) intermediate under MAX_ELEMENTS."""
    chunk = max(1, MAX_ELEMENTS // _row_elements(model))
    out = []
    for start in range(0, z.shape[0], chunk):
        zc = model.device.asarray(z[start:start + chunk], dtype=model.dtype_name)
        lj = model.log_likelihood_grid(x1, zc)[0, ...] + model.log_prior(zc)          # (G',)
        out.append(to_host(lj).astype(np.float64))
    return np.concatenate(out)


def _grid(lo, hi, points):
    """Per-axis coordinates (Z arrays of ``points``), their spacings h_j, and the flattened grid (G, Z), row-major
    (the last axis fastest)."""
    axes = [np.linspace(a, b, points) for a, b in zip(lo, hi, strict=True)]
    h = np.array([ax[1] - ax[0] for ax in axes])
    mesh = np.meshgrid(*axes, indexing="ij")
    return axes, h, np.stack([m.ravel() for m in mesh], axis=1)


def _window(model, x1, lo, hi, mu, sigma, points):
    """The box that holds p(z|x) (every grid point within TAIL nats of the peak, found on a ``points`` grid over
    [lo, hi]) and q(z|x) out to Q_RADIUS sigma, padded by two spacings of that grid."""
    axes, h, z = _grid(lo, hi, points)
    lj = _log_joint(model, x1, z)
    keep = z[lj > np.max(lj) - TAIL]
    new_lo = np.minimum(np.min(keep, axis=0), mu - Q_RADIUS * sigma) - 2 * h
    new_hi = np.maximum(np.max(keep, axis=0), mu + Q_RADIUS * sigma) + 2 * h
    return new_lo, new_hi


def posterior_grid(model, x, points=201):
    """p(z|x) and q(z|x) on a grid, one per example of x: (N, D) on the model's device (z_dim 1 or 2; float64
    recommended). Returns a list of N dicts of host values:

        axes      Z arrays of ``points`` coordinates, the window (two zooms: the quadrature box, then the mass)
        h         the spacing per axis, (Z,)
        density   p(z_g|x) = exp(log p(x|z_g) + log p(z_g) - log p(x)), shape (points,) * Z, axis j along z_j
        log_q     log q(z_g|x) on the same grid
        mu, sigma q(z|x)'s mean and standard deviation, (Z,)
        log_px, elbo, gap        from exact_log_px: log p(x), the ELBO, and gap = log p(x) - ELBO
        mass      prod(h) sum_g p(z_g|x): 1 when the window holds the posterior and both grids resolve it
        q_mass    prod(h) sum_g q(z_g|x): 1 likewise for q
        grid_kl   prod(h) sum_g q(z_g|x) [log q(z_g|x) - log p(z_g|x)]: the gap as an explicit KL

    derivations/evaluation.md#the-posterior-gap-drawn
    """
    if model.z_dim not in (1, 2):
        raise ValueError(f"the posterior picture needs z_dim 1 or 2 (a grid over z); this model has z_dim "
                         f"{model.z_dim}")
    if not model.posterior.density_at_any_z:
        raise ValueError("the posterior picture draws q(z|x) on a grid, which needs its density at any z; this "
                         "model's posterior (a planar flow) has it only at its own samples")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 3:
        raise ValueError(f"points must be an integer >= 3, got {points!r}")
    ex = exact_log_px(model, x)
    mu_d, logvar_d = model.encode(x)
    mu_all = to_host(mu_d).astype(np.float64)                                       # (N, Z)
    sigma_all = np.exp(0.5 * to_host(logvar_d).astype(np.float64))
    box_lo, box_hi, _ = model.prior.quadrature_box(model.params)
    box_lo = np.minimum(box_lo, np.min(mu_all - 6.0 * sigma_all, axis=0))
    box_hi = np.maximum(box_hi, np.max(mu_all + 6.0 * sigma_all, axis=0))
    results = []
    for n in range(x.shape[0]):
        x1, mu, sigma = x[n:n + 1, ...], mu_all[n], sigma_all[n]
        lo, hi = _window(model, x1, box_lo, box_hi, mu, sigma, COARSE)             # zoom 1: the box
        lo, hi = _window(model, x1, lo, hi, mu, sigma, COARSE)                     # zoom 2: the mass
        axes, h, z = _grid(lo, hi, points)
        log_px, elbo = float(ex["per_example"][n]), float(ex["per_example_elbo"][n])
        log_post = _log_joint(model, x1, z) - log_px                                # log p(z_g|x), (G,)
        log_q = np.sum(-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi), axis=1)
        cell = float(np.prod(h))
        q = np.exp(log_q)
        shape = (points,) * model.z_dim
        results.append({
            "axes": axes, "h": h, "density": np.exp(log_post).reshape(shape), "log_q": log_q.reshape(shape),
            "mu": mu, "sigma": sigma, "log_px": log_px, "elbo": elbo, "gap": log_px - elbo,
            "mass": cell * float(np.sum(np.exp(log_post))), "q_mass": cell * float(np.sum(q)),
            "grid_kl": cell * float(np.sum(np.where(q > 0, q * (log_q - log_post), 0.0))),
        })
    return results
