"""Optimizers, hand-written, updating ``params`` in place: SGD (with optional momentum) and Adam
(Kingma & Ba 2015, Algorithm 1). Their state is inspectable (``state_dict``) and goes into checkpoints.
Derivation: derivations/adam.md. Tests: tests/test_optim.py.
"""
import math

from . import kernels
from .backend import array_namespace


def _check_lr(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0.0 < lr < math.inf):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


class SGD:
    """v <- momentum v + g;  theta <- theta - lr v   (plain SGD when momentum = 0)."""

    def __init__(self, params, lr=1e-2, momentum=0.0):
        self.params, self.lr = params, _check_lr(lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.t = 0
        self.v = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        self.t += 1
        for k, p in self.params.items():
            v = self.v[k]
            v *= self.momentum
            v += grads[k]
            p -= self.lr * v

    def state_dict(self):
        return {"name": "sgd", "t": self.t, "lr": self.lr, "momentum": self.momentum, "v": self.v}

    def load_state_dict(self, state):
        _load_slots(self, state, "sgd", ("v",))


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1), per parameter theta with gradient g at step t:

        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g^2
        theta <- theta - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    derivations/adam.md#update
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr = params, _check_lr(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)
        self.t = 0
        self.m = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}
        self._work = {}                                        # scratch arrays of the fast kernels (not state)

    def step(self, grads):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1.0 - b1 ** self.t)            # lr / (1 - beta1^t): host floats, no transfer
        sqrt_bc2 = math.sqrt(1.0 - b2 ** self.t)               # sqrt(1 - beta2^t)
        for k, p in self.params.items():
            args = (p, grads[k], self.m[k], self.v[k], b1, b2, step_size, sqrt_bc2, self.eps)
            fast = kernels.lookup("adam_update", p)        # the same update in fewer passes (minivae/kernels.py)
            if fast is not None:
                fast(*args, self._scratch(k))
            else:
                adam_update(*args)

    def _scratch(self, k):
        """A work array like parameter ``k``, made once: where a kernel writes its intermediates."""
        if k not in self._work:
            self._work[k] = array_namespace(self.params[k]).empty_like(self.params[k])
        return self._work[k]

    def state_dict(self):
        return {"name": "adam", "t": self.t, "lr": self.lr, "betas": [self.beta1, self.beta2], "eps": self.eps,
                "m": self.m, "v": self.v}

    def load_state_dict(self, state):
        _load_slots(self, state, "adam", ("m", "v"))


def adam_update(p, g, m, v, b1, b2, step_size, sqrt_bc2, eps, scratch=None):
    """One Adam update of parameter ``p`` with gradient ``g``, in place on ``p`` and its moments ``m``, ``v``:

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   p <- p - step_size m / (sqrt(v) / sqrt_bc2 + eps)

    with step_size = lr / (1 - b1^t) and sqrt_bc2 = sqrt(1 - b2^t). The plain form, for every array module;
    ``minivae.kernels`` has faster equivalents (``scratch``, an array like ``p``, is theirs).
    derivations/adam.md#update
    """
    xp = array_namespace(p)
    m *= b1
    m += (1.0 - b1) * g                                    # m = beta1 m + (1 - beta1) g
    v *= b2
    v += (1.0 - b2) * (g * g)                              # v = beta2 v + (1 - beta2) g^2
    p -= step_size * m / (xp.sqrt(v) / sqrt_bc2 + eps)     # theta -= lr m_hat / (sqrt(v_hat) + eps)


def _load_slots(opt, state, name, slots):
    """Restore an optimizer's step count and per-parameter slots (arrays already on the right device)."""
    if state.get("name") != name:
        raise ValueError(f"optimizer state is for {state.get('name')!r}, not {name!r}")
    for slot in slots:
        saved = state[slot]
        if set(saved) != set(opt.params):
            raise ValueError(f"optimizer state {slot!r} has parameters {sorted(saved)}, "
                             f"expected {sorted(opt.params)}")
        for k, a in saved.items():
            if tuple(a.shape) != tuple(opt.params[k].shape):
                raise ValueError(f"optimizer state {slot}[{k!r}] has shape {tuple(a.shape)}, "
                                 f"expected {tuple(opt.params[k].shape)}")
        setattr(opt, slot, dict(saved))
    opt.t = int(state["t"])


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
