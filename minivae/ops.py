"""Every public forward/backward pair of minivae, collected from the package, with what it takes to call it: the
one list that ``minivae gradcheck`` (minivae/gradcheck.py: run_checks) and the tests (tests/_ops.py, the registry that
tests/test_ops.py runs every generic check from) all run over.

``pairs()`` is built by scanning every module of ``minivae`` for ``<name>_forward`` / ``<name>_backward`` defined
in that module, so a pair added later is picked up by the command and the tests without editing them.
``SPECS`` says, per pair, the shape of each input (in named dimensions), whether it is differentiated (``wrt``),
and two value ranges:

- ``wide``: values as large as the op's result stays finite for (the "finite in, finite out" property), per
  dtype; far beyond anything a trained model produces;
- ``moderate``: where central differences in float64 are well conditioned (derivatives not vanishing, outputs
  of order 1 to 100), for gradient checks.

A pair with no entry gets ``fallback_spec``: every argument an (N, D) array of moderate reals, all
differentiated. Where that does not fit the op, the tests fail naming the pair: add an entry here.
Derivation: derivations/gradcheck.md#check. Tests: tests/test_gradcheck.py, tests/test_ops.py.
"""
import functools
import importlib
import inspect
import math
import pkgutil
from typing import Callable, NamedTuple

import numpy as np


class Arg(NamedTuple):
    dims: str                    # named dimensions, "ND" -> (N, D); "" -> a 0-d array
    wide64: tuple = (-1e100, 1e100)
    wide32: tuple = (-1e15, 1e15)
    moderate: tuple = (-3.0, 3.0)
    kind: str = "real"           # real | unit (in [0, 1]) | onehot (over the last axis) | scalar (a Python float)
    avoid: float = 0.0           # moderate values keep |v| >= avoid (relu's kink at 0)


class Spec(NamedTuple):
    args: tuple                  # one Arg per forward argument, in order
    wrt: tuple                   # indices of the arguments backward returns gradients for, in its order


class Pair(NamedTuple):
    key: str                     # "module.name" or "module.name[variant]"
    forward: Callable
    backward: Callable
    spec: Spec


FULL = (-1e300, 1e300)
FULL32 = (-1e37, 1e37)
ACT = Arg("ND", FULL, FULL32)

SPECS = {
    "layers.linear": Spec((Arg("NA"), Arg("AB"), Arg("B")), (0, 1, 2)),
    "layers.tanh": Spec((ACT._replace(moderate=(-4.0, 4.0)),), (0,)),
    "layers.sigmoid": Spec((ACT._replace(moderate=(-8.0, 8.0)),), (0,)),
    "layers.softplus": Spec((ACT._replace(moderate=(-8.0, 20.0)),), (0,)),
    "layers.relu": Spec((ACT._replace(avoid=1e-3),), (0,)),
    "layers.identity": Spec((ACT,), (0,)),
    # the clamp: any logvar; moderate values stay away from its kink at LOGVAR_MAX = 40
    "reparam.logvar_clamp": Spec((Arg("NZ", FULL, FULL32, (-6.0, 6.0)),), (0,)),
    # logvar: what the clamp lets through (<= 40; below, sigma underflows to 0); eps is N(0, 1) noise
    "reparam.reparameterize": Spec((Arg("NZ", (-1e100, 1e100), (-1e30, 1e30)),
                                    Arg("NZ", (-1e300, 40.0), (-1e37, 40.0), (-6.0, 6.0)),
                                    Arg("NZ", (-1e6, 1e6), (-1e6, 1e6))), (0, 1)),
    "kl.kl_std_normal": Spec((Arg("NZ", (-1e100, 1e100), (-1e18, 1e18)),
                              Arg("NZ", (-1e300, 40.0), (-1e37, 40.0), (-6.0, 6.0))), (0, 1)),
    "likelihoods.bernoulli_nll": Spec((Arg("ND", kind="unit"), Arg("ND", FULL, FULL32, (-8.0, 8.0))), (1,)),
    "likelihoods.gaussian_nll": None,          # four variants below: logvar (), (D,), (1, D) and (N, D)
    "likelihoods.variance_floor": None,        # three variants below: logvar (), (D,) and (N, D)
    "likelihoods.categorical_nll": Spec((Arg("NDL", kind="onehot"), Arg("NDL", FULL, FULL32)), (1,)),
    "prior.std_normal_log_prob": Spec((Arg("NZ", (-1e150, 1e150), (-1e18, 1e18)),), (0,)),
    "prior.reparam_log_q": Spec((Arg("NZ", (-1e150, 1e150), (-1e18, 1e18)), Arg("NZ", FULL, FULL32)), (1,)),
    "prior.mog_log_prob": Spec((Arg("NZ", (-1e3, 1e3), (-1e3, 1e3)), Arg("C", (-1e3, 1e3), (-1e3, 1e3)),
                                Arg("CZ", (-1e3, 1e3), (-1e3, 1e3)),
                                Arg("CZ", (-50.0, 50.0), (-50.0, 50.0), (-1.5, 1.5))), (0, 1, 2, 3)),
    "iwae.iw_bound": Spec((Arg("KN", FULL, FULL32, (-6.0, 6.0)),), (0,)),
    # MADE's masked layer: the mask is a constant (no gradient); any values in [0, 1] exercise the formula
    "made.masked_linear": Spec((Arg("NA", (-1e3, 1e3), (-1e3, 1e3)), Arg("AB", (-1e3, 1e3), (-1e3, 1e3)),
                                Arg("AB", kind="unit")), (0, 1)),
    # planar flows: u_hat divides by ||w||^2, so w stays off 0 (positive in the wide range, |w_j| >= 0.3 in the
    # moderate one); the log-determinant's domain is w^T u_hat > -1 (what planar_u guarantees), kept here by
    # u_hat, w >= 0 in the wide range and w^T u_hat >= -0.6 in the moderate one
    "flows.planar_u": Spec((Arg("NZ", (-1e3, 1e3), (-1e3, 1e3), (-1.5, 1.5)),
                            Arg("NZ", (1e-2, 1e3), (1e-2, 1e3), (-1.5, 1.5), avoid=0.3)), (0, 1)),
    "flows.planar": Spec((Arg("NZ", (-1e3, 1e3), (-1e3, 1e3)), Arg("NZ", (-1e3, 1e3), (-1e3, 1e3)),
                          Arg("NZ", (-1e3, 1e3), (-1e3, 1e3), (-1.5, 1.5)), Arg("N", (-1e3, 1e3), (-1e3, 1e3))),
                         (0, 1, 2, 3)),
    "flows.planar_logdet": Spec((Arg("NZ", (-1e3, 1e3), (-1e3, 1e3), (-2.0, 2.0)),
                                 Arg("NZ", (0.0, 1e3), (0.0, 1e3), (-0.1, 1.0)),
                                 Arg("NZ", (0.0, 1e3), (0.0, 1e3), (0.2, 1.5)),
                                 Arg("N", (-1e3, 1e3), (-1e3, 1e3), (-2.0, 2.0))), (0, 1, 2, 3)),
}
# The Gaussian's residuals stay within +-1e3 and its logvar where (2e3)^2 exp(-logvar) stays finite, also when a
# shared logvar's gradient sums it over 16 elements times an upstream gradient of 10: in float32,
# 8e2 (2e3)^2 exp(60) = 4e35 < 3.4e38 (at -70 the exact sum overflows). Its logvar and
# the floor's come in the shapes the model gives them (shared (), per-dim (D,), per-element (N, D)), and (1, D),
# which broadcasts over a stretched axis rather than a missing one.
_X = Arg("ND", (-1e3, 1e3), (-1e3, 1e3), (-2.0, 2.0))
_LV = dict(wide64=(-100.0, 700.0), wide32=(-60.0, 80.0), moderate=(-1.0, 1.5))
GAUSSIAN_VARIANTS = {f"logvar {name}": Spec((_X, _X, Arg(dims, **_LV)), (1, 2))
                     for name, dims in (("()", ""), ("(D,)", "D"), ("(1, D)", "1D"), ("(N, D)", "ND"))}
_FLOOR = dict(wide64=FULL, wide32=FULL32, moderate=(-15.0, 8.0))
_SIGMA_MIN = Arg("", moderate=(1e-3, 1.0), kind="scalar")
VARIANTS = {
    "likelihoods.gaussian_nll": GAUSSIAN_VARIANTS,
    "likelihoods.variance_floor": {f"logvar {name}": Spec((Arg(dims, **_FLOOR), _SIGMA_MIN), (0,))
                                   for name, dims in (("()", ""), ("(D,)", "D"), ("(N, D)", "ND"))},
}


def fallback_spec(forward):
    """Every argument an (N, D) array of moderate reals, all differentiated."""
    n = len(inspect.signature(forward).parameters)
    return Spec(tuple(Arg("ND") for _ in range(n)), tuple(range(n)))


@functools.lru_cache(maxsize=None)
def pairs():
    """Every pair, as a tuple of Pair, sorted by module and name (a pair in VARIANTS once per variant). Collected on
    the first call, when every module of minivae can be imported (not while this one is)."""
    import minivae
    found = []
    for info in sorted(pkgutil.iter_modules(minivae.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):            # __main__ runs the command line when imported
            continue
        module = importlib.import_module(f"minivae.{info.name}")
        for name, fn in sorted(vars(module).items()):
            if (name.startswith("_") or not name.endswith("_forward") or not inspect.isfunction(fn)
                    or fn.__module__ != module.__name__):
                continue
            base = name[: -len("_forward")]
            backward = getattr(module, base + "_backward", None)
            if backward is None or getattr(backward, "__module__", None) != module.__name__:
                continue
            key = f"{info.name}.{base}"
            if key in VARIANTS:
                found += [Pair(f"{key}[{v}]", fn, backward, s) for v, s in VARIANTS[key].items()]
            else:
                found.append(Pair(key, fn, backward, SPECS.get(key) or fallback_spec(fn)))
    return tuple(found)


def draw_dims(rng):
    """Sizes 1-4 for every named dimension (L, the categorical's levels, at least 2)."""
    dims = {d: int(rng.integers(1, 5)) for d in "NDABZCKL"}
    dims["L"] = max(dims["L"], 2)
    return dims


def shape_of(arg, dims):
    """The shape of ``arg`` for the sizes ``dims``; the dimension "1" is always 1."""
    return tuple(1 if d == "1" else dims[d] for d in arg.dims)


def make_arg(arg, dims, rng, dtype, where="moderate"):
    """One input: a NumPy array of ``dtype`` (or a Python float for a scalar argument) drawn uniformly from the
    chosen range; ``where`` is "moderate" or "wide"."""
    shape = shape_of(arg, dims)
    if arg.kind == "scalar":
        lo, hi = arg.moderate
        return float(lo + (hi - lo) * rng.uniform())
    if arg.kind == "unit":
        return rng.uniform(size=shape).astype(dtype)
    if arg.kind == "onehot":
        k = rng.integers(0, shape[-1], size=shape[:-1])
        return (k[..., None] == np.arange(shape[-1])).astype(dtype)
    if where == "wide":
        lo, hi = arg.wide32 if np.dtype(dtype) == np.float32 else arg.wide64
        # spread over orders of magnitude, not only the top of the range: sign * 10^U(-3, log10 hi)
        mag = 10.0 ** rng.uniform(-3.0, math.log10(max(abs(lo), abs(hi))), size=shape)
        v = np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0) * mag
        return np.clip(v, lo, hi).astype(dtype)
    lo, hi = arg.moderate
    v = rng.uniform(lo, hi, size=shape)
    if arg.avoid:
        v = np.where(np.abs(v) < arg.avoid, np.copysign(2 * arg.avoid, v), v)
    return v.astype(dtype)


def make_inputs(pair, rng, dtype="float64", where="moderate", dims=None):
    dims = dims or draw_dims(rng)
    return tuple(make_arg(a, dims, rng, dtype, where) for a in pair.spec.args), dims
