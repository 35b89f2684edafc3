"""The default model's whole loss and gradient on one screen: the short path into minivae.

One hidden tanh layer on each side, q(z|x) = N(mu, diag sigma^2), the N(0, I) prior with its closed-form KL, a
Bernoulli likelihood on logits, the ELBO with one sample per example (beta = 1): what ``minivae train`` trains.
Every formula is written out in NumPy, in the order of derivations/elbo.md#whole-model-backward (its Steps 0-6
are the comments below), so nothing is hidden in a part or an op. ``VAE.loss_and_grads`` computes the same loss
and gradients for every option, composed of parts; tests/test_minimal.py checks that the two agree to rounding
on the default model, and its gradient check then covers this function too.

Host NumPy only, for reading; the package's ops are the ones to run.
"""
import numpy as np

from .reparam import LOGVAR_MAX


def loss_and_grads(p, x, eps):
    """The negative ELBO of x: (N, D) with noise eps: (N, Z), and its gradient with respect to every parameter
    of ``p``, the default VAE's ``params`` (enc.0, enc.mu, enc.logvar, dec.0, dec.out; NumPy arrays). Returns
    (loss, grads).  derivations/elbo.md#whole-model-backward"""
    n, g = x.shape[0], {}
    # forward                                                                     derivations/elbo.md
    h = np.tanh(x @ p["enc.0.W"] + p["enc.0.b"])                  # (N, H)  encoder hidden layer  activations.md
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]                         # (N, Z)  q's mean
    r = h @ p["enc.logvar.W"] + p["enc.logvar.b"]                  # (N, Z)  q's raw log-variance
    logvar = np.minimum(r, LOGVAR_MAX)                             # the clamp          reparameterization.md
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * eps                                           # (N, Z)  z ~ q(z|x), reparameterised
    kl = 0.5 * np.sum(sigma**2 + mu**2 - 1.0 - logvar, axis=1)     # (N,)    KL(q || N(0, I))      kl.md
    hd = np.tanh(z @ p["dec.0.W"] + p["dec.0.b"])                  # (N, H)  decoder hidden layer
    a = hd @ p["dec.out.W"] + p["dec.out.b"]                       # (N, D)  logits of p(x|z)
    nll = np.sum(np.logaddexp(0.0, a) - x * a, axis=1)             # (N,)    softplus(a) - x a  likelihoods.md
    loss = np.mean(nll + kl)                                       # ()      -ELBO, averaged over the batch

    # backward, Steps 0-6
    dnll = dkl = np.full(n, 1.0 / n)                               # Step 0: d loss / d nll_n = d / d kl_n = 1/N
    da = dnll[:, None] * (0.5 * (1.0 + np.tanh(0.5 * a)) - x)     # Step 1: (sigmoid(a) - x) dnll   (N, D)
    g["dec.out.W"], g["dec.out.b"] = hd.T @ da, np.sum(da, axis=0)  # Step 2: the output head     linear.md
    dhd = da @ p["dec.out.W"].T                                    #         (N, H)
    dpre = dhd * (1.0 - hd**2)                                     # Step 3: tanh' = 1 - tanh^2, from the output
    g["dec.0.W"], g["dec.0.b"] = z.T @ dpre, np.sum(dpre, axis=0)
    dz = dpre @ p["dec.0.W"].T                                     #         (N, Z)
    dmu = dz + dkl[:, None] * mu                                   # Step 4: mu feeds z and the KL: they add
    dlogvar = 0.5 * dz * eps * sigma + dkl[:, None] * 0.5 * (sigma**2 - 1.0)   # so does logvar
    dr = np.where(r > LOGVAR_MAX, 0.0, dlogvar)                    #         the clamp: flat beyond LOGVAR_MAX
    g["enc.mu.W"], g["enc.mu.b"] = h.T @ dmu, np.sum(dmu, axis=0)  # Step 5: the two heads of q
    g["enc.logvar.W"], g["enc.logvar.b"] = h.T @ dr, np.sum(dr, axis=0)
    dh = dmu @ p["enc.mu.W"].T + dr @ p["enc.logvar.W"].T          #         h feeds both heads: they add
    dpre = dh * (1.0 - h**2)                                       # Step 6: the encoder's hidden layer
    g["enc.0.W"], g["enc.0.b"] = x.T @ dpre, np.sum(dpre, axis=0)  #         (dx is not needed)
    return loss, g
