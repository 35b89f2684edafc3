"""Priors p(z) over the latent code as pure ops, and the log-density of q(z|x) at a reparameterised sample
(the prior parts that use them: minivae/parts/standard_normal.py, minivae/parts/mixture.py).

- the standard VAE's p(z) = N(0, I) (Kingma & Welling 2013, Sec. 3);
- a learned mixture of C Gaussians with diagonal covariances,
  p(z) = sum_c pi_c N(z; mu_c, diag exp(logvar_c)),  pi = softmax(logits),
  whose parameters are trained with the model (as the mixture-of-Gaussians prior that Tomczak & Welling 2018,
  "VAE with a VampPrior", compare against; the responsibilities are Bishop's PRML, Sec. 9.2).

With a prior that is not N(0, I) the KL(q(z|x) || p(z)) has no closed form; the model estimates it with the
sampled z as log q(z|x) - log p(z) (Kingma & Welling 2013, Eq. 6), which needs the two log-densities below.
Randomness never enters an op: ``mog_sample`` takes its uniform and normal noise as arguments.
Derivation: derivations/prior.md. Tests: tests/test_prior.py, tests/test_ops.py.
"""

import numpy as np

from .checks import check_arrays, check_shape
from .likelihoods import LOG_2PI
from .logsumexp import logsumexp


def std_normal_log_prob_forward(z):
    """log N(z; 0, I) = -1/2 sum_j (z_j^2 + log 2 pi).   z: (N, Z) -> log_p: (N,).

    cache = z.  derivations/prior.md#standard-normal
    """
    xp = check_arrays("std_normal_log_prob_forward", z=z)
    check_shape("std_normal_log_prob_forward", "z", z, (None, None))
    log_p = -0.5 * xp.sum(z * z + LOG_2PI, axis=1)                   # (N,)
    return log_p, z


def std_normal_log_prob_backward(dlogp, cache):
    """dz = -dlogp z.   dlogp: (N,) -> dz: (N, Z).   derivations/prior.md#standard-normal"""
    z = cache
    _check_dlogp("std_normal_log_prob_backward", dlogp, z)
    return -dlogp[:, None] * z


def reparam_log_q_forward(eps, logvar):
    """log q(z|x) at z = mu + sigma eps:  -1/2 sum_j (eps_j^2 + logvar_j + log 2 pi).
    eps, logvar: (N, Z) -> log_q: (N,).

    Written in eps, the density no longer depends on mu, and its total derivative in logvar (directly and through
    z) is -1/2. cache = logvar (for its shape).  derivations/prior.md#log-q-at-a-sample
    """
    xp = check_arrays("reparam_log_q_forward", eps=eps, logvar=logvar)
    check_shape("reparam_log_q_forward", "logvar", logvar, (None, None))
    check_shape("reparam_log_q_forward", "eps", eps, tuple(logvar.shape), "logvar's shape")
    log_q = -0.5 * xp.sum(eps * eps + logvar + LOG_2PI, axis=1)      # (N,)
    return log_q, logvar


def reparam_log_q_backward(dlogq, cache):
    """dlogvar = -dlogq / 2 (the total derivative; dmu = 0).   dlogq: (N,) -> dlogvar: (N, Z).
    derivations/prior.md#log-q-at-a-sample"""
    logvar = cache
    xp = _check_dlogp("reparam_log_q_backward", dlogq, logvar, "dlogq")
    return -0.5 * dlogq[:, None] * xp.ones_like(logvar)              # (N, Z): the same for every j


def diag_normal_log_prob(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)) = -1/2 sum_j [(z_j - mu_j)^2 exp(-logvar_j) + logvar_j + log 2 pi],
    summed over the last axis; z, mu and logvar broadcast against each other (e.g. z: (B, 1, Z) against
    mu, logvar: (1, M, Z) gives (B, M)). Forward only: evaluation's log-density of q and of the mixture's
    components.  derivations/evaluation.md#elbo-surgery
    """
    xp = check_arrays("diag_normal_log_prob", z=z, mu=mu, logvar=logvar)
    check_shape("diag_normal_log_prob", "logvar", logvar, tuple(mu.shape), "mu's shape")
    if z.ndim < 1 or mu.ndim < 1 or z.shape[-1] != mu.shape[-1]:
        raise ValueError(f"diag_normal_log_prob: z must have mu's last dimension {tuple(mu.shape)[-1:]}, "
                         f"got shape {tuple(z.shape)}")
    diff = z - mu
    return -0.5 * xp.sum(diff * diff * xp.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def mog_log_prob_forward(z, logits, mu, logvar):
    """log p(z) for the mixture sum_c pi_c N(mu_c, diag exp(logvar_c)), pi = softmax(logits).
    z: (N, Z), logits: (C,), mu, logvar: (C, Z) -> log_p: (N,).

        a_nc  = log pi_c - 1/2 sum_j [(z_nj - mu_cj)^2 exp(-logvar_cj) + logvar_cj + log 2 pi]
        log_p = logsumexp_c a_nc       (stable: shifted by the row maximum)

    cache = (diff, g, r, pi): diff = z - mu_c (N, C, Z), g = diff / sigma_c^2 (N, C, Z), the responsibilities
    r_nc = exp(a_nc - log_p_n) (N, C) and pi (C,).  derivations/prior.md#mixture-forward
    """
    xp = check_arrays("mog_log_prob_forward", z=z, logits=logits, mu=mu, logvar=logvar)
    check_shape("mog_log_prob_forward", "mu", mu, (None, None))
    check_shape("mog_log_prob_forward", "logvar", logvar, tuple(mu.shape), "mu's shape (C, Z)")
    check_shape("mog_log_prob_forward", "logits", logits, (mu.shape[0],), "one per component of mu")
    check_shape("mog_log_prob_forward", "z", z, (None, mu.shape[1]), "mu's Z")
    log_pi = logits - logsumexp(logits, axis=0)                      # (C,)  log softmax
    ivar = xp.exp(-logvar)                                           # (C, Z)  1 / sigma_c^2
    diff = z[:, None, :] - mu[None, :, :]                            # (N, C, Z)
    g = diff * ivar[None, :, :]                                      # (N, C, Z)
    log_n = -0.5 * xp.sum(diff * g + logvar[None, :, :] + LOG_2PI, axis=2)   # (N, C)  log N(z_n; mu_c, .)
    a = log_pi[None, :] + log_n                                      # (N, C)
    log_p = logsumexp(a, axis=1)                                     # (N,)
    r = xp.exp(a - log_p[:, None])                                   # (N, C)  responsibilities, rows sum to 1
    return log_p, (diff, g, r, xp.exp(log_pi))


def mog_log_prob_backward(dlogp, cache):
    """With da_nc = dlogp_n r_nc:
    dz_n = -sum_c da_nc (z_n - mu_c) / sigma_c^2,   dmu_c = sum_n da_nc (z_n - mu_c) / sigma_c^2,
    dlogvar_c = 1/2 sum_n da_nc ((z_n - mu_c)^2 / sigma_c^2 - 1),   dlogits_c = sum_n da_nc - pi_c sum_n dlogp_n.
    dlogp: (N,) -> (dz (N, Z), dlogits (C,), dmu (C, Z), dlogvar (C, Z)).  derivations/prior.md#mixture-backward
    """
    diff, g, r, pi = cache
    xp = _check_dlogp("mog_log_prob_backward", dlogp, r)
    da = dlogp[:, None] * r                                          # (N, C)
    dag = da[:, :, None] * g                                         # (N, C, Z)
    dz = -xp.sum(dag, axis=1)                                        # (N, Z)
    dmu = xp.sum(dag, axis=0)                                        # (C, Z)
    dlogvar = 0.5 * xp.sum(dag * diff - da[:, :, None], axis=0)      # (C, Z)
    dlogits = xp.sum(da, axis=0) - pi * xp.sum(dlogp)                # (C,)
    return dz, dlogits, dmu, dlogvar


def mog_sample(logits, mu, logvar, u, eps):
    """z ~ sum_c pi_c N(mu_c, diag exp(logvar_c)) from given noise (no randomness inside).
    logits: (C,), mu, logvar: (C, Z), u: (N, C) uniform on [0, 1), eps: (N, Z) standard normal -> z: (N, Z).

    The component is picked by the Gumbel-max trick, c_n = argmax_c (logits_c - log(-log u_nc)), which picks c
    with probability pi_c = softmax(logits)_c; then z_n = mu_c + exp(logvar_c / 2) eps_n.
    derivations/prior.md#sampling-the-mixture
    """
    xp = check_arrays("mog_sample", logits=logits, mu=mu, logvar=logvar, u=u, eps=eps)
    check_shape("mog_sample", "mu", mu, (None, None))
    check_shape("mog_sample", "logvar", logvar, tuple(mu.shape), "mu's shape (C, Z)")
    check_shape("mog_sample", "logits", logits, (mu.shape[0],), "one per component of mu")
    check_shape("mog_sample", "eps", eps, (None, mu.shape[1]), "mu's Z")
    check_shape("mog_sample", "u", u, (eps.shape[0], mu.shape[0]), "(N, C)")
    with np.errstate(divide="ignore"):                               # u = 0: a Gumbel of -inf, never picked
        gumbel = -xp.log(-xp.log(u))                                 # (N, C)
    c = xp.argmax(logits[None, :] + gumbel, axis=1)                  # (N,)
    return xp.take(mu, c, axis=0) + xp.take(xp.exp(0.5 * logvar), c, axis=0) * eps   # (N, Z)


def _check_dlogp(where, dlogp, per_row, name="dlogp"):
    """A per-code upstream gradient: an (N,) array of the forward's dtype (no broadcasting)."""
    xp = check_arrays(where, **{name: dlogp}, cache=per_row)
    check_shape(where, name, dlogp, (per_row.shape[0],), "one per code")
    return xp


def init_mog_params(rng, components, z_dim):
    """Host float64 initial values: logits 0 (equal weights), means drawn from N(0, I), log-variances 0, so the
    prior starts as C unit Gaussians spread like draws of the standard normal.  derivations/prior.md#parameters"""
    return {"prior.logits": np.zeros(components), "prior.mu": rng.host_normal((components, z_dim)),
            "prior.logvar": np.zeros((components, z_dim))}
