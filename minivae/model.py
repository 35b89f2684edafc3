"""The variational autoencoder (Kingma & Welling 2013): an MLP encoder q(z|x) = N(mu, diag sigma^2), the prior
p(z) = N(0, I), and an MLP decoder p(x|z). The loss is the negative ELBO per example,

    loss = mean_n [ -log p(x_n | z_n) + beta * KL(q(z|x_n) || p(z)) ],   z_n = mu_n + sigma_n * eps_n,

and ``loss_and_grads`` computes it and its gradient by hand, in the order the chain rule runs.
Derivation: derivations/elbo.md (the objective and the whole-model backward). Tests: tests/test_model.py.

Parameters live in one dict ``model.params`` (name -> array):

    enc.{i}.W, enc.{i}.b         hidden layer i of the encoder, W: (D_in, D_out), b: (D_out,)
    enc.mu.W, enc.mu.b           h -> mu          (H, Z), (Z,)
    enc.logvar.W, enc.logvar.b   h -> logvar      (H, Z), (Z,)
    dec.{i}.W, dec.{i}.b         hidden layer i of the decoder
    dec.out.W, dec.out.b         h -> logits (bernoulli) or mean (gaussian), (H, D), (D,)
    dec.logvar                   gaussian only: one learned log-variance shared by all dimensions, shape ()

Initialisation (from ``seed``, on the host, then moved to the device): W ~ N(0, gain^2 / D_in) with gain
sqrt(2) for relu and 1 otherwise (LeCun / He); every bias 0; dec.logvar = 0.
"""
import math

import numpy as np

from .backend import array_namespace, get_device
from .kl import kl_std_normal_backward, kl_std_normal_forward
from .layers import get_activation, linear_backward, linear_forward
from .likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, gaussian_nll_backward,
                          gaussian_nll_forward)
from .reparam import reparameterize_backward, reparameterize_forward
from .rng import RNG

LIKELIHOODS = ("bernoulli", "gaussian")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class VAE:
    """A VAE with MLP encoder and decoder; ``hidden=()`` makes both linear."""

    def __init__(self, x_dim, z_dim, hidden=(400,), activation="tanh", likelihood="bernoulli",
                 dtype="float32", device="cpu", seed=0):
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
        self.device = get_device(device)
        self.dtype_name = dtype
        self.dtype = self.device.dtype(dtype)
        self.params = self._init_params(RNG(seed))

    @property
    def config(self):
        """What rebuilds this architecture: ``VAE(**model.config)``."""
        return dict(x_dim=self.x_dim, z_dim=self.z_dim, hidden=list(self.hidden), activation=self.activation,
                    likelihood=self.likelihood, dtype=self.dtype_name)

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
                shapes["dec.out"] = (d_in, self.x_dim)
        params = {}
        for name, (d_in, d_out) in shapes.items():
            params[name + ".W"] = self.device.asarray(rng.host_normal((d_in, d_out), gain / math.sqrt(d_in)),
                                                      dtype=self.dtype_name)
            params[name + ".b"] = self.device.asarray(np.zeros(d_out), dtype=self.dtype_name)
        if self.likelihood == "gaussian":
            params["dec.logvar"] = self.device.asarray(0.0, dtype=self.dtype_name)
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
        """The parameters of p(x|z): {"logits": (N, D)} (bernoulli) or {"mean": (N, D), "logvar": ()} (gaussian)."""
        self._check_z(z)
        out, _ = self._decode(z)
        if self.likelihood == "bernoulli":
            return {"logits": out}
        return {"mean": out, "logvar": self.params["dec.logvar"]}

    def _decode(self, z):
        h, mlp_caches = self._mlp_forward(z, "dec")                                          # (N, H)
        out, out_cache = linear_forward(h, self.params["dec.out.W"], self.params["dec.out.b"])  # (N, D)
        return out, (mlp_caches, out_cache)

    def _nll_forward(self, x, out):
        if self.likelihood == "bernoulli":
            return bernoulli_nll_forward(x, out)
        return gaussian_nll_forward(x, out, self.params["dec.logvar"])

    def _nll_backward(self, dnll, nll_cache, grads):
        """Backward of the likelihood: returns d(decoder output); writes the likelihood's own parameters'
        gradients (the Gaussian's shared log-variance) into ``grads``."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll_backward(dnll, nll_cache)               # (N, D)
        dout, grads["dec.logvar"] = gaussian_nll_backward(dnll, nll_cache)
        return dout

    def _forward(self, x, eps):
        (mu, logvar), enc_caches = self._encode(x)
        z, rep_cache = reparameterize_forward(mu, logvar, eps)          # (N, Z)
        kl, kl_cache = kl_std_normal_forward(mu, logvar)                # (N,)
        out, dec_caches = self._decode(z)                               # (N, D)
        nll, nll_cache = self._nll_forward(x, out)                      # (N,)
        return nll, kl, (enc_caches, rep_cache, kl_cache, dec_caches, nll_cache)

    def elbo_terms(self, x, eps):
        """Per-example reconstruction NLL -log p(x|z) and KL(q(z|x) || p(z)), both (N,), for noise eps: (N, Z).

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
        """loss = mean_n (nll_n + beta kl_n) for x: (N, D) and fixed noise eps: (N, Z); its gradient by hand.

        Returns (loss, grads, stats): loss a 0-d array, grads a dict with the keys and shapes of ``params``,
        stats = {"nll": mean reconstruction NLL, "kl": mean KL} (0-d arrays; nothing leaves the device).
        The backward follows derivations/elbo.md#whole-model-backward line by line.
        """
        self._check_x(x)
        self._check_eps(eps, x)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0.0 <= beta < math.inf):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        xp = array_namespace(x)
        n = x.shape[0]

        # forward
        nll, kl, (enc_caches, rep_cache, kl_cache, dec_caches, nll_cache) = self._forward(x, eps)
        loss = xp.mean(nll + beta * kl)                                  # ()

        # backward: dL/dnll_n = 1/N, dL/dkl_n = beta/N
        grads = {}
        dnll = xp.ones_like(nll) * (1.0 / n)                             # (N,)
        dkl = xp.ones_like(kl) * (beta / n)                              # (N,)
        # 1. likelihood: d out (logits or mean), and the shared decoder log-variance
        dout = self._nll_backward(dnll, nll_cache, grads)                # (N, D)
        # 2. decoder output layer and hidden layers, down to dz
        dec_mlp_caches, out_cache = dec_caches
        dh, grads["dec.out.W"], grads["dec.out.b"] = linear_backward(dout, out_cache)
        dz = self._mlp_backward(dh, dec_mlp_caches, "dec", grads)       # (N, Z)
        # 3. the sampler z = mu + sigma * eps, and the KL: mu and logvar feed both, so their gradients add
        dmu_rec, dlogvar_rec = reparameterize_backward(dz, rep_cache)    # (N, Z) each
        dmu_kl, dlogvar_kl = kl_std_normal_backward(dkl, kl_cache)       # (N, Z) each
        dmu = dmu_rec + dmu_kl
        dlogvar = dlogvar_rec + dlogvar_kl
        # 4. encoder heads; h feeds both, so their gradients into h add
        enc_mlp_caches, mu_cache, lv_cache = enc_caches
        deep = len(self.hidden) > 0                                      # else the heads' input is x itself
        dh_mu, grads["enc.mu.W"], grads["enc.mu.b"] = linear_backward(dmu, mu_cache, need_dx=deep)
        dh_lv, grads["enc.logvar.W"], grads["enc.logvar.b"] = linear_backward(dlogvar, lv_cache, need_dx=deep)
        # 5. encoder hidden layers (the gradient with respect to x itself is not needed)
        if deep:
            self._mlp_backward(dh_mu + dh_lv, enc_mlp_caches, "enc", grads, need_dx=False)

        stats = {"nll": xp.mean(nll), "kl": xp.mean(kl)}
        return loss, grads, stats

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

    def _check_eps(self, eps, x):
        self._check_array(eps, "eps", self.z_dim, "z_dim")
        if eps.shape[0] != x.shape[0]:
            raise ValueError(f"eps must have one row per example of x: {eps.shape[0]} rows for {x.shape[0]}")
