"""Optimizers, hand-written, updating ``params`` in place: SGD (with optional momentum) and Adam
(Kingma & Ba 2015, Algorithm 1). Their state is inspectable (``state_dict``) and goes into checkpoints.
Derivation: derivations/adam.md. Tests: tests/test_optim.py.
"""
import math

from . import kernels
from .backend import array_namespace
from .checks import check_arrays, check_int, check_number


def _check_params(params, where):
    """``params`` must be a non-empty dict of name -> float array, one array module for all."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"{where}: params must be a non-empty dict of name -> array, got {type(params).__name__}")
    first = None
    for k, p in params.items():
        xp = check_arrays(where, **{f"params[{k!r}]": p})
        if first is not None and xp is not first:
            raise TypeError(f"{where}: params[{k!r}] is a {xp.__name__} array, the others {first.__name__} arrays")
        first = xp
    return params


def check_grads(grads, params, where):
    """Every gradient, before any parameter moves: ``grads`` must have exactly the keys of ``params``, each an
    array of its parameter's array module, shape and dtype (a scalar or a shape that would broadcast is refused).
    Reads no values: no device-to-host transfer."""
    if not isinstance(grads, dict):
        raise TypeError(f"{where}: grads must be a dict of name -> array, got {type(grads).__name__}")
    missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
    if missing or extra:
        raise ValueError(f"{where}: grads must have the keys of params; missing {missing}, unexpected {extra}")
    for k, p in params.items():
        g = grads[k]
        xp = check_arrays(where, **{f"grads[{k!r}]": g})
        if xp is not array_namespace(p):
            raise TypeError(f"{where}: grads[{k!r}] is a {xp.__name__} array, its parameter a "
                            f"{array_namespace(p).__name__} array")
        if tuple(g.shape) != tuple(p.shape) or g.dtype != p.dtype:
            raise ValueError(f"{where}: grads[{k!r}] must have its parameter's shape {tuple(p.shape)} and dtype "
                             f"{p.dtype}, got {tuple(g.shape)} {g.dtype}")


class SGD:
    """v <- momentum v + g;  theta <- theta - lr v   (plain SGD when momentum = 0)."""

    def __init__(self, params, lr=1e-2, momentum=0.0):
        self.params = _check_params(params, "SGD")
        self.lr = check_number(lr, "lr", 0.0, strict=True)
        self.momentum = check_number(momentum, "momentum", 0.0, maximum=1.0)
        self.t = 0
        self.v = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}

    def step(self, grads):
        """One update with ``grads`` (name -> array like its parameter), all checked before any change."""
        check_grads(grads, self.params, "SGD.step")
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

    and every ``FLUSH_EVERY`` steps the subnormal elements of m and v are set to zero (``flush_subnormals``).
    derivations/adam.md#update
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = _check_params(params, "Adam")
        self.lr = check_number(lr, "lr", 0.0, strict=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = check_number(betas[0], "betas[0]", 0.0, maximum=1.0)
        self.beta2 = check_number(betas[1], "betas[1]", 0.0, maximum=1.0)
        self.eps = check_number(eps, "eps", 0.0, strict=True)
        self.t = 0
        self.m = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: array_namespace(p).zeros_like(p) for k, p in params.items()}
        self._work = {}                                        # scratch arrays of the fast kernels (not state)

    def step(self, grads):
        """One update with ``grads`` (name -> array like its parameter), all checked before any change."""
        check_grads(grads, self.params, "Adam.step")
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1.0 - b1 ** self.t)            # lr / (1 - beta1^t): host floats, no transfer
        sqrt_bc2 = math.sqrt(1.0 - b2 ** self.t)               # sqrt(1 - beta2^t)
        first = next(iter(self.params.values()))
        every = kernels.lookup("adam_update_many", first)     # all parameters in one kernel call (NumPy)
        if every is not None:
            every([(p, grads[k], self.m[k], self.v[k], self._scratch(k)) for k, p in self.params.items()],
                  b1, b2, step_size, sqrt_bc2, self.eps)
        else:
            for k, p in self.params.items():
                args = (p, grads[k], self.m[k], self.v[k], b1, b2, step_size, sqrt_bc2, self.eps)
                fast = kernels.lookup("adam_update", p)    # the same update in fewer passes (minivae/kernels.py)
                if fast is not None:
                    fast(*args, self._scratch(k))
                else:
                    adam_update(*args)
        if self.t % FLUSH_EVERY == 0:
            for k in self.params:
                flush_subnormals(self.m[k])
                flush_subnormals(self.v[k])

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


FLUSH_EVERY = 100     # steps between flushes of Adam's subnormal moments


def flush_subnormals(a):
    """Set the elements of ``a`` below the smallest normal number of its dtype in magnitude (the subnormals) to
    zero, in place. Where a gradient stays zero (a dead unit, a pixel that is always black), m decays as beta1^t
    and, in float32, reaches the subnormals in ~800 steps and stays there: 0.9 times a few units of the last place
    rounds back to itself. Arithmetic on subnormals is slow on many CPUs. Flushing them moves a parameter by at most
    lr 1.2e-38 / eps (1.2e-33 at the defaults), far below float32's resolution of any parameter.
    derivations/adam.md#subnormal-moments"""
    xp = array_namespace(a)
    tiny = xp.finfo(a.dtype).smallest_normal
    a[...] = xp.where(xp.abs(a) < tiny, xp.zeros_like(a), a)


def _load_slots(opt, state, name, slots):
    """Restore an optimizer's step count and per-parameter slots (arrays already on the right device), after
    checking all of them: a refused state changes nothing."""
    if not isinstance(state, dict) or state.get("name") != name:
        got = state.get("name") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"optimizer state is for {got!r}, not {name!r}")
    t = check_int(state.get("t"), "optimizer state t", 0)
    for slot in slots:
        saved = state.get(slot)
        if not isinstance(saved, dict) or set(saved) != set(opt.params):
            raise ValueError(f"optimizer state {slot!r} has parameters {sorted(saved or ())}, "
                             f"expected {sorted(opt.params)}")
        for k, a in saved.items():
            if tuple(a.shape) != tuple(opt.params[k].shape):
                raise ValueError(f"optimizer state {slot}[{k!r}] has shape {tuple(a.shape)}, "
                                 f"expected {tuple(opt.params[k].shape)}")
    for slot in slots:
        setattr(opt, slot, dict(state[slot]))
    opt.t = t


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
