"""What training minimises, given the per-sample terms of K samples for each of N examples,
nll_in = -log p(x_n | z_in) and kl_in (the KL in closed form, or log q(z_in|x_n) - log p(z_in) at the sample):

- ``ELBO(beta)``:   loss = 1/(K N) sum_{i,n} (nll_in + beta kl_in), the negative ELBO with its KL weighted by
  beta (Higgins et al. 2017), averaged over K samples (K = 1: Kingma & Welling's single-sample estimator);
  with ``free_bits`` lambda > 0, loss = mean(nll) + beta max(lambda, mean(kl)): the batch's mean KL is charged
  only above lambda nats (Kingma et al. 2016's free bits, with the whole code as one group);
- ``IWBound(beta)``: loss = -1/N sum_n log (1/K) sum_i w_in,  log w_in = -(nll_in + beta kl_in), the negative of
  Burda et al.'s importance-weighted bound L_K at beta = 1 (``iwae.iw_bound_forward``); its KL must be the sampled
  one, so ``closed_form_kl`` is False.

Each is a forward/backward pair over the (K, N) terms: the model (``VAE.loss_and_grads``) runs one chain for
every objective and hands each row its gradient from ``backward``. The weight beta may change every step (a
warm-up: ``schedule.kl_weight``), so an objective is a small value made per step.
Derivation: derivations/elbo.md#the-loss, derivations/objectives.md. Tests: tests/test_model.py.
"""

from .backend import array_namespace, astype
from .checks import check_arrays, check_number, check_shape
from .iwae import iw_bound_backward, iw_bound_forward


def _check_beta(beta):
    return check_number(beta, "beta", 0.0)


def _check_terms(where, nll, kl):
    """An objective's (K, N) terms: two arrays of one shape and dtype."""
    xp = check_arrays(where, nll=nll, kl=kl)
    check_shape(where, "nll", nll, (None, None), "(K, N)")
    check_shape(where, "kl", kl, tuple(nll.shape), "nll's shape")
    return xp


class ELBO:
    """The negative ELBO, mean over samples and examples, KL weighted by beta; with ``free_bits`` lambda > 0 the
    mean KL charged only above lambda.  derivations/elbo.md#the-loss, derivations/objectives.md#free-bits"""

    closed_form_kl = True          # use the prior's closed-form KL where it has one

    def __init__(self, beta=1.0, free_bits=0.0):
        self.beta = _check_beta(beta)
        self.free_bits = check_number(free_bits, "free_bits", 0.0)

    @property
    def per_example(self):
        """True when the loss is a mean of per-example terms (no free bits: their floor is on the batch's mean)."""
        return not self.free_bits

    def __repr__(self):
        return f"ELBO(beta={self.beta:g}" + (f", free_bits={self.free_bits:g})" if self.free_bits else ")")

    def forward(self, nll, kl):
        """nll, kl: (K, N) -> loss (); cache = (nll for its shape, the free-bits gate [mean kl > lambda] or None)."""
        xp = _check_terms("ELBO.forward", nll, kl)
        if not self.free_bits:
            return xp.mean(nll + self.beta * kl), (nll, None)
        mean_kl = xp.mean(kl)
        gate = astype(mean_kl > self.free_bits, kl.dtype)            # () on the device: no transfer
        return xp.mean(nll) + self.beta * xp.maximum(mean_kl, self.free_bits), (nll, gate)

    def backward(self, cache):
        """dnll = 1 / (K N), dkl = beta / (K N), both (K, N), dkl times the gate with free bits (0 below the floor).
        derivations/elbo.md#whole-model-backward (Step 0), derivations/objectives.md#free-bits"""
        nll, gate = cache
        xp = array_namespace(nll)
        dnll = xp.ones_like(nll) * (1.0 / (nll.shape[0] * nll.shape[1]))
        return dnll, dnll * self.beta if gate is None else dnll * (self.beta * gate)


class IWBound:
    """-L_K, the negative importance-weighted bound (K = eps.shape[0] samples per example; K = 1 is the ELBO
    with the KL sampled).  derivations/objectives.md#importance-weighted-backward"""

    closed_form_kl = False         # log w needs log q - log p at each sample
    per_example = True             # -mean_n L_n: a mean of per-example terms

    def __init__(self, beta=1.0):
        self.beta = _check_beta(beta)

    def __repr__(self):
        return f"IWBound(beta={self.beta:g})"

    def forward(self, nll, kl):
        """nll, kl: (K, N) -> loss = -mean_n L_n (); cache = the normalised weights (K, N)."""
        xp = _check_terms("IWBound.forward", nll, kl)
        log_w = -(nll + self.beta * kl)                              # (K, N)
        bound, iw_cache = iw_bound_forward(log_w)                    # (N,)  L_K per example
        return -xp.mean(bound), iw_cache

    def backward(self, cache):
        """dnll_in = w~_in / N, dkl_in = beta w~_in / N: each sample's share is its normalised weight."""
        w_tilde = cache
        xp = array_namespace(w_tilde)
        n = w_tilde.shape[1]
        dnll = -iw_bound_backward(xp.ones_like(w_tilde[0, ...]) * (-1.0 / n), w_tilde)   # (K, N)
        return dnll, dnll * self.beta
