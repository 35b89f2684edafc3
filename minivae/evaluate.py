"""Honest evaluation of a trained VAE, on held-out data. A VAE has two goals, a good model of the data (high
log p(x)) and a good approximate posterior (q(z|x) close to p(z|x)); since

    log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)),

the ELBO alone measures neither exactly. This module reports, in nats per example:

- the negative ELBO, split into distortion (reconstruction NLL) and rate (KL), and in bits per dimension where
  the data are discrete (``model.likelihood.discrete(x)``);
- the importance-weighted bound L_k (Burda et al. 2015), ELBO <= L_k <= log p(x) in expectation, tighter as k
  grows (a single estimate can exceed log p(x));
- for a latent dimension of 1 or 2, log p(x) itself by quadrature over z, the ELBO on the same grid, and with
  them the gap log p(x) - ELBO = KL(q(z|x) || p(z|x)) that training shrinks (for a posterior whose density is
  known only at its own samples, the planar flow, the ELBO of many draws instead, and no ELBO surgery);
- active units (Burda et al. 2015) and the split of the average KL into the mutual information I_q(x; z) and
  KL(q(z) || p(z)) (Hoffman & Johnson 2016, "ELBO surgery").

Every Monte Carlo estimate comes with its standard error (``*_se``). Everything is built on the model's own terms
(``model.elbo_terms``, ``model.log_weights``, ``model.encode``, ``model.posterior``, ``model.log_prior``,
``model.log_likelihood_grid``, ``model.prior.quadrature_box``): the same forward as training, whatever the
likelihood or the prior. Every computation over pairs (examples x examples, examples x grid points, samples x
examples) runs in blocks of bounded size (scikit-learn's ``gen_batches`` / ``pairwise_distances_chunked``
pattern), with running log-sum-exps across blocks, so memory does not grow with N^2 or N G.

Sums stay on the device; each result comes to the host once, at the end. Randomness comes from ``RNG(seed)``.
Long loops show a tqdm bar on a terminal (``progress``: None, the default, only when stderr is a terminal;
True always; False never).
Derivation: derivations/evaluation.md. Tests: tests/test_evaluate.py.
"""
import itertools
import math
import warnings

import numpy as np
from tqdm import tqdm

from .backend import array_namespace, to_host
from .checks import check_positive_int
from .logsumexp import logsumexp
from .model import VAE
from .rng import RNG

# Memory budgets, in array elements (x 8 bytes in float64, x 4 in float32). Measured with tracemalloc:
# - MAX_ELEMENTS bounds one pairwise intermediate: the (rows, columns, Z) differences of kl_decomposition and the
#   (N, grid points) terms of the quadrature; a block holds four to six such arrays at once (~32-48 MiB in
#   float64).
# - ROW_ELEMENTS bounds iw_bound's decoder rows: rows x (D row_width + sum(hidden) + Z) <= ROW_ELEMENTS. The
#   forward caches of one row take about 5 such widths (35 KB per row in float64 for D = 784, H = 400), so the
#   default keeps one call near 125 MiB in float64 (62 MiB in float32).
MAX_ELEMENTS = 1 << 20
# exact=None runs the quadrature for z_dim <= 2 only up to this many examples x dimensions: it pairs every example
# with up to 10^6 grid points, so 10,000 Fashion-MNIST images (7.8M) would take hours, the digits (23k) seconds.
AUTO_EXACT_MAX = 1_000_000
ROW_ELEMENTS = 1 << 22




def _check_model_and_data(model, x):
    """model must be a VAE; x a batch it accepts (minivae/checks.py: its values too, when x is a host array)."""
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a minivae VAE, got {type(model).__name__}")
    model.check_x(x)


def _check_progress(progress):
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be None (a bar only on a terminal), True or False, got {progress!r}")


def _bar(progress, total, desc, unit):
    """A tqdm bar of ``total`` steps on stderr: progress None -> tqdm's disable=None (shown only when stderr is a
    terminal), True -> always, False -> never."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None if progress is None else not progress)


def _batches(n, size):
    """(start, stop) of consecutive slices of at most ``size`` of range(n) (scikit-learn's ``gen_batches``)."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _logaddexp(total, part):
    """A running log-sum-exp across blocks: log(e^total + e^part), with None for the empty sum."""
    return part if total is None else array_namespace(part).logaddexp(total, part)


def _row_elements(model):
    """The width of one decoder row in array elements: D values per pixel, the hidden layers, the code."""
    return model.x_dim * model.likelihood.row_width + sum(model.hidden) + model.z_dim


def _sum_sq_dev(t):
    """sum_s (t_s - mean t)^2 along axis 0 of t: (S, ...), shifted by the first draw (the shifted-data
    algorithm): exactly 0 when every draw is the same, as a closed-form KL is."""
    xp = array_namespace(t)
    d = t - t[0:1, ...]
    return xp.maximum(xp.sum(d * d, axis=0) - xp.sum(d, axis=0) ** 2 / t.shape[0], 0.0)


def _mc_se(draws):
    """The standard error of the mean of S independent draws (S,), sqrt(var / S) with the unbiased variance;
    None for S = 1."""
    s = draws.shape[0]
    return float(math.sqrt(_sum_sq_dev(draws) / (s - 1) / s)) if s > 1 else None


# ---- the ELBO ------------------------------------------------------------------------------------------------------

def evaluate_elbo(model, x, seed=0, batch_size=1000, samples=1):
    """The held-out ELBO averaged over S = ``samples`` reparameterised draws per example, in nats:

        -ELBO_hat = (1/N) sum_n (1/S) sum_s (nll_ns + kl_ns),   nll_ns = -log p(x_n | mu_n + sigma_n eps_ns),

    kl_ns the model's KL term (closed form where the prior has one, else log q(z|x) - log p(z) at the draw).
    The Monte Carlo standard error of that mean, from each example's unbiased variance var_n across its S draws:

        se = sqrt(sum_n var_n / S) / N          (None for S = 1: one draw has no spread)

    ``x``: (N, D) on the model's device. The noise is drawn as eps (S, B, Z) per batch of ``batch_size`` examples
    from RNG(seed): with S = 1 these are the draws training's held-out ELBO uses (cheap, once per epoch).
    Returns {"neg_elbo", "nll", "kl", "neg_elbo_se", "nll_se", "kl_se", "samples"} (host floats).
    derivations/evaluation.md#elbo
    """
    _check_model_and_data(model, x)
    batch_size = check_positive_int(batch_size, "batch_size")
    samples = check_positive_int(samples, "samples")
    xp, n = model.device.xp, x.shape[0]
    rng = RNG(seed)
    total = {"nll": 0.0, "kl": 0.0}
    var_total = {"nll": 0.0, "kl": 0.0, "neg_elbo": 0.0}
    for start, stop in _batches(n, batch_size):
        xb = x[start:stop, ...]
        eps = rng.normal((samples, stop - start, model.z_dim), model.device, model.dtype_name)   # (S, B, Z)
        terms = [model.elbo_terms(xb, eps[s, ...], check_input=False) for s in range(samples)]
        nll = xp.stack([t[0] for t in terms], axis=0)                               # (S, B)
        kl = xp.stack([t[1] for t in terms], axis=0)                                # (S, B)
        for name, t in (("nll", nll), ("kl", kl), ("neg_elbo", nll + kl)):
            if name in total:
                total[name] = total[name] + xp.sum(xp.mean(t, axis=0))
            if samples > 1:                                                         # sum_n var_n, unbiased
                var_total[name] = var_total[name] + xp.sum(_sum_sq_dev(t)) / (samples - 1)
    nll, kl = float(to_host(total["nll"])) / n, float(to_host(total["kl"])) / n
    result = {"neg_elbo": nll + kl, "nll": nll, "kl": kl, "samples": samples}
    for name in ("neg_elbo", "nll", "kl"):
        result[f"{name}_se"] = (math.sqrt(max(float(to_host(var_total[name])), 0.0) / samples) / n
                                if samples > 1 else None)
    return result


# ---- the importance-weighted bound ---------------------------------------------------------------------------------

def iw_bound(model, x, k=1000, seed=0, batch_size=100, max_rows=None, progress=None):
    """L_k(x_n) = log (1/k) sum_i w_in, w_in = p(x_n, z_in) / q(z_in|x_n), z_in ~ q(z|x_n) (Burda et al. 2015): a
    bound on log p(x_n) in expectation, E[L_k] <= log p(x_n) for every k; a single estimate can exceed it.
    The log-weights are ``model.log_weights``, the forward training runs.

    Standard error (the delta method, per example): L = log mean_i w, so Var(L) ~ Var(w) / (k E[w]^2). With the
    normalised weights w~_i = w_i / sum_j w_j, the relative variance Var(w) / mean(w)^2 is estimated without
    bias-correction by k sum_i w~_i^2 - 1, times k / (k - 1) for the unbiased variance, so

        var_n = (k sum_i w~_i^2 - 1) / (k - 1),        se = sqrt(sum_n var_n) / N      (None for k = 1).

    sum_i w~_i^2 = exp(logsumexp_i 2 log w_i - 2 logsumexp_i log w_i), both log-sum-exps accumulated across
    chunks with logaddexp, so no weight leaves the log domain. The delta method is a large-k approximation: where
    q misses part of p(z|x) the weights are heavy-tailed (a small effective sample size 1 / sum_i w~_i^2) and the
    se understates the spread of L_k.

    The k samples of a batch of ``batch_size`` examples run in chunks of at most ``max_rows`` decoder rows
    (default: ROW_ELEMENTS / the row's width, ~140 MiB of forward caches in float64), so memory is bounded for
    any k and N. Returns {"iw_bound": mean L_k, "se", "k", "per_example": (N,) host, "per_example_var": (N,)
    host or None}.  derivations/evaluation.md#importance-weighted-bound
    """
    _check_model_and_data(model, x)
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_rows = (max(1, ROW_ELEMENTS // _row_elements(model)) if max_rows is None
                else check_positive_int(max_rows, "max_rows"))
    _check_progress(progress)
    xp, n = model.device.xp, x.shape[0]
    rng = RNG(seed)
    bound, sum_w2 = [], []
    with _bar(progress, n, f"L_k, k = {k}", "example") as bar:
        for start, stop in _batches(n, batch_size):
            xb = x[start:stop, ...]
            lse = lse2 = None
            for k0, k1 in _batches(k, max(1, max_rows // (stop - start))):
                eps = rng.normal((k1 - k0, stop - start, model.z_dim), model.device, model.dtype_name)  # (k', B, Z)
                log_w = model.log_weights(xb, eps, check_input=False)                                   # (k', B)
                lse = _logaddexp(lse, logsumexp(log_w, axis=0))                      # log sum_i w_i, (B,)
                lse2 = _logaddexp(lse2, logsumexp(2.0 * log_w, axis=0))              # log sum_i w_i^2, (B,)
            bound.append(lse - math.log(k))                                          # L_k per example, (B,)
            sum_w2.append(xp.exp(lse2 - 2.0 * lse))                                  # sum_i w~_i^2, (B,)
            bar.update(stop - start)
    per_example = to_host(xp.concat(bound, axis=0))
    result = {"iw_bound": float(np.mean(per_example)), "k": k, "per_example": per_example, "se": None,
              "per_example_var": None}
    if k > 1:
        var = np.maximum(k * to_host(xp.concat(sum_w2, axis=0)).astype(np.float64) - 1.0, 0.0) / (k - 1)
        result.update(se=float(math.sqrt(np.sum(var)) / n), per_example_var=var)
    return result


# ---- log p(x) by quadrature ----------------------------------------------------------------------------------------

def exact_log_px(model, x, radius=10.0, points_per_sigma=3.0, tol=1e-6, max_points=1_000_000, max_elements=None,
                 progress=None, elbo_samples=100, seed=0):
    """log p(x_n) = log of the integral of p(x_n|z) p(z) over z, by the trapezoid rule on a grid (z_dim 1 or 2),
    and on the same grid, without sampling, for every prior alike,

        ELBO_n = E_q(z|x_n)[log p(x_n|z) + log p(z) - log q(z|x_n)] ~ h^Z sum_g q(z_g|x_n) [...](z_g),

    and the gap log p(x_n) - ELBO_n = KL(q(z|x_n) || p(z|x_n)).

    log p(x) does not read q. The ELBO on the grid needs q(z_g|x_n) at every grid point, which a posterior has only
    where ``model.posterior.density_at_any_z`` (the diagonal Gaussian); for one whose density is known at its own
    samples only (the planar flow: a step has no closed-form inverse) the ELBO is the sampled one instead,
    ``evaluate_elbo`` with ``elbo_samples`` draws per example from RNG(seed), and "elbo_se" its standard error
    (then the gap's); "elbo_quadrature_error" is None and the grid is refined for log p(x) alone.

    The grid spans the prior's box (``model.prior.quadrature_box``) and every posterior q(z|x_n) out to ``radius``
    standard deviations. Its spacing starts at h = (smallest posterior or prior sigma) / ``points_per_sigma``
    and is halved until, for every example, both sums on the grid and on every other grid point (spacing 2h)
    agree to ``tol`` nats: ``quadrature_error`` = max_n |log p_h - log p_2h| and ``elbo_quadrature_error``
    = max_n |ELBO_h - ELBO_2h|, upper estimates of the errors at h (the trapezoid rule converges faster than any
    power of h on such smooth integrands). If the next grid would exceed ``max_points`` first, it stops, warns
    (RuntimeWarning) and returns ``converged`` False. Grid points run in tiles of G' points with
    N G' <= ``max_elements`` (default MAX_ELEMENTS), so memory is bounded for any N and grid.
    derivations/evaluation.md#exact-log-likelihood
    """
    _check_model_and_data(model, x)
    if model.z_dim not in (1, 2):
        raise ValueError(f"exact log p(x) needs z_dim 1 or 2 (quadrature over z); this model has z_dim "
                         f"{model.z_dim}")
    max_points = check_positive_int(max_points, "max_points")
    max_elements = MAX_ELEMENTS if max_elements is None else check_positive_int(max_elements, "max_elements")
    _check_progress(progress)
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    mu, logvar = model.encode(x)                                                    # (N, Z), logvar clamped
    mu_h, sigma_h = to_host(mu).astype(np.float64), np.exp(0.5 * to_host(logvar).astype(np.float64))
    prior_lo, prior_hi, prior_sigma = model.prior.quadrature_box(model.params)
    lo = np.minimum(np.min(mu_h - radius * sigma_h, axis=0), prior_lo)             # (Z,)
    hi = np.maximum(np.max(mu_h + radius * sigma_h, axis=0), prior_hi)
    h = min(float(np.min(sigma_h)), prior_sigma) / points_per_sigma
    h = max(h, float(np.max(hi - lo)) / max(1, int(max_points ** (1.0 / model.z_dim)) - 1))   # <= max_points
    while True:
        result = _quadrature(model, x, mu, logvar, lo, hi, h, max_elements, progress)
        error = max(result["quadrature_error"], result["elbo_quadrature_error"] or 0.0)
        if error <= tol:
            return _sampled_elbo({**result, "converged": True}, model, x, elbo_samples, seed)
        if _grid_size(lo, hi, h / 2) > max_points:
            warnings.warn(f"exact_log_px stopped at its grid cap: {result['grid_points']} grid points (spacing "
                          f"{h:.3g}; the next would exceed max_points={max_points}) with quadrature error "
                          f"{error:.3g} > tol {tol:.3g}", RuntimeWarning, stacklevel=2)
            return _sampled_elbo({**result, "converged": False}, model, x, elbo_samples, seed)
        h /= 2


def _sampled_elbo(result, model, x, samples, seed):
    """The result as it is where q has a density on the grid ("elbo_se" None); else with the sampled ELBO and
    the gap from it.  derivations/flows.md#evaluating-a-flow"""
    if model.posterior.density_at_any_z:
        return {**result, "elbo_se": None}
    mc = evaluate_elbo(model, x, seed=seed, samples=check_positive_int(samples, "elbo_samples"))
    return {**result, "elbo": -mc["neg_elbo"], "elbo_se": mc["neg_elbo_se"], "gap": result["log_px"] + mc["neg_elbo"],
            "per_example_elbo": None}


def _grid_size(lo, hi, h):
    return int(np.prod([len(a) for a in _axes(lo, hi, h)]))


def _axes(lo, hi, h):
    """The trapezoid grid's coordinates along each latent axis j: lo_j + h i, i = 0 .. ceil((hi_j - lo_j) / h)
    (host float64); the grid is their product, and the 2h subgrid the points whose indices are all even."""
    return [a + h * np.arange(int(np.ceil((b - a) / h)) + 1) for a, b in zip(lo, hi, strict=True)]


def _tiles(lengths, size):
    """The grid as product tiles of at most ``size`` points: tuples of per-axis (start, stop), the last axis
    taken whole where it fits."""
    steps, room = [], size
    for n_j in reversed(lengths):
        steps.insert(0, max(1, min(n_j, room)))
        room = max(1, room // n_j)
    ranges = [list(_batches(n_j, t)) for n_j, t in zip(lengths, steps, strict=True)]
    return list(itertools.product(*ranges))


def _trapezoid_sums(model, x, mu, logvar, axes, h, max_elements, bar):
    """The trapezoid sums on the grid of spacing h (the product of ``axes``, Z device arrays) and on its 2h
    subgrid (every index even), for every example:

        log p_h  = Z log h  + logsumexp_g [log p(x|z_g) + log p(z_g)],   log p_2h over the subgrid with Z log 2h;
        ELBO_h   = h^Z sum_g q(z_g|x) [log p(x|z_g) + log p(z_g) - log q(z_g|x)],  ELBO_2h likewise;
        q_mass   = h^Z sum_g q(z_g|x)  (1 when the grid resolves q).

    The grid runs in product tiles of G' points, N G' <= max_elements (about six (N, G') arrays live at once),
    accumulated with logaddexp and sums; in a tile the subgrid is a strided slice. On a product tile, log q is
    the sum of one table (N, t_j) per coordinate: q(z|x) is the diagonal Gaussian, whose log-density is the sum
    of its coordinates' (``model.posterior.log_prob`` of each coordinate alone). Returns a dict of (N,) device
    arrays; without the ELBO's sums where q has no density at the grid points (``density_at_any_z`` False).
    derivations/evaluation.md#exact-log-likelihood
    """
    xp = model.device.xp
    n, z_dim = x.shape[0], model.z_dim
    with_q = model.posterior.density_at_any_z
    size = max(1, min(max_elements // n, max_elements // _row_elements(model)))
    logsum = {"h": None, "2h": None}
    e_f = {"h": 0.0, "2h": 0.0}
    q_mass = 0.0
    for tile in _tiles([a.shape[0] for a in axes], size):
        coords = [a[t0:t1] for a, (t0, t1) in zip(axes, tile, strict=True)]                     # Z arrays (t_j,)
        shape = tuple(c.shape[0] for c in coords)                                   # (t_0, .., t_Z-1)
        z = xp.stack([xp.reshape(xp.broadcast_to(xp.reshape(c, _along(j, z_dim)), shape), (-1,))
                      for j, c in enumerate(coords)], axis=1)                       # (G', Z), row-major
        log_joint = model.log_likelihood_grid(x, z, check_input=False) + model.log_prior(z)[None, :]   # (N, G')
        log_joint = xp.reshape(log_joint, (n,) + shape)                             # (N, t_0, .., t_Z-1)
        sub = (slice(None),) + tuple(slice(t0 % 2, None, 2) for t0, _ in tile)      # even global indices
        if not with_q:
            for name, lj in (("h", log_joint), ("2h", log_joint[sub])):
                count = int(np.prod(lj.shape[1:]))
                if count:
                    logsum[name] = _logaddexp(logsum[name], logsumexp(xp.reshape(lj, (n, count)), axis=1))
            bar.update(z.shape[0])
            continue
        log_q = 0.0
        for j, c in enumerate(coords):                                               # log q = sum_j table_j
            table = model.posterior.log_prob(c[None, :, None], mu[:, None, j:j + 1], logvar[:, None, j:j + 1])
            log_q = log_q + xp.reshape(table, (n,) + _along(j, z_dim))              # (N, 1, t_j, 1)
        q = xp.exp(log_q)                                                            # (N, t_0, ..): q(z_g|x_n)
        f = xp.where(q > 0.0, q * (log_joint - log_q), 0.0)                        # q [log p(x, z) - log q]
        for name, lj, fj in (("h", log_joint, f), ("2h", log_joint[sub], f[sub])):
            count = int(np.prod(lj.shape[1:]))
            if count:
                logsum[name] = _logaddexp(logsum[name], logsumexp(xp.reshape(lj, (n, count)), axis=1))
                e_f[name] = e_f[name] + xp.sum(xp.reshape(fj, (n, count)), axis=1)
        q_mass = q_mass + xp.sum(xp.reshape(q, (n, -1)), axis=1)
        bar.update(z.shape[0])
    sums = {"log_px": logsum["h"] + z_dim * math.log(h), "log_px_2h": logsum["2h"] + z_dim * math.log(2.0 * h)}
    if with_q:
        sums.update(elbo=e_f["h"] * h ** z_dim, elbo_2h=e_f["2h"] * (2.0 * h) ** z_dim, q_mass=q_mass * h ** z_dim)
    return sums


def _along(j, z_dim):
    """The shape that lays a (t_j,) array along tile axis j of z_dim: (1, .., t_j, .., 1) with -1 for t_j."""
    return tuple(-1 if i == j else 1 for i in range(z_dim))


def _quadrature(model, x, mu, logvar, lo, hi, h, max_elements, progress):
    """One pass of exact_log_px at spacing h: the grid's axes, its sums, and the results on the host."""
    axes = [model.device.asarray(a, dtype=model.dtype_name) for a in _axes(lo, hi, h)]   # moved once
    points = int(np.prod([a.shape[0] for a in axes]))
    with _bar(progress, points, f"quadrature, h = {h:.3g}", "point") as bar:
        sums = _trapezoid_sums(model, x, mu, logvar, axes, h, max_elements, bar)
    s = {name: to_host(value).astype(np.float64) for name, value in sums.items()}
    result = {"log_px": float(np.mean(s["log_px"])),
              "quadrature_error": float(np.max(np.abs(s["log_px"] - s["log_px_2h"]))), "grid_points": points,
              "grid_spacing": h, "per_example": s["log_px"]}
    if "elbo" not in s:                                   # q has no density on the grid: _sampled_elbo fills these
        return {**result, "elbo": None, "gap": None, "elbo_quadrature_error": None, "q_mass_error": None}
    return {**result, "elbo": float(np.mean(s["elbo"])), "gap": float(np.mean(s["log_px"] - s["elbo"])),
            "elbo_quadrature_error": float(np.max(np.abs(s["elbo"] - s["elbo_2h"]))),
            "q_mass_error": float(np.max(np.abs(s["q_mass"] - 1.0))), "per_example_elbo": s["elbo"]}


# ---- how the latent space is used ----------------------------------------------------------------------------------

def active_units(model, x, threshold=0.01):
    """The number of latent dimensions j with Cov_x(E_q[z_j]) = Var_n(mu_nj) > ``threshold`` (Burda et al. 2015).
    derivations/evaluation.md#active-units
    """
    _check_model_and_data(model, x)
    mu, _ = model.encode(x)
    mu = to_host(mu).astype(np.float64)
    variance = np.var(mu, axis=0)
    return {"active_units": int(np.sum(variance > threshold)), "variance": variance.tolist()}


def _log_aggregate_posterior(model, z, mu, logvar, block, bar):
    """log q(z_n) = logsumexp_m log q(z_n|x_m) - log N for every code z_n: (N, Z), the (N, N) pairs in blocks of
    block x block (x Z) with a running logaddexp over the column blocks.  derivations/evaluation.md#elbo-surgery"""
    xp, n = model.device.xp, z.shape[0]
    rows = []
    for r0, r1 in _batches(n, block):
        total = None
        for c0, c1 in _batches(n, block):
            log_q = model.posterior.log_prob(z[r0:r1, None, :], mu[None, c0:c1, :], logvar[None, c0:c1, :])
            total = _logaddexp(total, logsumexp(log_q, axis=1))                      # (rows,): log q(z_n|x_m)
        rows.append(total)
        bar.update(1)
    return xp.concat(rows, axis=0) - math.log(n)                                     # (N,)


def kl_decomposition(model, x, samples=10, seed=0, max_elements=None, progress=None):
    """mean_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)), with q(z) = (1/N) sum_n q(z|x_n) the
    aggregate posterior over the evaluation set (Hoffman & Johnson 2016).

    I_q(x; z) = mean_n E_q(z|x_n)[log q(z|x_n) - log q(z)] is estimated with ``samples`` = S draws per example
    z_n = mu_n + sigma_n eps_n (``model.posterior.rsample_forward``), log q(z_n) by log-sum-exp over the (N, N)
    pairs in blocks of at most ``max_elements`` (rows x columns x Z) (default MAX_ELEMENTS); it is exactly 0 when
    the encoder ignores x, and at most log N. The average KL is the model's KL term at the same draws (closed
    form where the prior has one, else log q(z_n|x_n) - log p(z_n)), and the marginal KL the rest. Each standard
    error is the spread of the S per-draw estimates, std / sqrt(S) (None for S = 1).
    derivations/evaluation.md#elbo-surgery, derivations/prior.md#evaluation-with-a-mixture-prior
    """
    _check_model_and_data(model, x)
    samples = check_positive_int(samples, "samples")
    max_elements = MAX_ELEMENTS if max_elements is None else check_positive_int(max_elements, "max_elements")
    _check_progress(progress)
    xp, n = model.device.xp, x.shape[0]
    mu, logvar = model.encode(x)                                                    # (N, Z), logvar clamped
    kl_term = model.prior.kl_term(True)                                              # closed form where it exists
    block = min(n, max(1, math.isqrt(max_elements // model.z_dim)))
    rng = RNG(seed)
    info, kl = [], []
    with _bar(progress, samples * len(range(0, n, block)), "ELBO surgery", "block") as bar:
        for _ in range(samples):
            eps = rng.normal((n, model.z_dim), model.device, model.dtype_name)      # (N, Z)
            z, log_q_own, _ = model.posterior.rsample_forward((mu, logvar), eps)   # z_n ~ q(z|x_n), log q(z_n|x_n)
            log_qz = _log_aggregate_posterior(model, z, mu, logvar, block, bar)     # log q(z_n), (N,)
            kl_n, _ = kl_term.forward(model.params, (mu, logvar), z, log_q_own)      # (N,)
            info.append(xp.mean(log_q_own - log_qz))
            kl.append(xp.mean(kl_n))
    info = to_host(xp.stack(info, axis=0)).astype(np.float64)                         # (S,)
    kl = to_host(xp.stack(kl, axis=0)).astype(np.float64)                             # (S,)
    mean_kl, mean_info = float(np.mean(kl)), float(np.mean(info))
    return {"kl": mean_kl, "mutual_information": mean_info, "marginal_kl": mean_kl - mean_info,
            "kl_se": _mc_se(kl), "mutual_information_se": _mc_se(info), "marginal_kl_se": _mc_se(kl - info),
            "log_n": math.log(n), "samples": samples}


# ---- everything ----------------------------------------------------------------------------------------------------

def evaluate_sections(model, x, k=1000, seed=0, exact=None, samples=10, progress=None):
    """evaluate, one section at a time: yields (name, results) as soon as each is computed, in the order
    "elbo", "iw_bound", "exact" (when run), "active_units", "surgery", so a caller can show (and keep) each
    before the next, longer one starts. ``exact`` defaults to True when z_dim <= 2 and the data has at most
    AUTO_EXACT_MAX examples x dimensions (else the "exact" section only says why it was skipped)."""
    _check_model_and_data(model, x)
    samples = check_positive_int(samples, "samples")
    k = check_positive_int(k, "k")
    _check_progress(progress)
    n, d = x.shape
    elbo = evaluate_elbo(model, x, seed=seed, samples=samples)
    section = {"examples": int(n), "dimensions": int(d), "samples": samples}
    section.update({key: elbo[key] for key in ("neg_elbo", "neg_elbo_se", "nll", "nll_se", "kl", "kl_se")})
    if model.likelihood.discrete(x):          # bits per dimension only for a probability of discrete data
        bits = d * math.log(2.0)
        section["bits_per_dim"] = elbo["neg_elbo"] / bits
        section["bits_per_dim_se"] = None if elbo["neg_elbo_se"] is None else elbo["neg_elbo_se"] / bits
    yield "elbo", section
    iw = iw_bound(model, x, k=k, seed=seed, progress=progress)
    yield "iw_bound", {"k": k, "neg_iw_bound": -iw["iw_bound"], "neg_iw_bound_se": iw["se"]}
    if exact is None and model.z_dim <= 2 and n * d > AUTO_EXACT_MAX:
        yield "exact", {"exact_skipped": f"{n} examples x {d} dimensions is hours of quadrature on a CPU; "
                                         f"--exact yes (exact=True) runs it"}
    elif exact if exact is not None else model.z_dim <= 2:
        ex = exact_log_px(model, x, progress=progress, seed=seed)
        neg_elbo = "quadrature_neg_elbo" if ex["elbo_se"] is None else "sampled_neg_elbo"
        section = {"neg_log_px": -ex["log_px"], neg_elbo: -ex["elbo"], f"{neg_elbo}_se": ex["elbo_se"],
                   "posterior_gap": ex["gap"], "posterior_gap_se": ex["elbo_se"],
                   "quadrature_error": ex["quadrature_error"], "elbo_quadrature_error": ex["elbo_quadrature_error"],
                   "q_mass_error": ex["q_mass_error"], "grid_points": ex["grid_points"],
                   "quadrature_converged": ex["converged"]}
        yield "exact", {k: v for k, v in section.items() if v is not None or k.endswith("_se")}  # a sampled ELBO
        #   has no quadrature error
    yield "active_units", {"active_units": active_units(model, x)["active_units"]}
    if not model.posterior.density_at_any_z:
        yield "surgery", {"surgery_skipped": "the posterior's density is known at its own samples only; the split "
                                             "needs log q(z|x_m) at every other example's codes"}
        return
    dec = kl_decomposition(model, x, samples=samples, seed=seed, progress=progress)
    yield "surgery", {key: dec[key] for key in ("mutual_information", "mutual_information_se", "marginal_kl",
                                                "marginal_kl_se")}


def evaluate(model, x, k=1000, seed=0, exact=None, samples=10, progress=None):
    """Everything above for ``x`` (on the model's device): a flat dict of host numbers for a table and JSON,
    each Monte Carlo estimate with its standard error under the key + "_se" (None where it has no spread).
    ``samples``: draws per example of the ELBO and the ELBO surgery; ``k``: of L_k. ``exact`` defaults to True
    when z_dim <= 2.  derivations/evaluation.md#elbo"""
    result = {}
    for _, section in evaluate_sections(model, x, k=k, seed=seed, exact=exact, samples=samples, progress=progress):
        result.update(section)
    return result
