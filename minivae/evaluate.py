"""Honest evaluation of a trained VAE, on held-out data. A VAE has two goals, a good model of the data (high
log p(x)) and a good approximate posterior (q(z|x) close to p(z|x)); since

    log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)),

the ELBO alone measures neither exactly. This module reports, in nats per example:

- the negative ELBO, split into distortion (reconstruction NLL) and rate (KL), and in bits per dimension where
  the data are discrete (categorical levels, Bernoulli on binary data; not for densities of continuous data);
- the importance-weighted bound L_k (Burda et al. 2015), ELBO <= L_k <= log p(x), tighter as k grows;
- for a latent dimension of 1 or 2, log p(x) itself by quadrature over z, and with it the gap
  log p(x) - ELBO = KL(q(z|x) || p(z|x)) that training shrinks;
- active units (Burda et al. 2015) and the split of the average KL into the mutual information I_q(x; z) and
  KL(q(z) || p(z)) (Hoffman & Johnson 2016, "ELBO surgery").

Sums stay on the device; each result comes to the host once, at the end. Randomness comes from ``RNG(seed)``.
Derivation: derivations/evaluation.md. Tests: tests/test_evaluate.py.
"""
import math

import numpy as np

from .backend import to_host
from .kl import kl_std_normal_forward
from .layers import softplus_forward
from .likelihoods import LOG_2PI, level_onehot, log_softmax
from .logsumexp import logsumexp
from .rng import RNG


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def evaluate_elbo(model, x, seed=0, batch_size=1000):
    """{"neg_elbo", "nll", "kl"}: means over ``x`` (an array on the model's device, (N, D)) in nats, each
    example's reconstruction term estimated with one reparameterised sample and its KL in closed form (N(0, I)
    prior) or at that same sample, log q(z|x) - log p(z) (mixture prior: derivations/prior.md#sampled-kl).
    derivations/evaluation.md#elbo
    """
    _check_positive_int(batch_size, "batch_size")
    xp = model.device.xp
    rng = RNG(seed)
    total_nll = total_kl = 0.0
    for start, stop in _batches(x.shape[0], batch_size):
        xb = x[start:stop, ...]
        eps = rng.normal((xb.shape[0], model.z_dim), model.device, model.dtype_name)
        nll, kl = model.elbo_terms(xb, eps)
        total_nll = total_nll + xp.sum(nll)
        total_kl = total_kl + xp.sum(kl)
    n = x.shape[0]
    nll, kl = float(to_host(total_nll)) / n, float(to_host(total_kl)) / n
    return {"neg_elbo": nll + kl, "nll": nll, "kl": kl}


def log_weights(model, x, eps):
    """log w_i = log p(x, z_i) - log q(z_i|x) for z_i = mu + sigma * eps_i.   x: (B, D), eps: (K, B, Z) -> (K, B).

    log p(x, z) = -nll(x|z) + log p(z), with the model's prior: -1/2 sum_j (z_j^2 + log 2 pi) for N(0, I), the
    mixture's log-density (derivations/prior.md#mixture-forward) for mog;
    log q(z|x) = -1/2 sum_j (eps_j^2 + logvar_j + log 2 pi).
    derivations/evaluation.md#importance-weighted-bound
    """
    xp = model.device.xp
    k, b, z_dim = eps.shape
    mu, logvar = model.encode(x)                                           # (B, Z)
    z = mu[None, ...] + xp.exp(0.5 * logvar)[None, ...] * eps              # (K, B, Z)
    x_rep = xp.reshape(xp.broadcast_to(x[None, ...], (k, b, x.shape[1])), (k * b, x.shape[1]))
    nll = xp.reshape(model.reconstruction_nll(x_rep, xp.reshape(z, (k * b, z_dim))), (k, b))
    log_pz = xp.reshape(model.log_prior(xp.reshape(z, (k * b, z_dim))), (k, b))   # (K, B)
    log_qz = -0.5 * xp.sum(eps * eps + logvar[None, ...] + LOG_2PI, axis=2)
    return -nll + log_pz - log_qz


def iw_bound(model, x, k=1000, seed=0, batch_size=100, max_rows=65536):
    """L_k = mean_n log (1/k) sum_i w_i(x_n), a lower bound on log p(x_n) for every k (Burda et al. 2015).

    The k samples of each example are drawn in chunks of at most ``max_rows`` decoder rows (divided by the
    number of levels for the categorical likelihood, whose rows are that many times wider), so memory stays
    bounded for any k. Returns {"iw_bound": mean L_k, "k": k, "per_example": (N,) host array}.
    derivations/evaluation.md#importance-weighted-bound
    """
    _check_positive_int(k, "k")
    _check_positive_int(batch_size, "batch_size")
    xp = model.device.xp
    rng = RNG(seed)
    per_example = []
    for start, stop in _batches(x.shape[0], batch_size):
        xb = x[start:stop, ...]
        width = model.levels if model.likelihood == "categorical" else 1     # decoder values per row and pixel
        chunk = max(1, max_rows // (xb.shape[0] * width))
        lw = []
        for k0, k1 in _batches(k, chunk):
            eps = rng.normal((k1 - k0, xb.shape[0], model.z_dim), model.device, model.dtype_name)
            lw.append(log_weights(model, xb, eps))                         # (k1 - k0, B)
        lw = xp.concat(lw, axis=0)                                         # (K, B)
        per_example.append(logsumexp(lw, axis=0) - math.log(k))           # (B,)
    per_example = to_host(xp.concat(per_example, axis=0))
    return {"iw_bound": float(np.mean(per_example)), "k": k, "per_example": per_example}


def _grid_log_likelihood(model, x, z):
    """log p(x_n | z_g) for every example and grid point, (N, G), each decoded once and paired by matrix products:
    Bernoulli: x a^T - sum_d softplus(a);
    Gaussian (any variance, broadcast to (G, D) as v = exp(logvar)): the expanded square
    -1/2 [sum_d (log 2 pi + logvar_gd) + (x * x) (1/v)^T - 2 x (m / v)^T + sum_d m_gd^2 / v_gd];
    categorical: t log softmax(a)^T with t the one-hot levels of x and both flattened to (., D L); t is built for
    a block of examples at a time (at most 4M entries), so memory does not grow with N D L.
    derivations/evaluation.md#exact-log-likelihood
    """
    xp = model.device.xp
    out = model.decode(z)
    if model.likelihood == "bernoulli":
        a = out["logits"]                                                  # (G, D)
        softplus, _ = softplus_forward(a)
        return x @ a.T - xp.sum(softplus, axis=1)[None, :]
    n, d = x.shape
    if model.likelihood == "categorical":
        levels = model.levels
        logp = xp.reshape(log_softmax(out["logits"]), (z.shape[0], d * levels))            # (G, D L)
        grid = model.device.asarray(np.arange(levels), dtype=model.dtype_name)             # (L,)
        rows = max(1, (1 << 22) // (d * levels))       # one-hot targets of this many examples at a time (<= 4M)
        parts = []
        for start, stop in _batches(n, rows):
            onehot = xp.reshape(level_onehot(x[start:stop, ...], grid), (stop - start, d * levels))   # (B, D L)
            parts.append(onehot @ logp.T)                                                  # (B, G)
        return xp.concat(parts, axis=0)
    m = out["mean"]                                                        # (G, D)
    logvar = xp.broadcast_to(out["logvar"], m.shape)                       # (G, D): fixed, shared, per-dim or own
    ivar = xp.exp(-logvar)                                                 # 1 / v
    sq = (x * x) @ ivar.T - 2.0 * (x @ (m * ivar).T) + xp.sum(m * m * ivar, axis=1)[None, :]   # sum (x - m)^2 / v
    return -0.5 * (xp.sum(LOG_2PI + logvar, axis=1)[None, :] + sq)


def exact_log_px(model, x, radius=10.0, points_per_sigma=3.0, tol=1e-6, max_points=1_000_000, chunk=4096):
    """log p(x_n) = log of the integral of p(x_n|z) p(z) over z, by the trapezoid rule on a grid (z_dim 1 or 2).

    The grid spans the box [-6, 6]^Z (the central box of N(0, I)), every component of a mixture prior out to 6 of
    its standard deviations, and every posterior q(z|x_n) out to ``radius`` standard deviations. Its spacing
    starts at h = (smallest posterior or prior-component sigma) / ``points_per_sigma`` and is halved until
    the sums on the grid and on every other grid point (spacing 2h) agree to ``tol`` nats for every example, or
    the grid would exceed ``max_points``; ``quadrature_error`` is that final difference, an upper estimate of
    the error at spacing h (the trapezoid rule converges faster than any power of h on such smooth integrands).
    On the same grid the ELBO is computed without sampling, ELBO_n = sum_g q(z_g|x_n) h^Z log p(x_n|z_g) - KL_n
    (KL_n in closed form for N(0, I); for a mixture prior by the same sum, sum_g q(z_g|x_n) h^Z
    [log q(z_g|x_n) - log p(z_g)]), and with it the gap log p(x_n) - ELBO_n = KL(q(z|x_n) || p(z|x_n)). The
    ELBO's sums must agree on the two grids too (``elbo_quadrature_error``): the log of a mixture prior is less
    smooth than a Gaussian, and its sum can need a finer grid than log p(x).
    derivations/evaluation.md#exact-log-likelihood
    """
    if model.z_dim not in (1, 2):
        raise ValueError(f"exact log p(x) needs z_dim 1 or 2 (quadrature over z); this model has z_dim "
                         f"{model.z_dim}")
    mu, logvar = model.encode(x)
    mu_h, sigma_h = to_host(mu).astype(np.float64), np.exp(0.5 * to_host(logvar).astype(np.float64))
    lo = np.minimum(np.min(mu_h - radius * sigma_h, axis=0), -6.0)
    hi = np.maximum(np.max(mu_h + radius * sigma_h, axis=0), 6.0)
    h = float(np.min(sigma_h)) / points_per_sigma
    if model.prior == "mog":                              # the mixture's components, out to 6 sigma
        prior_mu = to_host(model.params["prior.mu"]).astype(np.float64)                   # (C, Z)
        prior_sigma = np.exp(0.5 * to_host(model.params["prior.logvar"]).astype(np.float64))
        lo = np.minimum(lo, np.min(prior_mu - 6.0 * prior_sigma, axis=0))
        hi = np.maximum(hi, np.max(prior_mu + 6.0 * prior_sigma, axis=0))
        h = min(h, float(np.min(prior_sigma)) / points_per_sigma)
    h = max(h, float(np.max(hi - lo)) / (int(max_points ** (1.0 / model.z_dim)) - 1))   # never over max_points
    while True:
        result = _quadrature(model, x, mu, logvar, lo, hi, h, chunk)
        finer = [int(np.ceil((hi[j] - lo[j]) / (h / 2))) + 1 for j in range(model.z_dim)]
        error = max(result["quadrature_error"], result["elbo_quadrature_error"])
        if error <= tol or int(np.prod(finer)) > max_points:
            return result
        h /= 2


def _quadrature(model, x, mu, logvar, lo, hi, h, chunk):
    """The trapezoid sums of exact_log_px on the grid lo + h * i (every point, and every other point)."""
    xp = model.device.xp
    axes = [lo[j] + h * np.arange(int(np.ceil((hi[j] - lo[j]) / h)) + 1) for j in range(model.z_dim)]
    index = np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")
    z_all = np.stack([a[i.ravel()] for a, i in zip(axes, index)], axis=1)          # (G, Z)
    coarse_all = np.all(np.stack([i.ravel() % 2 == 0 for i in index], axis=1), axis=1)   # the 2h subgrid
    log_cell, log_cell2 = model.z_dim * math.log(h), model.z_dim * math.log(2.0 * h)
    lse = lse2 = None
    e_loglik = q_mass = e_log_ratio = e_loglik2 = e_log_ratio2 = 0.0
    for g0, g1 in _batches(z_all.shape[0], chunk):
        z = model.device.asarray(z_all[g0:g1], dtype=model.dtype_name)           # (G, Z)
        coarse = model.device.asarray(coarse_all[g0:g1])
        ll = _grid_log_likelihood(model, x, z)                                   # (N, G)
        log_pz = model.log_prior(z)                                              # (G,)  N(0, I) or the mixture
        joint = ll + log_pz[None, :]                                             # log p(x_n|z_g) + log p(z_g)
        part = logsumexp(joint, axis=1)
        part2 = logsumexp(xp.where(coarse[None, :], joint, -math.inf), axis=1)
        lse = part if lse is None else xp.logaddexp(lse, part)
        lse2 = part2 if lse2 is None else xp.logaddexp(lse2, part2)
        diff = z[None, :, :] - mu[:, None, :]                                    # (N, G, Z)
        log_q = -0.5 * xp.sum(diff * diff * xp.exp(-logvar)[:, None, :] + logvar[:, None, :] + LOG_2PI, axis=2)
        q = xp.exp(log_q + log_cell)                                             # q(z_g|x_n) h^Z
        e_loglik = e_loglik + xp.sum(q * ll, axis=1)
        q_mass = q_mass + xp.sum(q, axis=1)
        q2 = xp.where(coarse[None, :], q, 0.0) * 2.0 ** model.z_dim             # q(z_g|x_n) (2h)^Z on the 2h grid
        e_loglik2 = e_loglik2 + xp.sum(q2 * ll, axis=1)
        if model.prior != "normal":                                              # E_q[log q - log p] on the grid
            e_log_ratio = e_log_ratio + xp.sum(q * (log_q - log_pz[None, :]), axis=1)
            e_log_ratio2 = e_log_ratio2 + xp.sum(q2 * (log_q - log_pz[None, :]), axis=1)
    log_px = to_host(lse + log_cell)
    log_px2 = to_host(lse2 + log_cell2)
    if model.prior == "normal":
        kl = kl2 = to_host(kl_std_normal_forward(mu, logvar)[0])
    else:
        kl, kl2 = to_host(e_log_ratio), to_host(e_log_ratio2)
    elbo, elbo2 = to_host(e_loglik) - kl, to_host(e_loglik2) - kl2
    return {"log_px": float(np.mean(log_px)), "elbo": float(np.mean(elbo)),
            "gap": float(np.mean(log_px - elbo)), "quadrature_error": float(np.max(np.abs(log_px - log_px2))),
            "elbo_quadrature_error": float(np.max(np.abs(elbo - elbo2))),
            "q_mass_error": float(np.max(np.abs(to_host(q_mass) - 1.0))), "grid_points": int(z_all.shape[0]),
            "grid_spacing": h, "per_example": log_px, "per_example_elbo": elbo}


def active_units(model, x, threshold=0.01):
    """The number of latent dimensions j with Cov_x(E_q[z_j]) = Var_n(mu_nj) > ``threshold`` (Burda et al. 2015).
    derivations/evaluation.md#active-units
    """
    mu, _ = model.encode(x)
    mu = to_host(mu).astype(np.float64)
    variance = np.var(mu, axis=0)
    return {"active_units": int(np.sum(variance > threshold)), "variance": variance.tolist()}


def kl_decomposition(model, x, samples=10, seed=0):
    """mean_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)), with q(z) = (1/N) sum_n q(z|x_n) the
    aggregate posterior over the evaluation set (Hoffman & Johnson 2016).

    I_q(x; z) = mean_n E_{q(z|x_n)}[log q(z|x_n) - log q(z)], estimated with ``samples`` draws per example
    (exactly 0 when the encoder ignores x, and at most log N); KL(q(z) || p(z)) is the rest of the average KL.
    The average KL is in closed form for the N(0, I) prior; for a mixture prior it has none, and is estimated at
    the same draws as mean log q(z_n|x_n) - log p(z_n), so the marginal KL is then the estimate
    mean log q(z_n) - log p(z_n) at those draws.  derivations/evaluation.md#elbo-surgery,
    derivations/prior.md#evaluation-with-a-mixture-prior
    """
    _check_positive_int(samples, "samples")
    xp = model.device.xp
    mu, logvar = model.encode(x)                                            # (N, Z)
    n = x.shape[0]
    rng = RNG(seed)
    closed_form = model.prior == "normal"
    kl = xp.mean(kl_std_normal_forward(mu, logvar)[0]) if closed_form else 0.0
    info = 0.0
    for _ in range(samples):
        eps = rng.normal(tuple(mu.shape), model.device, model.dtype_name)   # (N, Z)
        z = mu + xp.exp(0.5 * logvar) * eps                                 # z_n ~ q(z|x_n)
        diff = z[:, None, :] - mu[None, :, :]                              # (N, M=N, Z)
        log_q_nm = -0.5 * xp.sum(diff * diff * xp.exp(-logvar)[None, :, :] + logvar[None, :, :] + LOG_2PI,
                                 axis=2)                                    # log q(z_n | x_m)
        log_qz = logsumexp(log_q_nm, axis=1) - math.log(n)                  # log q(z_n): aggregate posterior
        log_q_own = -0.5 * xp.sum(eps * eps + logvar + LOG_2PI, axis=1)     # log q(z_n | x_n)
        info = info + xp.mean(log_q_own - log_qz)
        if not closed_form:                                                 # the sampled KL at the same draws
            kl = kl + xp.mean(log_q_own - model.log_prior(z)) / samples
    kl, info = float(to_host(kl)), float(to_host(info)) / samples
    return {"kl": kl, "mutual_information": info, "marginal_kl": kl - info, "log_n": math.log(n)}


def evaluate(model, x, k=1000, seed=0, exact=None):
    """Everything above for ``x`` (on the model's device): a flat dict of host floats for a table and JSON.
    ``exact`` defaults to True when z_dim <= 2."""
    d = x.shape[1]
    result = {"examples": int(x.shape[0]), "dimensions": int(d)}
    elbo = evaluate_elbo(model, x, seed=seed)
    result.update(neg_elbo=elbo["neg_elbo"], nll=elbo["nll"], kl=elbo["kl"])
    # bits per dimension only where p(x|z) is a probability of discrete data (categorical levels; Bernoulli on
    # binary x): for a density of continuous x (Gaussian) or a Bernoulli of grey levels it means nothing
    discrete = model.likelihood == "categorical" or (
        model.likelihood == "bernoulli" and bool(to_host(model.device.xp.all((x == 0.0) | (x == 1.0)))))
    if discrete:
        result["bits_per_dim"] = elbo["neg_elbo"] / (d * math.log(2.0))
    iw = iw_bound(model, x, k=k, seed=seed)
    result.update(k=k, neg_iw_bound=-iw["iw_bound"])
    if exact if exact is not None else model.z_dim <= 2:
        ex = exact_log_px(model, x)
        result.update(neg_log_px=-ex["log_px"], quadrature_neg_elbo=-ex["elbo"], posterior_gap=ex["gap"],
                      quadrature_error=ex["quadrature_error"], grid_points=ex["grid_points"])
    result.update({k_: v for k_, v in active_units(model, x).items() if k_ == "active_units"})
    dec = kl_decomposition(model, x, seed=seed)
    result.update(mutual_information=dec["mutual_information"], marginal_kl=dec["marginal_kl"])
    return result
