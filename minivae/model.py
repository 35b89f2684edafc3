"""The variational autoencoder (Kingma & Welling 2013): an MLP encoder q(z|x) = N(mu, diag sigma^2), a prior
p(z) (N(0, I), or a learned mixture of Gaussians: ``prior="mog"``), and an MLP decoder p(x|z). The loss is the
negative ELBO per example,

    loss = mean_n [ -log p(x_n | z_n) + beta * KL(q(z|x_n) || p(z)) ],   z_n = mu_n + sigma_n * eps_n,

with the KL in closed form for N(0, I) and estimated with the sample, log q(z_n|x_n) - log p(z_n), for the
mixture; or, given K noises per example (eps of shape (K, N, Z)), the importance-weighted objective
-mean_n log (1/K) sum_i w_i (Burda et al. 2015). ``loss_and_grads`` computes either and its gradient by hand,
in the order the chain rule runs. Derivation: derivations/elbo.md (the objective and the whole-model backward),
derivations/objectives.md (beta, warm-up, the importance-weighted objective), derivations/prior.md (the mixture
prior). Tests: tests/test_model.py.

Parameters live in one dict ``model.params`` (name -> array):

    enc.{i}.W, enc.{i}.b         hidden layer i of the encoder, W: (D_in, D_out), b: (D_out,)
    enc.mu.W, enc.mu.b           h -> mu          (H, Z), (Z,)
    enc.logvar.W, enc.logvar.b   h -> logvar      (H, Z), (Z,)
    dec.{i}.W, dec.{i}.b         hidden layer i of the decoder
    dec.out.W, dec.out.b         h -> logits (bernoulli, (H, D), (D,)), mean (gaussian, (H, D), (D,)) or
                                 logits per pixel and level (categorical, (H, D*L), (D*L,), read as (N, D, L))
    dec.logvar                   gaussian_variance "shared": the raw log-variance of all dimensions, shape ();
                                 "per-dim": one per dimension, shape (D,)
    dec.logvar.W, dec.logvar.b   gaussian_variance "per-element": h -> the raw log-variance of every element, a
                                 second output head, (H, D), (D,)
    prior.logits                 prior "mog" only: the mixture logits, pi = softmax(logits), (C,)
    prior.mu, prior.logvar       prior "mog" only: the components' means and log-variances, (C, Z) each

The Gaussian's variance is fixed at ``sigma``^2 ("fixed": no parameter) or learned, and a learned raw log-variance
l is always used through the floor sigma^2 = sigma_min^2 + exp(l) (likelihoods.variance_floor_forward), without
which the likelihood is unbounded: derivations/likelihoods.md#why-a-floor.

Initialisation (from ``seed``, on the host, then moved to the device): W ~ N(0, gain^2 / D_in) with gain
sqrt(2) for relu and 1 otherwise (LeCun / He); every bias 0; dec.logvar = 0. The mog prior, drawn after all
the weights from the same stream: prior.logits = 0 (equal weights), prior.mu ~ N(0, I), prior.logvar = 0.
"""
import math

import numpy as np

from .backend import array_namespace, get_device
from .kl import kl_std_normal_backward, kl_std_normal_forward
from .layers import get_activation, linear_backward, linear_forward
from .likelihoods import (SIGMA_MIN, bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward,
                          categorical_nll_forward, gaussian_nll_backward, gaussian_nll_forward, level_onehot,
                          variance_floor_backward, variance_floor_forward)
from .iwae import iw_bound_backward, iw_bound_forward
from .prior import (PRIORS, init_mog_params, mog_log_prob_backward, mog_log_prob_forward, mog_sample,
                    reparam_log_q_backward, reparam_log_q_forward, std_normal_log_prob_backward,
                    std_normal_log_prob_forward)
from .reparam import reparameterize_backward, reparameterize_forward
from .rng import RNG

LIKELIHOODS = ("bernoulli", "gaussian", "categorical")
GAUSSIAN_VARIANCES = ("shared", "fixed", "per-dim", "per-element")


def check_likelihood_args(gaussian_variance, sigma, sigma_min, levels):
    """A ValueError naming the first bad likelihood option (checked whatever the likelihood: the config carries
    all of them). sigma: the fixed Gaussian's standard deviation; sigma_min: the floor of a learned one."""
    if gaussian_variance not in GAUSSIAN_VARIANCES:
        raise ValueError(f"gaussian_variance must be one of {', '.join(GAUSSIAN_VARIANCES)}; "
                         f"got {gaussian_variance!r}")
    for name, value in (("sigma", sigma), ("sigma_min", sigma_min)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class VAE:
    """A VAE with MLP encoder and decoder; ``hidden=()`` makes both linear."""

    def __init__(self, x_dim, z_dim, hidden=(400,), activation="tanh", likelihood="bernoulli",
                 dtype="float32", device="cpu", seed=0, *, gaussian_variance="shared", sigma=1.0,
                 sigma_min=SIGMA_MIN, levels=256, prior="normal", prior_components=10):
        self.x_dim = _positive_int(x_dim, "x_dim")
        self.z_dim = _positive_int(z_dim, "z_dim")
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.hidden = tuple(_positive_int(h, "hidden") for h in hidden)
        self.act_forward, self.act_backward = get_activation(activation)
        self.activation = activation
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")
        self.likelihood = likelihood
        check_likelihood_args(gaussian_variance, sigma, sigma_min, levels)
        self.gaussian_variance, self.sigma, self.sigma_min, self.levels = (
            gaussian_variance, float(sigma), float(sigma_min), levels)
        self.device = get_device(device)
        self.dtype_name = dtype
        self.dtype = self.device.dtype(dtype)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}; got {prior!r}")
        self.prior = prior
        self.prior_components = _positive_int(prior_components, "prior_components")   # read by "mog" only
        rng = RNG(seed)
        self.params = self._init_params(rng)
        if prior == "mog":                                   # drawn after the weights, from the same stream
            for name, value in init_mog_params(rng, self.prior_components, self.z_dim).items():
                self.params[name] = self.device.asarray(value, dtype=self.dtype_name)
        if likelihood == "gaussian" and gaussian_variance == "fixed":      # constants, made on the device once
            self._fixed_logvar = self.device.asarray(2.0 * math.log(sigma), dtype=dtype)      # ()
        if likelihood == "categorical":
            self._level_grid = self.device.asarray(np.arange(levels), dtype=dtype)           # (L,): 0 .. L-1

    @property
    def config(self):
        """What rebuilds this architecture: ``VAE(**model.config)``."""
        return dict(x_dim=self.x_dim, z_dim=self.z_dim, hidden=list(self.hidden), activation=self.activation,
                    likelihood=self.likelihood, dtype=self.dtype_name, gaussian_variance=self.gaussian_variance,
                    sigma=self.sigma, sigma_min=self.sigma_min, levels=self.levels, prior=self.prior,
                    prior_components=self.prior_components)

    def _init_params(self, rng):
        gain = math.sqrt(2.0) if self.activation == "relu" else 1.0
        shapes = {}
        for prefix, d_in in (("enc", self.x_dim), ("dec", self.z_dim)):
            for i, h in enumerate(self.hidden):
                shapes[f"{prefix}.{i}"] = (d_in, h)
                d_in = h
            if prefix == "enc":
                shapes["enc.mu"] = shapes["enc.logvar"] = (d_in, self.z_dim)
            else:
                per_pixel = self.levels if self.likelihood == "categorical" else 1   # L logits per pixel
                shapes["dec.out"] = (d_in, self.x_dim * per_pixel)
                if self.likelihood == "gaussian" and self.gaussian_variance == "per-element":
                    shapes["dec.logvar"] = (d_in, self.x_dim)                     # the second output head
        params = {}
        for name, (d_in, d_out) in shapes.items():
            params[name + ".W"] = self.device.asarray(rng.host_normal((d_in, d_out), gain / math.sqrt(d_in)),
                                                      dtype=self.dtype_name)
            params[name + ".b"] = self.device.asarray(np.zeros(d_out), dtype=self.dtype_name)
        if self.likelihood == "gaussian" and self.gaussian_variance in ("shared", "per-dim"):
            shape = () if self.gaussian_variance == "shared" else (self.x_dim,)
            params["dec.logvar"] = self.device.asarray(np.zeros(shape), dtype=self.dtype_name)
        return params

    # ---- forward pieces -------------------------------------------------------------------------------

    def _mlp_forward(self, h, prefix):
        """The hidden layers of the encoder or decoder: h <- act(h W + b) for each. Returns (h, caches)."""
        caches = []
        for i in range(len(self.hidden)):
            a, lin_cache = linear_forward(h, self.params[f"{prefix}.{i}.W"], self.params[f"{prefix}.{i}.b"])
            h, act_cache = self.act_forward(a)
            caches.append((lin_cache, act_cache))
        return h, caches

    def _mlp_backward(self, dh, caches, prefix, grads, need_dx=True):
        """Backward through the hidden layers, last to first; writes their grads, returns d(input) (None when
        ``need_dx`` is False: the encoder's input is the data, whose gradient nothing needs)."""
        for i in reversed(range(len(self.hidden))):
            lin_cache, act_cache = caches[i]
            da = self.act_backward(dh, act_cache)
            dh, grads[f"{prefix}.{i}.W"], grads[f"{prefix}.{i}.b"] = linear_backward(
                da, lin_cache, need_dx=need_dx or i > 0)
        return dh

    def encode(self, x):
        """q(z|x) = N(mu, diag exp(logvar)).  x: (N, D) -> mu, logvar: (N, Z)."""
        self._check_x(x)
        (mu, logvar), _ = self._encode(x)
        return mu, logvar

    def _encode(self, x):
        h, mlp_caches = self._mlp_forward(x, "enc")                                         # (N, H)
        mu, mu_cache = linear_forward(h, self.params["enc.mu.W"], self.params["enc.mu.b"])   # (N, Z)
        logvar, lv_cache = linear_forward(h, self.params["enc.logvar.W"], self.params["enc.logvar.b"])
        return (mu, logvar), (mlp_caches, mu_cache, lv_cache)

    def decode(self, z):
        """The parameters of p(x|z) for codes z: (N, Z):
        bernoulli {"logits": (N, D)}; categorical {"logits": (N, D, L)}; gaussian {"mean": (N, D), "logvar": the
        log-variance used, after the floor: () fixed or shared, (D,) per-dim, (N, D) per-element}."""
        self._check_z(z)
        (a, lv), _ = self._decode(z)
        if self.likelihood != "gaussian":
            return {"logits": a}
        logvar, _ = self._gaussian_logvar(lv)
        return {"mean": a, "logvar": logvar}

    def _decode(self, z):
        """z -> the decoder's raw outputs ``out = (a, lv)``: a the logits or mean, (N, D), or the categorical's
        logits, (N, D, L); lv the per-element head's raw log-variance, (N, D), or None. Returns (out, caches)."""
        xp = array_namespace(z)
        h, mlp_caches = self._mlp_forward(z, "dec")                                          # (N, H)
        a, out_cache = linear_forward(h, self.params["dec.out.W"], self.params["dec.out.b"])  # (N, D) or (N, D*L)
        if self.likelihood == "categorical":
            a = xp.reshape(a, (a.shape[0], self.x_dim, self.levels))                        # (N, D, L)
        lv = lv_cache = None
        if self.likelihood == "gaussian" and self.gaussian_variance == "per-element":
            lv, lv_cache = linear_forward(h, self.params["dec.logvar.W"], self.params["dec.logvar.b"])  # (N, D)
        return (a, lv), (mlp_caches, out_cache, lv_cache)

    def _decode_backward(self, dout, caches, grads):
        """Backward of ``_decode``: dout = (da, dlv) as ``_nll_backward`` returns it; writes the decoder's grads,
        returns dz. The two heads both read h, so their gradients into h add.
        derivations/likelihoods.md#per-element-variance"""
        da, dlv = dout
        mlp_caches, out_cache, lv_cache = caches
        if self.likelihood == "categorical":
            xp = array_namespace(da)
            da = xp.reshape(da, (da.shape[0], self.x_dim * self.levels))                    # (N, D*L)
        dh, grads["dec.out.W"], grads["dec.out.b"] = linear_backward(da, out_cache)         # (N, H)
        if lv_cache is not None:
            dh_lv, grads["dec.logvar.W"], grads["dec.logvar.b"] = linear_backward(dlv, lv_cache)
            dh = dh + dh_lv
        return self._mlp_backward(dh, mlp_caches, "dec", grads)                              # (N, Z)

    def _gaussian_logvar(self, lv):
        """The Gaussian's log-variance and the floor's cache: the fixed constant (cache None), or the floor
        log(sigma_min^2 + exp(l)) of the learned raw l (``dec.logvar``, or the per-element head's output lv)."""
        if self.gaussian_variance == "fixed":
            return self._fixed_logvar, None                                                  # ()
        raw = lv if self.gaussian_variance == "per-element" else self.params["dec.logvar"]   # (N, D), () or (D,)
        return variance_floor_forward(raw, self.sigma_min)

    def _nll_forward(self, x, out):
        """-log p(x|z) per example, (N,), from the decoder's raw outputs ``out`` (as ``_decode`` returns them)."""
        a, lv = out
        if self.likelihood == "bernoulli":
            return bernoulli_nll_forward(x, a)
        if self.likelihood == "categorical":
            return categorical_nll_forward(level_onehot(x, self._level_grid), a)           # targets (N, D, L)
        logvar, floor_cache = self._gaussian_logvar(lv)
        nll, cache = gaussian_nll_forward(x, a, logvar)
        return nll, (cache, floor_cache)

    def _nll_backward(self, dnll, nll_cache, grads):
        """Backward of the likelihood: returns d(decoder outputs) = (da, dlv), dlv None unless the variance is
        per element; writes the gradient of a learned shared / per-dim log-variance into ``grads``."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll_backward(dnll, nll_cache), None                           # (N, D)
        if self.likelihood == "categorical":
            return categorical_nll_backward(dnll, nll_cache), None                         # (N, D, L)
        cache, floor_cache = nll_cache
        dmean, dlogvar = gaussian_nll_backward(dnll, cache)                                  # (N, D), logvar's shape
        if self.gaussian_variance == "fixed":
            return dmean, None
        draw = variance_floor_backward(dlogvar, floor_cache)                                 # through the floor
        if self.gaussian_variance == "per-element":
            return dmean, draw                                                               # into the second head
        grads["dec.logvar"] = draw
        return dmean, None

    # ---- the prior and the KL --------------------------------------------------------------------------

    def log_prior(self, z):
        """log p(z) per code, (N,), for z: (N, Z): N(0, I) or the mixture.  derivations/prior.md"""
        self._check_z(z)
        log_p, _ = self._log_prior_forward(z)
        return log_p

    def sample_prior(self, n, rng):
        """n codes z ~ p(z), (n, Z) on the model's device, with the noise drawn from ``rng`` (a minivae RNG):
        eps ~ N(0, I) for the normal prior; for the mixture also u ~ U[0, 1) of shape (n, C) that picks each
        code's component (``prior.mog_sample``).  derivations/prior.md#sampling-the-mixture"""
        n = _positive_int(n, "n")
        if self.prior == "normal":
            return rng.normal((n, self.z_dim), self.device, self.dtype_name)
        u = rng.uniform((n, self.prior_components), self.device, self.dtype_name)        # (n, C)
        eps = rng.normal((n, self.z_dim), self.device, self.dtype_name)                  # (n, Z)
        return mog_sample(self.params["prior.logits"], self.params["prior.mu"], self.params["prior.logvar"],
                          u, eps)

    def _log_prior_forward(self, z):
        if self.prior == "normal":
            return std_normal_log_prob_forward(z)                                        # (N,)
        return mog_log_prob_forward(z, self.params["prior.logits"], self.params["prior.mu"],
                                    self.params["prior.logvar"])

    def _log_prior_backward(self, dlogp, cache, grads):
        """Returns dz; writes the mixture's parameter gradients into ``grads``."""
        if self.prior == "normal":
            return std_normal_log_prob_backward(dlogp, cache)                            # (N, Z)
        dz, grads["prior.logits"], grads["prior.mu"], grads["prior.logvar"] = mog_log_prob_backward(dlogp, cache)
        return dz

    def _kl_forward(self, mu, logvar, z, eps, sampled=False):
        """kl (N,) and its cache: the closed form for the normal prior (derivations/kl.md#forward), else (or when
        ``sampled``) the estimate at the sample, log q(z|x) - log p(z) (derivations/prior.md#sampled-kl)."""
        if self.prior == "normal" and not sampled:
            kl, cache = kl_std_normal_forward(mu, logvar)
            return kl, (None, cache)
        log_q, q_cache = reparam_log_q_forward(eps, logvar)                              # (N,)
        log_p, p_cache = self._log_prior_forward(z)                                      # (N,)
        return log_q - log_p, (q_cache, p_cache)

    def _kl_backward(self, dkl, cache, grads):
        """Returns (dmu, dlogvar, dz), None for a path the KL does not take: the closed form reads (mu, logvar)
        only; the sampled estimate reads logvar directly (log q written in eps) and z through log p(z)."""
        q_cache, p_cache = cache
        if q_cache is None:
            dmu, dlogvar = kl_std_normal_backward(dkl, p_cache)                          # (N, Z) each
            return dmu, dlogvar, None
        dlogvar = reparam_log_q_backward(dkl, q_cache)                                   # (N, Z)
        dz = self._log_prior_backward(-dkl, p_cache, grads)                              # (N, Z)
        return None, dlogvar, dz

    def _forward(self, x, eps):
        (mu, logvar), enc_caches = self._encode(x)
        z, rep_cache = reparameterize_forward(mu, logvar, eps)          # (N, Z)
        kl, kl_cache = self._kl_forward(mu, logvar, z, eps)            # (N,) closed form, or sampled
        out, dec_caches = self._decode(z)                               # (N, D)
        nll, nll_cache = self._nll_forward(x, out)                      # (N,)
        return nll, kl, (enc_caches, rep_cache, kl_cache, dec_caches, nll_cache)

    def elbo_terms(self, x, eps):
        """Per-example reconstruction NLL -log p(x|z) and KL(q(z|x) || p(z)), both (N,), for noise eps: (N, Z);
        the KL in closed form for the normal prior, estimated at the sample (log q(z|x) - log p(z)) for the
        mixture.

        The ELBO of each example (single-sample estimate) is -(nll + kl).
        """
        self._check_x(x)
        self._check_eps(eps, x)
        nll, kl, _ = self._forward(x, eps)
        return nll, kl

    def reconstruction_nll(self, x, z):
        """-log p(x|z) per example, (N,), for x: (N, D) and codes z: (N, Z)."""
        self._check_x(x)
        self._check_z(z)
        if z.shape[0] != x.shape[0]:
            raise ValueError(f"z must have one row per example of x: {z.shape[0]} rows for {x.shape[0]}")
        out, _ = self._decode(z)
        nll, _ = self._nll_forward(x, out)
        return nll

    # ---- the loss and its gradient ---------------------------------------------------------------------

    def loss_and_grads(self, x, eps, beta=1.0):
        """The training loss for x: (N, D) and fixed noise eps, and its gradient by hand.

        - eps: (N, Z): the negative ELBO with the KL weighted by beta, loss = mean_n (nll_n + beta kl_n), kl_n in
          closed form for the normal prior, log q(z_n|x_n) - log p(z_n) at the sample for the mixture.
          The backward follows derivations/elbo.md#whole-model-backward line by line.
        - eps: (K, N, Z), K noises per example: the importance-weighted objective
          loss = -mean_n log (1/K) sum_i w_in,  log w_in = -(nll_in + beta (log q(z_in|x_n) - log p(z_in))),
          the negative of Burda et al.'s bound L_K at beta = 1 (derivations/objectives.md#importance-weighted-backward).

        Returns (loss, grads, stats): loss a 0-d array, grads a dict with the keys and shapes of ``params``,
        stats = {"nll": mean reconstruction NLL, "kl": mean KL} (0-d arrays, over every example and sample;
        nothing leaves the device).
        """
        self._check_x(x)
        if getattr(eps, "ndim", None) == 3:
            self._check_eps_k(eps, x)
        else:
            self._check_eps(eps, x)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0.0 <= beta < math.inf):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if eps.ndim == 3:
            return self._iw_loss_and_grads(x, eps, beta)
        xp = array_namespace(x)
        n = x.shape[0]

        # forward
        nll, kl, (enc_caches, rep_cache, kl_cache, dec_caches, nll_cache) = self._forward(x, eps)
        loss = xp.mean(nll + beta * kl)                                  # ()

        # backward: dL/dnll_n = 1/N, dL/dkl_n = beta/N
        grads = {}
        dnll = xp.ones_like(nll) * (1.0 / n)                             # (N,)
        dkl = xp.ones_like(kl) * (beta / n)                              # (N,)
        # 1. likelihood: d out = (d logits or d mean, d per-element log-variance or None); writes dec.logvar's grad
        dout = self._nll_backward(dnll, nll_cache, grads)                # ((N, D) or (N, D, L), None or (N, D))
        # 2. decoder output head(s) and hidden layers, down to dz
        dz = self._decode_backward(dout, dec_caches, grads)              # (N, Z)
        # 3. the KL: closed form in (mu, logvar); sampled, it also reaches z (and writes the prior's grads)
        dmu_kl, dlogvar_kl, dz_kl = self._kl_backward(dkl, kl_cache, grads)
        # 4. the sampler z = mu + sigma * eps: mu and logvar feed it and the KL, so their gradients add
        dmu, dlogvar = reparameterize_backward(_add(dz, dz_kl), rep_cache)   # (N, Z) each
        dmu, dlogvar = _add(dmu, dmu_kl), _add(dlogvar, dlogvar_kl)
        # 5. encoder heads and hidden layers
        self._encode_backward(dmu, dlogvar, enc_caches, grads)

        stats = {"nll": xp.mean(nll), "kl": xp.mean(kl)}
        return loss, grads, stats

    def _iw_loss_and_grads(self, x, eps, beta):
        """``loss_and_grads`` for eps: (K, N, Z). The encoder runs once on the N examples; the K samples of all
        examples go through the sampler, the KL and the decoder as K*N rows (sample-major: row i*N + n is
        sample i of example n). derivations/objectives.md#importance-weighted-backward"""
        xp = array_namespace(x)
        k, n, z_dim = eps.shape

        def rows(a):                                                     # (N, F) -> (K*N, F), sample-major
            return xp.reshape(xp.broadcast_to(a[None, ...], (k,) + tuple(a.shape)), (k * n, a.shape[1]))

        # forward
        (mu, logvar), enc_caches = self._encode(x)                       # (N, Z)
        mu_r, logvar_r, eps_r = rows(mu), rows(logvar), xp.reshape(eps, (k * n, z_dim))   # (K*N, Z)
        z, rep_cache = reparameterize_forward(mu_r, logvar_r, eps_r)     # (K*N, Z)
        kl, kl_cache = self._kl_forward(mu_r, logvar_r, z, eps_r, sampled=True)   # (K*N,) log q - log p
        out, dec_caches = self._decode(z)
        nll, nll_cache = self._nll_forward(rows(x), out)                 # (K*N,)
        log_w = -xp.reshape(nll + beta * kl, (k, n))                     # (K, N)
        bound, iw_cache = iw_bound_forward(log_w)                        # (N,)  L_K per example
        loss = -xp.mean(bound)                                           # ()

        # backward: dL/dbound_n = -1/N; each sample gets its normalised weight w~_in
        grads = {}
        dlog_w = iw_bound_backward(xp.ones_like(bound) * (-1.0 / n), iw_cache)   # (K, N)
        dnll = -xp.reshape(dlog_w, (k * n,))                             # (K*N,)  = w~_in / N
        dkl = dnll * beta
        dz = self._decode_backward(self._nll_backward(dnll, nll_cache, grads), dec_caches, grads)   # (K*N, Z)
        dmu_kl, dlogvar_kl, dz_kl = self._kl_backward(dkl, kl_cache, grads)
        dmu_r, dlogvar_r = reparameterize_backward(_add(dz, dz_kl), rep_cache)
        dmu_r, dlogvar_r = _add(dmu_r, dmu_kl), _add(dlogvar_r, dlogvar_kl)
        # mu and logvar were copied to K rows each: their gradients sum over the K samples
        dmu = xp.sum(xp.reshape(dmu_r, (k, n, z_dim)), axis=0)           # (N, Z)
        dlogvar = xp.sum(xp.reshape(dlogvar_r, (k, n, z_dim)), axis=0)   # (N, Z)
        self._encode_backward(dmu, dlogvar, enc_caches, grads)

        stats = {"nll": xp.mean(nll), "kl": xp.mean(kl)}
        return loss, grads, stats

    def _encode_backward(self, dmu, dlogvar, enc_caches, grads):
        """Backward of ``_encode`` from dmu, dlogvar: (N, Z); writes the encoder's grads. h feeds both heads, so
        their gradients into h add; the gradient with respect to x itself is not needed."""
        enc_mlp_caches, mu_cache, lv_cache = enc_caches
        deep = len(self.hidden) > 0                                      # else the heads' input is x itself
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = linear_backward(dmu, mu_cache, need_dx=deep)
        dh_lv, grads["enc.logvar.W"], grads["enc.logvar.b"] = linear_backward(dlogvar, lv_cache, need_dx=deep)
        if deep:
            dh_mu += dh_lv                                               # (N, H); both fresh, so in place
            self._mlp_backward(dh_mu, enc_mlp_caches, "enc", grads, need_dx=False)

    # ---- input checks (shapes and dtypes only: no device-to-host transfer) ----------------------------------

    def _check_array(self, a, name, n_cols, col_name):
        try:
            xp = array_namespace(a)
        except TypeError:
            raise ValueError(f"{name} must be an array, got {type(a).__name__}") from None
        if xp is not self.device.xp:
            raise ValueError(f"{name} is a {xp.__name__} array but the model lives on {self.device.name} "
                             f"({self.device.xp.__name__}); move it with Device.asarray")
        if a.ndim != 2 or a.shape[1] != n_cols:
            raise ValueError(f"{name} must have shape (N, {col_name}={n_cols}), got {tuple(a.shape)}")
        if a.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (N = 0)")
        if a.dtype != self.dtype:
            raise ValueError(f"{name} must have dtype {self.dtype_name} like the model, got {a.dtype}")

    def _check_x(self, x):
        self._check_array(x, "x", self.x_dim, "x_dim")

    def _check_z(self, z):
        self._check_array(z, "z", self.z_dim, "z_dim")

    def _check_eps_k(self, eps, x):
        """eps: (K, N, Z), K >= 1 noises for each of the N examples of x."""
        if eps.shape[0] == 0:
            raise ValueError("eps of shape (K, N, Z) needs K >= 1 samples, got K = 0")
        self._check_eps(eps[0, ...], x)

    def _check_eps(self, eps, x):
        self._check_array(eps, "eps", self.z_dim, "z_dim")
        if eps.shape[0] != x.shape[0]:
            raise ValueError(f"eps must have one row per example of x: {eps.shape[0]} rows for {x.shape[0]}")


def _add(a, b):
    """a + b, where None stands for a path that contributes no gradient."""
    return a if b is None else b if a is None else a + b
