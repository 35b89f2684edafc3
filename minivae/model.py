"""The variational autoencoder (Kingma & Welling 2013), composed of parts (minivae/parts/): an MLP encoder
whose features give the approximate posterior q(z|x) (N(mu, diag sigma^2), or that Gaussian pushed through K
planar flow steps: ``posterior="flow"``), a prior p(z) (N(0, I), or a learned mixture: ``prior="mog"``), and an
MLP decoder whose features give the likelihood p(x|z) (Bernoulli, Gaussian or categorical). With K noises eps
per example, z = mu + sigma * eps (then the flow, if any), training minimises

    ELBO(beta):  mean_{i,n} [ -log p(x_n | z_in) + beta * KL(q(z|x_n) || p(z)) ]       (K = 1: Kingma & Welling)
    IWBound:     -mean_n log (1/K) sum_i w_in,  log w_in = log p(x_n, z_in) - log q(z_in|x_n)   (Burda et al.)

with the KL in closed form where the prior and the posterior have one and the objective allows it, else at the
sample, log q(z|x) - log p(z).
``loss_and_grads`` computes either and its gradient by hand, in the order the chain rule runs: one chain for
every objective. Derivation: derivations/elbo.md#whole-model-backward (its step numbers are the comments
below), derivations/objectives.md, derivations/prior.md. Tests: tests/test_model.py.

Parameters live in one dict ``model.params`` (name -> array), each part owning its names:

    enc.{i}.W, enc.{i}.b         hidden layer i of the encoder, W: (D_in, D_out), b: (D_out,)   (mlp.py)
    enc.mu.*, enc.logvar.*       q(z|x)'s heads h -> mu, h -> logvar, (H, Z), (Z,)       (parts/diagonal_gaussian.py)
    enc.flow.{k}.u/w/b.*         the flow's heads h -> u_k, w_k (H, Z), b_k (H, 1), "flow" only (parts/planar_flow.py)
    dec.{i}.W, dec.{i}.b         hidden layer i of the decoder                                   (mlp.py)
    dec.out.*, dec.logvar(.*)    the likelihood's head(s) and variance          (parts/bernoulli.py, gaussian.py,
                                                                                 categorical.py)
    dec.made.*                   the autoregressive decoder's layers, "made" only      (parts/made_bernoulli.py)
    prior.logits, .mu, .logvar   the mixture prior's parameters, "mog" only                 (parts/mixture.py)
    prior.u                      the VampPrior's pseudo-inputs (C, D), "vamp" only                 (parts/vamp.py)

Initialisation (from ``seed``'s "init" stream, minivae/rng.py, on the host, then moved to the device): every
W ~ N(0, gain^2 / D_in) with gain sqrt(2) for relu and 1 otherwise (LeCun / He); every bias 0; dec.logvar = 0;
the mixture: logits 0, means ~ N(0, I), log-variances 0. Drawn in the order of the table above.
"""
import math

import numpy as np

from . import kernels
from .backend import array_namespace, dtype_name, get_device
from .checks import check_batch, check_finite, check_positive_int, check_unit_interval, is_host
from .likelihoods import SIGMA_MIN
from .mlp import MLP
from .objectives import ELBO
from .parts import build_likelihood, build_posterior, build_prior
from .rng import RNG


def _rows(a, k):
    """a: (N, F) -> (K*N, F), K copies stacked sample-major: row i*N + n is copy i of row n (no copy for K = 1)."""
    xp = array_namespace(a)
    if k == 1:
        return a
    return xp.reshape(xp.broadcast_to(a[None, ...], (k,) + tuple(a.shape)), (k * a.shape[0], a.shape[1]))


def _sum_rows(a, k):
    """The backward of ``_rows``: (K*N, F) -> (N, F), the K copies' gradients summed."""
    xp = array_namespace(a)
    if k == 1:
        return a
    return xp.sum(xp.reshape(a, (k, a.shape[0] // k, a.shape[1])), axis=0)


def _check_rng(rng):
    if not isinstance(rng, RNG):
        raise TypeError(f"rng must be a minivae RNG (minivae.rng.RNG), got {type(rng).__name__}")
    return rng


class VAE:
    """A VAE with MLP encoder and decoder; ``hidden=()`` makes both linear."""

    def __init__(self, x_dim, z_dim, hidden=(400,), activation="tanh", likelihood="bernoulli",
                 dtype="float32", device="cpu", seed=0, *, gaussian_variance="shared", sigma=1.0,
                 sigma_min=SIGMA_MIN, levels=256, prior="normal", prior_components=10, posterior="diagonal",
                 flow_steps=4, pseudo_inputs=50, decoder="mlp", made_hidden=(400, 400)):
        self.x_dim, self.z_dim = check_positive_int(x_dim, "x_dim"), check_positive_int(z_dim, "z_dim")
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else hidden
        self.hidden = tuple(check_positive_int(h, "hidden") for h in hidden)
        self.device = get_device(device)
        self.dtype_name = dtype_name(dtype)
        self.dtype = self.device.dtype(self.dtype_name)
        self.encoder = MLP("enc", self.x_dim, self.hidden, activation)
        self.posterior = build_posterior(posterior, self.encoder.out_dim, self.z_dim,
                                         check_positive_int(flow_steps, "flow_steps"))
        self.decoder = MLP("dec", self.z_dim, self.hidden, activation)
        made_hidden = (made_hidden,) if isinstance(made_hidden, (int, np.integer)) else made_hidden
        made_hidden = tuple(check_positive_int(h, "made_hidden") for h in made_hidden)
        self.likelihood = build_likelihood(likelihood, self.x_dim, self.decoder.out_dim, self.device,
                                           self.dtype_name, gaussian_variance, sigma, sigma_min, levels,
                                           decoder, made_hidden, activation)
        self.prior = build_prior(prior, self.z_dim, check_positive_int(prior_components, "prior_components"),
                                 check_positive_int(pseudo_inputs, "pseudo_inputs"), self.x_dim, self.encoder,
                                 self.posterior)
        self._config = dict(activation=activation, likelihood=likelihood, gaussian_variance=gaussian_variance,
                            sigma=float(sigma), sigma_min=float(sigma_min), levels=int(levels), prior=prior,
                            prior_components=int(prior_components), posterior=posterior,
                            flow_steps=int(flow_steps), pseudo_inputs=int(pseudo_inputs), decoder=decoder,
                            made_hidden=list(made_hidden))
        rng, gain = RNG(seed, stream="init"), math.sqrt(2.0) if activation == "relu" else 1.0
        self.params = {}
        for part in (self.encoder, self.posterior, self.decoder, self.likelihood, self.prior):
            for name, value in part.init_params(rng, gain).items():
                self.params[name] = self.device.asarray(value, dtype=self.dtype_name)

    @property
    def config(self):
        """What rebuilds this architecture: ``VAE(**model.config)``."""
        return dict(x_dim=self.x_dim, z_dim=self.z_dim, hidden=list(self.hidden), dtype=self.dtype_name,
                    **self._config)

    # ---- the loss and its gradient: derivations/elbo.md#whole-model-backward -----------------------------

    def _forward(self, x, eps, closed_form_kl):
        """The forward lines of the note for x: (N, D) and eps: (K, N, Z): nll and kl, both (K, N), and the
        caches. The encoder runs once; the K samples of every example run as K*N rows, sample-major."""
        p, xp = self.params, array_namespace(x)
        k, n = eps.shape[0], x.shape[0]
        # forward, the note's lines in order (derivations/elbo.md#whole-model-backward)
        h, enc_cache = self.encoder.forward(p, x)                                   # (N, H)
        q, q_cache = self.posterior.forward(p, h)                                  # (mu, logvar[, flow]): (N, .)
        q_k = tuple(_rows(a, k) for a in q)                                         # (K*N, .) each
        eps_k = xp.reshape(eps, (k * n, self.z_dim))                                # (K*N, Z)
        z, log_q, rep_cache = self.posterior.rsample_forward(q_k, eps_k)           # z = mu + sigma * eps [, flow]
        kl_term = self.prior.kl_term(closed_form_kl and self.posterior.closed_form_kl)   # closed form, or at z
        kl, kl_cache = kl_term.forward(p, q_k, z, log_q)                            # (K*N,)
        h_dec, dec_cache = self.decoder.forward(p, z)                               # (K*N, H)
        nll, nll_cache = self.likelihood.forward(p, h_dec, _rows(x, k))             # (K*N,)
        caches = (enc_cache, q_cache, rep_cache, kl_term, kl_cache, dec_cache, nll_cache)
        return xp.reshape(nll, (k, n)), xp.reshape(kl, (k, n)), caches

    def loss_and_grads(self, x, eps, objective=None, check_input=True):
        """The training loss for x: (N, D) and fixed noise eps, and its gradient by hand.

        eps: (N, Z), one sample per example, or (K, N, Z), K samples per example. ``objective``: an
        ``objectives.ELBO(beta)`` (the default, beta = 1) or ``objectives.IWBound(beta)``; both run the same
        chain over the K*N rows and differ only in how they reduce the (K, N) terms (Step 0).

        Returns (loss, grads, stats): loss a 0-d array, grads a dict with the keys and shapes of ``params``,
        stats = {"nll": mean reconstruction NLL, "kl": mean KL} (0-d arrays, over every example and sample;
        nothing leaves the device). Types, shapes and dtypes are always checked; the values of host (NumPy) x
        and eps too unless ``check_input=False`` (minivae/checks.py: the training loop checked its data once).
        """
        objective = ELBO() if objective is None else objective
        if not all(hasattr(objective, a) for a in ("forward", "backward", "closed_form_kl")):
            raise ValueError(f"objective must be an objectives.ELBO or objectives.IWBound, got {objective!r}")
        eps = self._check_inputs(x, eps, check_input)                               # (K, N, Z)
        rows = kernels.lookup("loss_and_grads", x)    # the same chain on row blocks, one per core (kernels.py)
        return self._chain(x, eps, objective) if rows is None else rows(self._chain, x, eps, objective)

    def _chain(self, x, eps, objective):
        """loss_and_grads on checked inputs, eps: (K, N, Z): the forward, then the backward in the note's steps."""
        xp, k = array_namespace(x), eps.shape[0]
        nll, kl, caches = self._forward(x, eps, objective.closed_form_kl)          # (K, N) each
        enc_cache, q_cache, rep_cache, kl_term, kl_cache, dec_cache, nll_cache = caches
        loss, obj_cache = objective.forward(nll, kl)                                # ()

        # backward, in the note's steps (derivations/elbo.md#whole-model-backward)
        grads = {}
        dnll, dkl = objective.backward(obj_cache)                                   # Step 0: (K, N) each
        dnll, dkl = xp.reshape(dnll, (-1,)), xp.reshape(dkl, (-1,))                # (K*N,)
        dh_dec = self.likelihood.backward(dnll, nll_cache, grads)                  # Steps 1-2: (K*N, H)
        dz = self.decoder.backward(dh_dec, dec_cache, grads)                        # Step 3: (K*N, Z)
        dmu_kl, dlogvar_kl, dz_kl, dlogq = kl_term.backward(dkl, kl_cache, grads)  # Step 4: the KL's paths (a
        #   VampPrior writes the encoder's grads here, from its pseudo-inputs; Steps 5-6 add the data's)
        dq = self.posterior.rsample_backward(dz + dz_kl, dlogq, rep_cache)         # Step 4: z's two consumers add
        dq = (dq[0] + dmu_kl, dq[1] + dlogvar_kl) + dq[2:]                          # Step 4: mu and logvar feed
        dq = tuple(_sum_rows(d, k) for d in dq)                                     #   z and the KL: they add
        dh = self.posterior.backward(dq, q_cache, grads)                           # Step 5: (N, H)
        self.encoder.backward(dh, enc_cache, grads, need_dx=False)                 # Step 6

        return loss, grads, {"nll": xp.mean(nll), "kl": xp.mean(kl)}

    # ---- the model's terms, for evaluation and pictures ---------------------------------------------------

    def elbo_terms(self, x, eps, check_input=True):
        """Per-example reconstruction NLL -log p(x|z) and KL(q(z|x) || p(z)), both (N,), for noise eps: (N, Z);
        the KL in closed form for the normal prior and the diagonal posterior, else at the sample
        (log q(z|x) - log p(z)). The ELBO of each example (single-sample estimate) is -(nll + kl).
        derivations/elbo.md#the-loss"""
        eps = self._check_inputs(x, eps, check_input)
        nll, kl = self._terms(x, eps, closed_form_kl=True)
        return nll[0, ...], kl[0, ...]

    def log_weights(self, x, eps, check_input=True):
        """log w_in = log p(x_n, z_in) - log q(z_in|x_n) = -(nll_in + log q(z_in|x_n) - log p(z_in)), (K, N), for
        x: (N, D) and eps: (K, N, Z): the terms of the importance-weighted bound, the same forward that training
        runs.  derivations/evaluation.md#importance-weighted-bound"""
        eps = self._check_inputs(x, eps, check_input)
        nll, kl = self._terms(x, eps, closed_form_kl=False)
        return -(nll + kl)

    def _terms(self, x, eps, closed_form_kl):
        """nll and kl, (K, N) each, of the forward alone (no caches kept), on row blocks where a kernel does that
        (minivae/kernels.py)."""
        forward = lambda xb, eb: self._forward(xb, eb, closed_form_kl)[:2]      # noqa: E731
        rows = kernels.lookup("terms", x)
        return forward(x, eps) if rows is None else rows(forward, x, eps)

    def encode(self, x):
        """q(z|x) = N(mu, diag exp(logvar)), logvar clamped as training reads it.  x: (N, D) -> mu, logvar (N, Z).
        With a flow posterior, the Gaussian q_0(z_0|x) the flow starts from."""
        self.check_x(x)
        h, _ = self.encoder.forward(self.params, x)
        q, _ = self.posterior.forward(self.params, h)
        return q[0], q[1]

    def decode(self, z):
        """The parameters of p(x|z) for codes z: (N, Z): bernoulli {"logits": (N, D)}; categorical
        {"logits": (N, D, L)}; gaussian {"mean": (N, D), "logvar": after the floor, (), (D,) or (N, D)}; the
        MADE decoder, whose logits depend on x too, {"probs": (N, D)} from its sequential mean pass."""
        return self.likelihood.decode(self.params, self._features(z))

    def decoder_mean(self, z):
        """E[x|z], (N, D) on the device, for codes z: (N, Z)."""
        return self.likelihood.mean(self.params, self._features(z))

    def sample_x(self, z, rng):
        """One draw x ~ p(x|z) per code, made on the host with ``rng`` (a minivae RNG): host (N, D) float64."""
        return self.likelihood.sample(self.params, self._features(z), _check_rng(rng))

    def reconstruction_nll(self, x, z):
        """-log p(x|z) per example, (N,), for x: (N, D) and codes z: (N, Z)."""
        self.check_x(x)
        h = self._features(z)
        if z.shape[0] != x.shape[0]:
            raise ValueError(f"z must have one row per example of x: {z.shape[0]} rows for {x.shape[0]}")
        nll, _ = self.likelihood.forward(self.params, h, x)
        return nll

    def log_likelihood_grid(self, x, z, check_input=True):
        """log p(x_n | z_g) for every example of x: (N, D) and code of z: (G, Z), (N, G), each code decoded
        once.  derivations/evaluation.md#exact-log-likelihood"""
        self.check_x(x, check_input)
        return self.likelihood.log_prob_grid(self.params, x, self._features(z, check_input))

    def log_prior(self, z):
        """log p(z) per code, (N,), for z: (N, Z).  derivations/prior.md"""
        self._check_z(z)
        log_p, _ = self.prior.log_prob_forward(self.params, z)
        return log_p

    def sample_prior(self, n, rng):
        """n codes z ~ p(z), (n, Z) on the model's device, with the noise drawn from ``rng`` (a minivae RNG).
        derivations/prior.md#sampling-the-mixture"""
        return self.prior.sample(self.params, check_positive_int(n, "n"), _check_rng(rng), self.device,
                                 self.dtype_name)

    def _features(self, z, check_input=True):
        """The decoder's last hidden layer for codes z: (N, Z) -> (N, H)."""
        self._check_z(z, check_input)
        h, _ = self.decoder.forward(self.params, z)
        return h

    # ---- input checks: types, shapes and dtypes always; the values of host arrays (minivae/checks.py) --------

    def check_x(self, x, values=True):
        """x must be a non-empty (N, x_dim) array of the model's device and dtype; a host one also finite and
        in the likelihood's support (``values``). A TypeError or ValueError naming x otherwise."""
        check_batch(x, "x", self.device, self.dtype_name, self.x_dim, "x_dim")
        if values and is_host(x):
            check_finite(x, "x")
            if self.likelihood.unit_interval:
                check_unit_interval(x, "x", f" for the {self._config['likelihood']} likelihood")

    def _check_z(self, z, values=True):
        check_batch(z, "z", self.device, self.dtype_name, self.z_dim, "z_dim")
        if values and is_host(z):
            check_finite(z, "z")

    def _check_inputs(self, x, eps, values=True):
        """Checks x: (N, D) and eps: (N, Z) or (K, N, Z), K >= 1; returns eps as (K, N, Z)."""
        self.check_x(x, values)
        if getattr(eps, "ndim", None) == 3:
            if eps.shape[0] == 0:
                raise ValueError("eps of shape (K, N, Z) needs K >= 1 samples, got K = 0")
            check_batch(eps[0, ...], "eps", self.device, self.dtype_name, self.z_dim, "z_dim")
        else:
            check_batch(eps, "eps", self.device, self.dtype_name, self.z_dim, "z_dim")
            eps = eps[None, ...]
        if eps.shape[1] != x.shape[0]:
            raise ValueError(f"eps must have one row per example of x: {eps.shape[1]} rows for {x.shape[0]}")
        if values and is_host(eps):
            check_finite(eps, "eps")
        return eps
