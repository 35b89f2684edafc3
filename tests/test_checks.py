"""Tests for minivae/checks.py, the one validation module, and its policy (README.md#bad-input) applied across the
public API: the helpers' own unit tests, then a battery of bad calls, each its own test case: the layers and
their ops, the likelihoods, the KL and the reparameterisation, the priors, the bound and its objectives, the
model's construction and methods, evaluation, the schedule, the RNG, the optimizers, checkpoints, the data and
``fit``/``train``. Each raises a TypeError (a wrong type) or a ValueError (a wrong shape, dtype or value; a
CheckpointError is one) naming the function and the argument, before anything changes: the arrays given, the
model's parameters, an optimizer's state, an RNG's state and the folder written to are exactly as before. The same
through the command line (exit 2, one line): tests/test_cli.py."""
import json
import os

import numpy as np
import pytest

import minivae.train as train_module
from minivae.backend import get_device
from minivae.checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model, restore_params
from minivae.checks import (check_arrays, check_batch, check_choice, check_finite, check_int, check_number,
                            check_positive_int, check_shape, check_unit_interval, is_host)
from minivae.data import binarize_static, check_data, dynamic_binarize, load_dataset, load_idx_dataset
from minivae.evaluate import evaluate, evaluate_elbo, exact_log_px, iw_bound
from minivae.iwae import iw_bound_backward, iw_bound_forward
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.layers import (linear_backward, linear_forward, relu_backward, relu_forward, sigmoid_forward,
                            softplus_backward, softplus_forward, tanh_backward, tanh_forward)
from minivae.likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward,
                                 categorical_nll_forward, gaussian_nll_backward, gaussian_nll_forward, level_onehot,
                                 log_softmax, variance_floor_forward)
from minivae.logsumexp import logsumexp
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound
from minivae.optim import SGD, Adam
from minivae.prior import (diag_normal_log_prob, mog_log_prob_backward, mog_log_prob_forward, mog_sample,
                           reparam_log_q_backward, reparam_log_q_forward, std_normal_log_prob_backward,
                           std_normal_log_prob_forward)
from minivae.reparam import (logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward,
                             reparameterize_forward)
from minivae.rng import RNG
from minivae.schedule import kl_weight
from minivae.train import fit, train

from _ops import fingerprint

pytestmark = pytest.mark.bad_input

QUICK = dict(hidden=(8,), z_dim=3, batch_size=200, log=lambda s: None)


# ---- the helpers of minivae/checks.py ------------------------------------------------------------------------

@pytest.mark.parametrize("value, minimum, expected", [(3, 1, 3), (np.int64(0), 0, 0), (np.int32(7), 5, 7)])
def test_check_int_accepts_integers_from_the_minimum(value, minimum, expected):
    got = check_int(value, "n", minimum)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value, minimum, message", [
    (0, 1, "n must be a positive integer, got 0"), (-1, 0, "n must be a non-negative integer, got -1"),
    (1, 2, "n must be an integer >= 2, got 1"), (True, 1, "n must be a positive integer, got True"),
    (2.0, 1, "n must be a positive integer, got 2.0"), ("3", 1, "n must be a positive integer, got '3'"),
    (None, 0, "n must be a non-negative integer, got None"),
])
def test_check_int_refuses_naming_the_argument(value, minimum, message):
    with pytest.raises(ValueError) as e:
        check_int(value, "n", minimum)
    assert str(e.value) == message
    if minimum == 1:
        with pytest.raises(ValueError, match="positive integer"):
            check_positive_int(value, "n")


def test_check_number_bounds():
    assert check_number(np.float32(0.5), "lr", 0.0, strict=True) == 0.5 and type(check_number(2, "b")) is float
    assert check_number(0.0, "beta", 0.0) == 0.0 and check_number(0.99, "m", 0.0, maximum=1.0) == 0.99
    for value, kwargs, message in [
        (0.0, dict(minimum=0.0, strict=True), "lr must be > 0, got 0.0"),
        (-0.5, dict(minimum=0.0), "lr must be >= 0, got -0.5"),
        (1.0, dict(maximum=1.0), "lr must be < 1, got 1.0"),
        (float("nan"), {}, "lr must be a finite number, got nan"),
        (float("-inf"), {}, "lr must be a finite number, got -inf"),
        (True, {}, "lr must be a finite number, got True"),
        ("0.1", {}, "lr must be a finite number, got '0.1'"),
    ]:
        with pytest.raises(ValueError) as e:
            check_number(value, "lr", **kwargs)
        assert str(e.value) == message


def test_check_choice():
    assert check_choice("adam", "optimizer", ("adam", "sgd")) == "adam"
    assert check_choice("b", "x", {"a": 1, "b": 2}) == "b"                   # a registry's keys
    for value in ("rmsprop", 3, None):
        with pytest.raises(ValueError) as e:
            check_choice(value, "optimizer", ("adam", "sgd"))
        assert str(e.value) == f"optimizer must be one of adam, sgd; got {value!r}"


def test_check_arrays_returns_the_shared_module_and_reads_no_values(device):
    x = device.asarray(np.full((2, 3), np.nan), dtype="float32")             # NaN values: never read
    assert check_arrays("f", x=x, y=device.asarray(np.zeros(4), dtype="float32")) is device.xp
    with pytest.raises(ValueError, match=r"f: y has dtype \S*float64 but x has \S*float32; give every array one dtype"):
        check_arrays("f", x=x, y=device.asarray(np.zeros(4), dtype="float64"))
    with pytest.raises(TypeError, match="f: y must be an array, got list"):
        check_arrays("f", x=x, y=[0.0])
    with pytest.raises(ValueError, match="f: x must have dtype float32 or float64, got int64"):
        check_arrays("f", x=np.zeros(3, np.int64))
    if device.name != "cpu":
        with pytest.raises(TypeError, match=r"f: y is a numpy array but x is a"):
            check_arrays("f", x=x, y=np.zeros(2, np.float32))


def test_check_shape_matches_any_length_at_none():
    a = np.zeros((4, 3))
    check_shape("f", "a", a, (None, 3))
    check_shape("f", "a", a, (4, 3))
    for shape, text in [((None, 2), "(*, 2)"), ((4,), "(4,)"), ((4, 3, 1), "(4, 3, 1)")]:
        with pytest.raises(ValueError) as e:
            check_shape("f", "a", a, shape, like="x's shape")
        assert str(e.value) == f"f: a must have shape {text} (x's shape), got (4, 3)"


def test_check_batch():
    cpu, strict = get_device("cpu"), get_device("strict")
    x = np.zeros((2, 5), np.float32)
    assert check_batch(x, "x", cpu, "float32", 5, "x_dim") is x
    for a, device, error, message in [
        ([[0.0] * 5], cpu, TypeError, "x must be an array, got list"),
        (x, strict, TypeError, "x is a numpy array but the model lives on strict"),
        (np.zeros((2, 4), np.float32), cpu, ValueError, r"x must have shape \(N, x_dim=5\), got \(2, 4\)"),
        (np.zeros((0, 5), np.float32), cpu, ValueError, r"x is an empty batch \(N = 0\)"),
        (np.zeros((2, 5)), cpu, ValueError, "x must have dtype float32 like the model, got float64"),
    ]:
        with pytest.raises(error, match=message):
            check_batch(a, "x", device, "float32", 5, "x_dim")


def test_value_checks_on_host_arrays():
    assert is_host(np.zeros(2)) and not is_host(get_device("strict").asarray(np.zeros(2), dtype="float64"))
    check_finite(np.array([0.0, -1e300]), "x")
    with pytest.raises(ValueError, match=r"^x contains 2 NaN or infinite value\(s\)$"):
        check_finite(np.array([np.nan, 1.0, -np.inf]), "x")
    check_unit_interval(np.array([0.0, 1.0]), "x")
    check_unit_interval(np.zeros((0, 3)), "x")                               # nothing to check
    with pytest.raises(ValueError, match=r"^x must lie in \[0, 1\] \(scale it\), got values in \[-0.5, 2\]$"):
        check_unit_interval(np.array([-0.5, 2.0]), "x", " (scale it)")


# ---- the Python API: a battery of bad calls -------------------------------------------------------------------
#
# Each case builds fresh objects and returns (call, watched): the call must raise the case's exception type with a
# message holding its needle (the argument's name and what is wrong), and ``watched`` (arrays, the model's
# parameters, an optimizer's state, a folder's files) must be exactly as before. minivae/checks.py is the policy.

R = np.random.default_rng(0)
N, D, Z, H = 4, 6, 2, 3


def a(*shape, dtype=np.float64, value=None):
    out = R.standard_normal(shape).astype(dtype) if value is None else np.full(shape, value, dtype)
    return out


def u(*shape):
    return R.random(shape)                                  # in [0, 1): valid Bernoulli targets and uniforms


def op(fn, *args, **kwargs):
    """An op call; watched: its array arguments."""
    return lambda: fn(*args, **kwargs), list(args)


def fwd_cache(forward, *args):
    """The cache of a good forward call, for a bad backward call."""
    return forward(*args)[1]


def model(**kw):
    return VAE(D, Z, hidden=(H,), dtype="float64", **kw)


def on_model(call, **kw):
    """A call on a fresh float64 model; watched: its parameters."""
    m = model(**kw)
    return lambda: call(m), [m.params]


def adam_case(grads_of, **kw):
    """Adam.step with bad gradients, after one good step (so m, v and t are not trivially zero)."""
    params = {"W": a(3, 2), "b": a(2)}
    opt = Adam(params, **kw)
    opt.step({k: a(*p.shape) for k, p in params.items()})
    return lambda: opt.step(grads_of(params)), [params, opt]


def sgd_case(grads_of):
    params = {"W": a(3, 2), "b": a(2)}
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.step({k: a(*p.shape) for k, p in params.items()})
    return lambda: opt.step(grads_of(params)), [params, opt]


class Folder(str):
    """A folder to watch: what it holds (names and bytes) must not change."""


class Snapshot:
    """Something watched through a function that reads its state (e.g. an RNG's state string)."""

    def __init__(self, read):
        self.read = read


def snapshot(obj):
    """The state of everything watched, read now: arrays' bytes, an optimizer's state (t included), a folder's
    files."""
    if isinstance(obj, (Adam, SGD)):
        return fingerprint(obj.state_dict())
    if isinstance(obj, Snapshot):
        return obj.read()
    if isinstance(obj, Folder):
        return {name: open(os.path.join(obj, name), "rb").read() if os.path.isfile(os.path.join(obj, name))
                else "dir" for name in sorted(os.listdir(obj))}
    if isinstance(obj, list):
        return [snapshot(o) for o in obj]
    return fingerprint(obj)


def ckpt_case(edit, call=None):
    """A checkpoint edited by ``edit(dict of arrays) -> dict`` (None: a file written by ``edit(path)``)."""
    def make():
        root = CKPT_ROOT
        path = os.path.join(root, f"bad-{next(_serial)}.npz")
        result = edit(path)
        if isinstance(result, dict):
            with open(path, "wb") as f:
                np.savez(f, **result)
        return lambda: (call or load_checkpoint)(path), [Folder(root)]
    return make


def saved(**changes):
    """The good checkpoint's arrays with ``changes`` (key -> array, or a callable of the old array)."""
    def edit(path):
        with np.load(GOOD_CKPT) as z:
            data = {k: z[k] for k in z.files}
        for k, v in changes.items():
            data[k] = v(data[k]) if callable(v) else v
        return data
    return edit


def with_nan(arr):
    arr = arr.copy()
    arr.flat[0] = np.nan
    return arr


def with_inf_at_0(arr):
    arr = arr.copy()
    arr.flat[0] = np.inf
    return arr


def json_edit(key, **fields):
    return saved(**{key: lambda old: np.array(json.dumps({**json.loads(str(old)), **fields}))})


_serial = iter(range(10 ** 6))
CKPT_ROOT = GOOD_CKPT = None            # set by the fixture below


def fit_case(x_train, x_valid=None, **options):
    def make():
        root = os.path.join(CKPT_ROOT, f"fit-{next(_serial)}")
        os.makedirs(root)
        watched = [x_train] + ([x_valid] if x_valid is not None else [])
        return (lambda: fit(x_train, x_valid, out=os.path.join(root, "out"), log=lambda s: None,
                            **{"epochs": 1, "hidden": (4,), "z_dim": 2, **options}),
                watched + [Folder(root)])
    return make


X01 = u(30, 5)
CASES = {
    # layers: linear and activations (minivae/layers.py)
    "linear x 1-D": (ValueError, "linear_forward: x must have shape", lambda: op(linear_forward, a(D), a(D, 3), a(3))),
    "linear W rows != x cols": (ValueError, "linear_forward: W must have shape (6, *)",
                                lambda: op(linear_forward, a(N, D), a(5, 3), a(3))),
    "linear b (N, 1)": (ValueError, "linear_forward: b must have shape (3,)",
                        lambda: op(linear_forward, a(N, D), a(D, 3), a(N, 1))),
    "linear b too long": (ValueError, "linear_forward: b must have shape (3,)",
                          lambda: op(linear_forward, a(N, D), a(D, 3), a(4))),
    "linear x integer": (ValueError, "linear_forward: x must have dtype float32 or float64",
                         lambda: op(linear_forward, np.ones((N, D), np.int64), a(D, 3), a(3))),
    "linear x None": (TypeError, "linear_forward: x must be an array", lambda: op(linear_forward, None, a(D, 3), a(3))),
    "linear W float32, x float64": (ValueError, "linear_forward: W has dtype float32 but x has float64",
                                    lambda: op(linear_forward, a(N, D), a(D, 3, dtype=np.float32), a(3))),
    "linear_backward dy wrong width": (ValueError, "linear_backward: dy must have shape (4, 3)",
                                       lambda: op(linear_backward, a(N, 4),
                                                  fwd_cache(linear_forward, a(N, D), a(D, 3), a(3)))),
    "linear_backward dy a list": (TypeError, "linear_backward: dy must be an array",
                                  lambda: op(linear_backward, [[0.0] * 3] * N,
                                             fwd_cache(linear_forward, a(N, D), a(D, 3), a(3)))),
    "tanh x a list": (TypeError, "tanh_forward: x must be an array", lambda: op(tanh_forward, [1.0, 2.0])),
    "tanh_backward dy (N, 1)": (ValueError, "tanh_backward: dy must have shape (4, 6)",
                                lambda: op(tanh_backward, a(N, 1), fwd_cache(tanh_forward, a(N, D)))),
    "relu_backward dy transposed": (ValueError, "relu_backward: dy must have shape (4, 6)",
                                    lambda: op(relu_backward, a(D, N), fwd_cache(relu_forward, a(N, D)))),
    "sigmoid x boolean": (ValueError, "sigmoid_forward: x must have dtype",
                          lambda: op(sigmoid_forward, np.ones(3, bool))),
    "softplus_backward dy scalar": (ValueError, "softplus_backward: dy must have shape (4, 6)",
                                    lambda: op(softplus_backward, np.float64(1.0),
                                               fwd_cache(softplus_forward, a(N, D)))),
    "relu x None": (TypeError, "relu_forward: x must be an array", lambda: op(relu_forward, None)),
    # likelihoods (minivae/likelihoods.py)
    "bernoulli x (N, 1)": (ValueError, "bernoulli_nll_forward: x must have shape (4, 6)",
                           lambda: op(bernoulli_nll_forward, u(N, 1), a(N, D))),
    "bernoulli x transposed": (ValueError, "bernoulli_nll_forward: x must have shape (4, 6)",
                               lambda: op(bernoulli_nll_forward, u(D, N), a(N, D))),
    "bernoulli logits 1-D": (ValueError, "bernoulli_nll_forward: logits must have shape (*, *)",
                             lambda: op(bernoulli_nll_forward, u(D), a(D))),
    "bernoulli x integer": (ValueError, "bernoulli_nll_forward: x must have dtype",
                            lambda: op(bernoulli_nll_forward, np.ones((N, D), np.int64), a(N, D))),
    "bernoulli_backward dnll (N, 1)": (ValueError, "bernoulli_nll_backward: dnll must have shape (4,)",
                                       lambda: op(bernoulli_nll_backward, a(N, 1),
                                                  fwd_cache(bernoulli_nll_forward, u(N, D), a(N, D)))),
    "bernoulli_backward dnll wrong N": (ValueError, "bernoulli_nll_backward: dnll must have shape (4,)",
                                        lambda: op(bernoulli_nll_backward, a(N + 1),
                                                   fwd_cache(bernoulli_nll_forward, u(N, D), a(N, D)))),
    "gaussian x vs mean": (ValueError, "gaussian_nll_forward: x must have shape (4, 6)",
                           lambda: op(gaussian_nll_forward, a(N, 1), a(N, D), a(D))),
    "gaussian logvar (D + 1,)": (ValueError, "gaussian_nll_forward: logvar must broadcast to mean's shape",
                                 lambda: op(gaussian_nll_forward, a(N, D), a(N, D), a(D + 1))),
    "gaussian logvar (N + 1, D)": (ValueError, "gaussian_nll_forward: logvar must broadcast to mean's shape",
                                   lambda: op(gaussian_nll_forward, a(N, D), a(N, D), a(N + 1, D))),
    "gaussian mean 3-D": (ValueError, "gaussian_nll_forward: mean must have shape (*, *)",
                          lambda: op(gaussian_nll_forward, a(N, D, 1), a(N, D, 1), a(1))),
    "gaussian_backward dnll wrong N": (ValueError, "gaussian_nll_backward: dnll must have shape (4,)",
                                       lambda: op(gaussian_nll_backward, a(2),
                                                  fwd_cache(gaussian_nll_forward, a(N, D), a(N, D), a(D)))),
    "variance floor sigma_min 0": (ValueError, "sigma_min must be > 0", lambda: op(variance_floor_forward, a(D), 0)),
    "variance floor sigma_min -1": (ValueError, "sigma_min must be > 0",
                                    lambda: op(variance_floor_forward, a(D), -1.0)),
    "variance floor sigma_min nan": (ValueError, "sigma_min must be a finite number",
                                     lambda: op(variance_floor_forward, a(D), float("nan"))),
    "variance floor logvar a list": (TypeError, "variance_floor_forward: logvar must be an array",
                                     lambda: op(variance_floor_forward, [0.0], 1e-3)),
    "categorical logits (N, 1, L)": (ValueError, "categorical_nll_forward: onehot must have shape (4, 1, 5)",
                                     lambda: op(categorical_nll_forward, a(N, D, 5), a(N, 1, 5))),
    "categorical onehot 2-D": (ValueError, "categorical_nll_forward: onehot must have shape (4, 6, 5)",
                               lambda: op(categorical_nll_forward, a(N, D), a(N, D, 5))),
    "categorical_backward dnll wrong N": (ValueError, "categorical_nll_backward: dnll must have shape (4,)",
                                          lambda: op(categorical_nll_backward, a(3),
                                                     fwd_cache(categorical_nll_forward, a(N, D, 5), a(N, D, 5)))),
    "level_onehot grid 2-D": (ValueError, "level_onehot: grid must have shape (*,)",
                              lambda: op(level_onehot, u(N, D), a(5, 1))),
    "level_onehot x 3-D": (ValueError, "level_onehot: x must have shape (*, *)",
                           lambda: op(level_onehot, u(N, D, 1), np.arange(5.0))),
    "log_softmax integer": (ValueError, "log_softmax: a must have dtype",
                            lambda: op(log_softmax, np.ones((2, 3), np.int32))),
    # KL and the reparameterisation (minivae/kl.py, minivae/reparam.py)
    "kl logvar (N, 1)": (ValueError, "kl_std_normal_forward: logvar must have shape (4, 2)",
                         lambda: op(kl_std_normal_forward, a(N, Z), a(N, 1))),
    "kl mu 1-D": (ValueError, "kl_std_normal_forward: mu must have shape (*, *)",
                  lambda: op(kl_std_normal_forward, a(Z), a(Z))),
    "kl_backward dkl (N, 1)": (ValueError, "kl_std_normal_backward: dkl must have shape (4,)",
                               lambda: op(kl_std_normal_backward, a(N, 1),
                                          fwd_cache(kl_std_normal_forward, a(N, Z), a(N, Z)))),
    "kl mu float32, logvar float64": (ValueError, "kl_std_normal_forward: logvar has dtype float64 but mu has float32",
                                      lambda: op(kl_std_normal_forward, a(N, Z, dtype=np.float32), a(N, Z))),
    "reparam eps (N, 1)": (ValueError, "reparameterize_forward: eps must have shape (4, 2)",
                           lambda: op(reparameterize_forward, a(N, Z), a(N, Z), a(N, 1))),
    "reparam logvar too wide": (ValueError, "reparameterize_forward: logvar must have shape (4, 2)",
                                lambda: op(reparameterize_forward, a(N, Z), a(N, Z + 1), a(N, Z))),
    "reparam eps None": (TypeError, "reparameterize_forward: eps must be an array",
                         lambda: op(reparameterize_forward, a(N, Z), a(N, Z), None)),
    "reparam_backward dz wrong": (ValueError, "reparameterize_backward: dz must have shape (4, 2)",
                                  lambda: op(reparameterize_backward, a(N, 1),
                                             fwd_cache(reparameterize_forward, a(N, Z), a(N, Z), a(N, Z)))),
    "logvar clamp integer": (ValueError, "logvar_clamp_forward: logvar must have dtype",
                             lambda: op(logvar_clamp_forward, np.ones((N, Z), np.int64))),
    "logvar clamp backward dout wrong": (ValueError, "logvar_clamp_backward: dout must have shape (4, 2)",
                                         lambda: op(logvar_clamp_backward, a(N),
                                                    fwd_cache(logvar_clamp_forward, a(N, Z)))),
    # priors (minivae/prior.py)
    "std normal z 1-D": (ValueError, "std_normal_log_prob_forward: z must have shape (*, *)",
                         lambda: op(std_normal_log_prob_forward, a(Z))),
    "std normal backward dlogp wrong": (ValueError, "std_normal_log_prob_backward: dlogp must have shape (4,)",
                                        lambda: op(std_normal_log_prob_backward, a(N, 1),
                                                   fwd_cache(std_normal_log_prob_forward, a(N, Z)))),
    "log q eps (N, 1)": (ValueError, "reparam_log_q_forward: eps must have shape (4, 2)",
                         lambda: op(reparam_log_q_forward, a(N, 1), a(N, Z))),
    "log q backward dlogq wrong": (ValueError, "reparam_log_q_backward: dlogq must have shape (4,)",
                                   lambda: op(reparam_log_q_backward, a(2),
                                              fwd_cache(reparam_log_q_forward, a(N, Z), a(N, Z)))),
    "mog z wrong Z": (ValueError, "mog_log_prob_forward: z must have shape (*, 2)",
                      lambda: op(mog_log_prob_forward, a(N, 3), a(5), a(5, Z), a(5, Z))),
    "mog logits wrong C": (ValueError, "mog_log_prob_forward: logits must have shape (5,)",
                           lambda: op(mog_log_prob_forward, a(N, Z), a(4), a(5, Z), a(5, Z))),
    "mog logvar (C, 1)": (ValueError, "mog_log_prob_forward: logvar must have shape (5, 2)",
                          lambda: op(mog_log_prob_forward, a(N, Z), a(5), a(5, Z), a(5, 1))),
    "mog backward dlogp (N, 1)": (ValueError, "mog_log_prob_backward: dlogp must have shape (4,)",
                                  lambda: op(mog_log_prob_backward, a(N, 1),
                                             fwd_cache(mog_log_prob_forward, a(N, Z), a(5), a(5, Z), a(5, Z)))),
    "mog_sample u wrong": (ValueError, "mog_sample: u must have shape (4, 5)",
                           lambda: op(mog_sample, a(5), a(5, Z), a(5, Z), u(N, 1), a(N, Z))),
    "mog_sample eps wrong Z": (ValueError, "mog_sample: eps must have shape (*, 2)",
                               lambda: op(mog_sample, a(5), a(5, Z), a(5, Z), u(N, 5), a(N, 1))),
    "diag normal z last dim": (ValueError, "diag_normal_log_prob: z must have mu's last dimension",
                               lambda: op(diag_normal_log_prob, a(N, 3), a(N, Z), a(N, Z))),
    # the bound and its objectives (minivae/iwae.py, logsumexp.py, objectives.py)
    "iw bound log_w 1-D": (ValueError, "iw_bound_forward: log_w must have shape (*, *)",
                           lambda: op(iw_bound_forward, a(3))),
    "iw bound backward dL wrong": (ValueError, "iw_bound_backward: dL must have shape (4,)",
                                   lambda: op(iw_bound_backward, a(3), fwd_cache(iw_bound_forward, a(5, N)))),
    "logsumexp axis out of range": (ValueError, "logsumexp: axis must be an integer in [-2, 2)",
                                    lambda: op(logsumexp, a(3, 4), axis=2)),
    "logsumexp axis a float": (ValueError, "logsumexp: axis must be an integer",
                               lambda: op(logsumexp, a(3, 4), axis=0.5)),
    "ELBO.forward kl shape": (ValueError, "ELBO.forward: kl must have shape (1, 4)",
                              lambda: op(ELBO().forward, a(1, N), a(1, N + 1))),
    "IWBound.forward nll 1-D": (ValueError, "IWBound.forward: nll must have shape (*, *)",
                                lambda: op(IWBound().forward, a(N), a(N))),
    "ELBO beta -1": (ValueError, "beta must be >= 0", lambda: op(ELBO, -1.0)),
    "IWBound beta nan": (ValueError, "beta must be a finite number", lambda: op(IWBound, float("nan"))),
    # the model: construction (minivae/model.py)
    "VAE x_dim 2.5": (ValueError, "x_dim must be a positive integer", lambda: op(VAE, 2.5, 2)),
    "VAE z_dim True": (ValueError, "z_dim must be a positive integer", lambda: op(VAE, 6, True)),
    "VAE hidden negative": (ValueError, "hidden must be a positive integer", lambda: op(VAE, 6, 2, hidden=(4, -1))),
    "VAE activation swish": (ValueError, "activation must be one of", lambda: op(VAE, 6, 2, activation="swish")),
    "VAE likelihood poisson": (ValueError, "likelihood must be one of", lambda: op(VAE, 6, 2, likelihood="poisson")),
    "VAE dtype float16": (ValueError, "dtype", lambda: op(VAE, 6, 2, dtype="float16")),
    "VAE device tpu": (ValueError, "device must be one of", lambda: op(VAE, 6, 2, device="tpu")),
    "VAE prior cauchy": (ValueError, "prior must be one of", lambda: op(VAE, 6, 2, prior="cauchy")),
    "VAE prior_components 0": (ValueError, "prior_components must be a positive integer",
                               lambda: op(VAE, 6, 2, prior="mog", prior_components=0)),
    "VAE sigma -1": (ValueError, "sigma must be", lambda: op(VAE, 6, 2, likelihood="gaussian",
                                                             gaussian_variance="fixed", sigma=-1.0)),
    "VAE gaussian_variance diagonal": (ValueError, "gaussian_variance must be one of",
                                       lambda: op(VAE, 6, 2, likelihood="gaussian", gaussian_variance="diagonal")),
    "VAE sigma 0": (ValueError, "sigma must be", lambda: op(VAE, 6, 2, likelihood="gaussian", gaussian_variance="fixed",
                                                            sigma=0.0)),
    "VAE sigma inf": (ValueError, "sigma must be", lambda: op(VAE, 6, 2, likelihood="gaussian", sigma=float("inf"))),
    "VAE sigma a string": (ValueError, "sigma must be", lambda: op(VAE, 6, 2, likelihood="gaussian", sigma="1")),
    "VAE sigma_min 0": (ValueError, "sigma_min must be", lambda: op(VAE, 6, 2, likelihood="gaussian", sigma_min=0.0)),
    "VAE levels 2.0": (ValueError, "levels must be an integer >= 2",
                       lambda: op(VAE, 6, 2, likelihood="categorical", levels=2.0)),
    "VAE x_dim 0": (ValueError, "x_dim must be a positive integer", lambda: op(VAE, 0, 2)),
    "VAE levels 1": (ValueError, "levels must be an integer >= 2",
                     lambda: op(VAE, 6, 2, likelihood="categorical", levels=1)),
    "VAE seed -1": (ValueError, "seed", lambda: op(VAE, 6, 2, seed=-1)),
    # the model: its methods, with types, shapes, dtypes, and the values of host arrays
    "loss x None": (TypeError, "x must be an array, got NoneType",
                    lambda: on_model(lambda m: m.loss_and_grads(None, a(N, Z)))),
    "loss x a float": (TypeError, "x must be an array, got float",
                       lambda: on_model(lambda m: m.loss_and_grads(1.0, a(N, Z)))),
    "loss x a list": (TypeError, "x must be an array, got list",
                      lambda: on_model(lambda m: m.loss_and_grads([[0.5] * D] * N, a(N, Z)))),
    "loss x too narrow": (ValueError, "x must have shape (N, x_dim=6), got (4, 5)",
                          lambda: on_model(lambda m: m.loss_and_grads(u(N, 5), a(N, Z)))),
    "loss x integer": (ValueError, "x must have dtype float64 like the model, got int64",
                       lambda: on_model(lambda m: m.loss_and_grads(np.ones((N, D), np.int64), a(N, Z)))),
    "loss x float32 into float64": (ValueError, "x must have dtype float64 like the model, got float32",
                                    lambda: on_model(lambda m: m.loss_and_grads(u(N, D).astype(np.float32), a(N, Z)))),
    "loss x object dtype": (ValueError, "x must have dtype float64 like the model, got object",
                            lambda: on_model(lambda m: m.loss_and_grads(np.zeros((N, D), object), a(N, Z)))),
    "loss x 1-D": (ValueError, "x must have shape (N, x_dim=6), got (6,)",
                   lambda: on_model(lambda m: m.loss_and_grads(u(D), a(1, Z)))),
    "loss x empty": (ValueError, "x is an empty batch", lambda: on_model(lambda m: m.loss_and_grads(u(0, D), a(0, Z)))),
    "loss eps too wide": (ValueError, "eps must have shape (N, z_dim=2), got (4, 3)",
                          lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(N, 3)))),
    "loss eps rows differ": (ValueError, "eps must have one row per example of x: 5 rows for 4",
                             lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(N + 1, Z)))),
    "loss eps None": (TypeError, "eps must be an array", lambda: on_model(lambda m: m.loss_and_grads(u(N, D), None))),
    "loss eps K = 0": (ValueError, "eps of shape (K, N, Z) needs K >= 1",
                       lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(0, N, Z)))),
    "loss Bernoulli target 1.5": (ValueError, "x must lie in [0, 1] for the bernoulli likelihood",
                                  lambda: on_model(lambda m: m.loss_and_grads(a(N, D, value=1.5), a(N, Z)))),
    "loss Bernoulli target -0.5": (ValueError, "x must lie in [0, 1] for the bernoulli likelihood",
                                   lambda: on_model(lambda m: m.loss_and_grads(a(N, D, value=-0.5), a(N, Z)))),
    "loss pixels in [0, 16]": (ValueError, "x must lie in [0, 1]",
                               lambda: on_model(lambda m: m.loss_and_grads(16 * u(N, D), a(N, Z)))),
    "loss categorical target 2": (ValueError, "x must lie in [0, 1] for the categorical likelihood",
                                  lambda: on_model(lambda m: m.loss_and_grads(2 * u(N, D) + 1, a(N, Z)),
                                                   likelihood="categorical", levels=4)),
    "loss gaussian x NaN": (ValueError, "x contains 1 NaN or infinite value(s)",
                            lambda: on_model(lambda m: m.loss_and_grads(with_nan(a(N, D)), a(N, Z)),
                                             likelihood="gaussian")),
    "loss eps inf": (ValueError, "eps contains",
                     lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(N, Z, value=np.inf)))),
    "loss objective a float": (ValueError, "objective must be an objectives.ELBO or objectives.IWBound",
                               lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(N, Z), 0.5))),
    "loss NumPy x, strict model": (TypeError, "x is a numpy array but the model lives on strict",
                                   lambda: on_model(lambda m: m.loss_and_grads(u(N, D), a(N, Z)), device="strict")),
    "encode x 3-D": (ValueError, "x must have shape (N, x_dim=6)", lambda: on_model(lambda m: m.encode(u(N, D, 1)))),
    "encode x NaN": (ValueError, "x contains 1 NaN", lambda: on_model(lambda m: m.encode(with_nan(u(N, D))))),
    "decode z inf": (ValueError, "z contains 4 NaN or infinite",
                     lambda: on_model(lambda m: m.decode(np.where(np.arange(Z) == 0, np.inf, a(N, Z))))),
    "decode z too wide": (ValueError, "z must have shape (N, z_dim=2), got (4, 3)",
                          lambda: on_model(lambda m: m.decode(a(N, 3)))),
    "decode z a list": (TypeError, "z must be an array, got list", lambda: on_model(lambda m: m.decode([[0.0, 0.0]]))),
    "reconstruction_nll rows differ": (ValueError, "z must have one row per example of x",
                                       lambda: on_model(lambda m: m.reconstruction_nll(u(N, D), a(N - 1, Z)))),
    "log_prior z NaN": (ValueError, "z contains 1 NaN", lambda: on_model(lambda m: m.log_prior(with_nan(a(N, Z))))),
    "sample_prior n 0": (ValueError, "n must be a positive integer",
                         lambda: on_model(lambda m: m.sample_prior(0, RNG(0)))),
    "decoder_mean z 1-D": (ValueError, "z must have shape (N, z_dim=2)",
                           lambda: on_model(lambda m: m.decoder_mean(a(Z)))),
    "log_likelihood_grid z too wide": (ValueError, "z must have shape (N, z_dim=2)",
                                       lambda: on_model(lambda m: m.log_likelihood_grid(u(N, D), a(7, 3)))),
    "elbo_terms x 1.5": (ValueError, "x must lie in [0, 1]",
                         lambda: on_model(lambda m: m.elbo_terms(a(N, D, value=1.5), a(N, Z)))),
    "log_weights eps rows differ": (ValueError, "eps must have one row per example of x",
                                    lambda: on_model(lambda m: m.log_weights(u(N, D), a(3, N + 1, Z)))),
    "sample_x rng a seed": (TypeError, "rng must be a minivae RNG", lambda: on_model(lambda m: m.sample_x(a(N, Z), 0))),
    "sample_prior rng None": (TypeError, "rng must be a minivae RNG",
                              lambda: on_model(lambda m: m.sample_prior(3, None))),
    # evaluation (minivae/evaluate.py) and the pieces of training (schedule.py, rng.py)
    "evaluate_elbo model a dict": (TypeError, "model must be a minivae VAE", lambda: op(evaluate_elbo, {}, u(N, D))),
    "iw_bound x beyond [0, 1]": (ValueError, "x must lie in [0, 1]",
                                 lambda: on_model(lambda m: iw_bound(m, 2 * u(N, D) + 1, k=2))),
    "exact_log_px x NaN": (ValueError, "x contains 1 NaN",
                           lambda: on_model(lambda m: exact_log_px(m, with_nan(u(N, D))))),
    "evaluate k 0": (ValueError, "k must be a positive integer", lambda: on_model(lambda m: evaluate(m, u(N, D), k=0))),
    "kl_weight epoch -1": (ValueError, "epoch must be a non-negative integer",
                           lambda: op(kl_weight, -1, 0, 10, 1.0, 5, 0.0)),
    "kl_weight step past the epoch": (ValueError, "step must be below steps_per_epoch = 10",
                                      lambda: op(kl_weight, 0, 10, 10, 1.0, 5, 0.0)),
    "RNG.normal negative shape": (ValueError, "shape must be a tuple of non-negative integers",
                                  lambda: (lambda r: (lambda: r.normal((2, -1), get_device("cpu"), "float64"),
                                                      [Snapshot(lambda: r.state)]))(RNG(0))),
    "RNG.set_state garbage": (ValueError, "state must be an RNG state string",
                              lambda: (lambda r: (lambda: r.set_state("{}"), [Snapshot(lambda: r.state)]))(RNG(0))),
    # optimizers (minivae/optim.py): every gradient is checked before any parameter moves
    "Adam grads missing a key": (ValueError, "Adam.step: grads must have the keys of params; missing ['b']",
                                 lambda: adam_case(lambda p: {"W": a(3, 2)})),
    "Adam grads extra key": (ValueError, "unexpected ['c']",
                             lambda: adam_case(lambda p: {"W": a(3, 2), "b": a(2), "c": a(1)})),
    "Adam scalar gradient": (ValueError, "Adam.step: grads['b'] must have its parameter's shape (2,)",
                             lambda: adam_case(lambda p: {"W": a(3, 2), "b": np.float64(1.0)})),
    "Adam gradient (2, 1) for (2,)": (ValueError, "grads['b'] must have its parameter's shape (2,)",
                                      lambda: adam_case(lambda p: {"W": a(3, 2), "b": a(2, 1)})),
    "Adam gradient float32": (ValueError, "grads['W'] must have its parameter's shape (3, 2) and dtype float64",
                              lambda: adam_case(lambda p: {"W": a(3, 2, dtype=np.float32), "b": a(2)})),
    "Adam grads a list": (TypeError, "Adam.step: grads must be a dict", lambda: adam_case(lambda p: [a(3, 2), a(2)])),
    "Adam gradient None": (TypeError, "Adam.step: grads['b'] must be an array",
                           lambda: adam_case(lambda p: {"W": a(3, 2), "b": None})),
    "Adam betas a float": (ValueError, "betas must be a pair", lambda: op(Adam, {"W": a(2)}, betas=0.9)),
    "Adam beta2 1.0": (ValueError, "betas[1] must be < 1", lambda: op(Adam, {"W": a(2)}, betas=(0.9, 1.0))),
    "Adam eps 0": (ValueError, "eps must be > 0", lambda: op(Adam, {"W": a(2)}, eps=0.0)),
    "Adam lr -1": (ValueError, "lr must be > 0", lambda: op(Adam, {"W": a(2)}, lr=-1.0)),
    "Adam lr a string": (ValueError, "lr must be a finite number", lambda: op(Adam, {"W": a(2)}, lr="0.1")),
    "Adam params a list": (TypeError, "Adam: params must be a non-empty dict", lambda: op(Adam, [a(2)])),
    "SGD momentum a string": (ValueError, "momentum must be a finite number",
                              lambda: op(SGD, {"W": a(2)}, momentum="a")),
    "SGD momentum 1": (ValueError, "momentum must be < 1", lambda: op(SGD, {"W": a(2)}, momentum=1.0)),
    "SGD lr 0": (ValueError, "lr must be > 0", lambda: op(SGD, {"W": a(2)}, lr=0.0)),
    "SGD grads missing a key": (ValueError, "SGD.step: grads must have the keys of params; missing ['b']",
                                lambda: sgd_case(lambda p: {"W": a(3, 2)})),
    "SGD scalar gradient": (ValueError, "SGD.step: grads['W'] must have its parameter's shape (3, 2)",
                            lambda: sgd_case(lambda p: {"W": np.float64(0.5), "b": a(2)})),
    "Adam state of SGD": (ValueError, "optimizer state is for 'sgd', not 'adam'",
                          lambda: (lambda opt: (lambda: opt.load_state_dict({"name": "sgd", "t": 1}), [opt]))(
                              Adam({"W": a(2)}))),
    "Adam state, v of the wrong shape": (ValueError,
                                         "optimizer state 'v'['W'] has shape (3,)".replace("'v'['W']", "v['W']"),
                                         lambda: (lambda opt: (lambda: opt.load_state_dict(
                                             {"name": "adam", "t": 5, "m": {"W": a(2)}, "v": {"W": a(3)}}),
                                             [opt]))(Adam({"W": a(2)}))),
    # checkpoints (minivae/checkpoint.py): one CheckpointError naming the file, and no file written
    "load_checkpoint(None)": (TypeError, "path must be a file path",
                              ckpt_case(lambda p: None, lambda p: load_checkpoint(None))),
    "load_checkpoint(3)": (TypeError, "path must be a file path",
                           ckpt_case(lambda p: None, lambda p: load_checkpoint(3))),
    "checkpoint missing": (CheckpointError, "': no such file", ckpt_case(lambda p: None)),
    "checkpoint a folder": (CheckpointError, "is a directory, not a file", ckpt_case(lambda p: os.mkdir(p))),
    "checkpoint an .npy": (CheckpointError, "is a single NumPy array (.npy), not a minivae checkpoint",
                           ckpt_case(lambda p: np.save(open(p, "wb"), np.ones(3)))),
    "checkpoint a JSON file": (CheckpointError, "is not a minivae checkpoint: not an .npz archive",
                               ckpt_case(lambda p: open(p, "w").write('{"final": {}}'))),
    "checkpoint a text file": (CheckpointError, "is not a minivae checkpoint: not an .npz archive",
                               ckpt_case(lambda p: open(p, "w").write("hello"))),
    "checkpoint empty": (CheckpointError, "is an empty file", ckpt_case(lambda p: open(p, "w").close())),
    "checkpoint NaN parameter": (CheckpointError, "is corrupted: parameter 'enc.0.W' holds 1 NaN or infinite",
                                 ckpt_case(saved(**{"param/enc.0.W": with_nan}))),
    "checkpoint inf in Adam's v": (CheckpointError, "optimizer state 'optim/v/dec.out.b' holds 1 NaN or infinite",
                                   ckpt_case(saved(**{"optim/v/dec.out.b": with_inf_at_0}))),
    "checkpoint integer parameter": (CheckpointError, "parameter 'dec.out.b' has dtype int64",
                                     ckpt_case(saved(**{"param/dec.out.b": lambda v: v.astype(np.int64)}))),
    "checkpoint corrupt train config": (CheckpointError, "holds an invalid training config: z_dim must be a positive",
                                        ckpt_case(json_edit("train", z_dim=-1))),
    "checkpoint train config: unknown optimizer": (CheckpointError, "invalid training config: optimizer must be one of",
                                                   ckpt_case(json_edit("train", optimizer="rmsprop"))),
    "checkpoint model record not JSON": (CheckpointError, "is incomplete or corrupted",
                                         ckpt_case(saved(model=np.array("{not json")))),
    "checkpoint model record a list": (CheckpointError, "'model' must be a JSON object",
                                       ckpt_case(saved(model=np.array("[1, 2]")))),
    "checkpoint foreign npz": (CheckpointError, "is not a minivae checkpoint",
                               ckpt_case(lambda p: {"weights": np.ones(3)})),
    "checkpoint format 7": (CheckpointError, "has format version 7", ckpt_case(saved(format=np.array(7)))),
    "load_model an invalid model record": (CheckpointError, "describes an invalid model",
                                           ckpt_case(json_edit("model", z_dim=0), lambda p: load_model(p))),
    "load_model device tpu": (ValueError, "device must be one of",
                              ckpt_case(lambda p: None, lambda p: load_model(GOOD_CKPT, device="tpu"))),
    "load_model dtype float16": (ValueError, "dtype must be 'float32' or 'float64'",
                                 ckpt_case(lambda p: None, lambda p: load_model(GOOD_CKPT, dtype="float16"))),
    "restore_params wrong shape": (CheckpointError,
                                   "parameter 'enc.0.W' has shape (6, 5), the architecture needs (6, 3)",
                                   lambda: on_model(lambda m: restore_params(m, {**{k: np.asarray(v) for k,
                                                                                    v in m.params.items()},
                                                                                "enc.0.W": a(6, 5)}, "wide.npz"))),
    # data (minivae/data.py)
    "load_dataset name 5": (ValueError, "dataset must be one of", lambda: op(load_dataset, 5)),
    "load_dataset binarize always": (ValueError, "binarize must be one of",
                                     lambda: op(load_dataset, "digits", binarize="always")),
    "load_dataset digits with a data_dir": (ValueError, "data_dir is read only by the datasets",
                                            lambda: op(load_dataset, "digits", "/tmp")),
    "load_idx_dataset data_dir 3": (TypeError, "data_dir must be a folder path",
                                    lambda: op(load_idx_dataset, "mnist", 3)),
    "load_idx_dataset cifar": (ValueError, "name must be one of", lambda: op(load_idx_dataset, "cifar")),
    "binarize_static x beyond [0, 1]": (ValueError, "binarize_static: x must lie in [0, 1]",
                                        lambda: op(binarize_static, a(3, 3, value=3.0), "threshold")),
    "binarize_static mode bogus": (ValueError, "mode must be 'none', 'threshold' or 'sample'",
                                   lambda: op(binarize_static, u(3, 3), "bogus")),
    "binarize_static x a list": (TypeError, "binarize_static: x must be a NumPy array",
                                 lambda: op(binarize_static, [[0.5]], "sample")),
    "dynamic_binarize u wrong": (ValueError, "dynamic_binarize: u must have shape (3, 3)",
                                 lambda: op(dynamic_binarize, u(3, 3), u(3, 1))),
    "check_data a list": (TypeError, "held-out data must be a NumPy array",
                          lambda: op(check_data, [[0.5]], "bernoulli", "held-out data")),
    # fit (minivae/train.py): refused before anything is created
    "fit x_train a list": (TypeError, "x_train must be a NumPy array", fit_case([[0.5] * 5] * 30)),
    "fit x_train beyond [0, 1]": (ValueError, "x_train must lie in [0, 1] for the bernoulli likelihood",
                                  fit_case(X01 * 3)),
    "fit x_valid width differs": (ValueError, "x_valid has 4 dimensions, x_train 5", fit_case(X01, u(10, 4))),
    "fit x_train NaN": (ValueError, "x_train contains 1 NaN", fit_case(with_nan(X01))),
    "fit x_valid integer": (ValueError, "x_valid must have a floating dtype",
                            fit_case(X01, np.ones((10, 5), np.int64))),
    "fit z_dim 0": (ValueError, "z_dim must be a positive integer", fit_case(X01, z_dim=0)),
    "fit epochs 0": (ValueError, "epochs must be a positive integer", fit_case(X01, epochs=0)),
    "fit an unknown option": (TypeError, "learning_rate", fit_case(X01, learning_rate=0.1)),
}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A good checkpoint of one epoch (z_dim 3) for the checkpoint cases to edit, and a folder for their files."""
    global CKPT_ROOT, GOOD_CKPT
    root = tmp_path_factory.mktemp("checks")
    train(out=str(root / "run"), epochs=1, **QUICK)
    CKPT_ROOT, GOOD_CKPT = str(root / "api"), str(root / "run" / "checkpoint.npz")
    os.makedirs(CKPT_ROOT)
    return GOOD_CKPT


def test_the_battery_is_large():
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_api_bad_input(case, good_checkpoint):
    error, needle, make = CASES[case]
    call, watched = make()
    before = snapshot(watched)
    with np.errstate(all="ignore"), pytest.raises(error) as info:
        call()
    assert type(info.value) is error or (error is ValueError and isinstance(info.value, ValueError)), info.value
    assert needle in str(info.value), str(info.value)
    assert snapshot(watched) == before


def test_params_of_another_architecture_are_refused_naming_the_parameter():
    small, wide = VAE(6, 2, hidden=(3,)), VAE(6, 2, hidden=(5,))
    with pytest.raises(CheckpointError, match=r"parameter 'enc.0.W' has shape \(6, 5\), the architecture needs"):
        restore_params(small, {k: np.asarray(v) for k, v in wide.params.items()}, "wide.npz")
    gaussian = VAE(6, 2, hidden=(3,), likelihood="gaussian")
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        restore_params(small, {k: np.asarray(v) for k, v in gaussian.params.items()}, "gaussian.npz")


def test_writing_over_a_folder_names_the_folder(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError, match="out.json"):
        atomic_write(tmp_path / "out.json", lambda f: f.write(b"{}"))
    assert os.listdir(tmp_path) == ["out.json"]


# ---- data given to train(): refused before training, naming the data -------------------------------------

def with_data(monkeypatch, edit):
    data = load_dataset("digits")
    x_train, x_test = edit(data.x_train.copy(), data.x_test.copy())
    monkeypatch.setattr(train_module, "load_dataset", lambda *a: data._replace(x_train=x_train, x_test=x_test))

    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(VAE, "loss_and_grads", refuse)


def _set(a, value, where=(0, 0)):
    a[where] = value
    return a


DATA_CASES = {
    "bernoulli target 1.5": (lambda tr, te: (_set(tr, 1.5), te), r"training data must lie in \[0, 1\]"),
    "bernoulli target -0.2": (lambda tr, te: (_set(tr, -0.2), te), r"training data must lie in \[0, 1\]"),
    "NaN in held-out data": (lambda tr, te: (tr, _set(te, np.nan)), "held-out data contains 1 NaN"),
    "inf in training data": (lambda tr, te: (_set(tr, np.inf), te), "training data contains 1 NaN or infinite"),
    "empty training data": (lambda tr, te: (tr[:0], te), "training data is empty"),
    "integer training data": (lambda tr, te: (tr.astype(np.int64), te), "training data must have a floating dtype"),
    "data beyond float32": (lambda tr, te: (_set(tr, 1e39), te), "beyond the float32 range"),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_bad_training_data_is_refused_before_training(case, tmp_path, monkeypatch):
    edit, message = DATA_CASES[case]
    with_data(monkeypatch, edit)
    likelihood = "gaussian" if case == "data beyond float32" else "bernoulli"
    with pytest.raises(ValueError, match=message):
        train(out=str(tmp_path / "out"), epochs=1, likelihood=likelihood, **QUICK)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, message", [
    ("hidden", (0,), "hidden must be a positive integer"),
    ("activation", "swish", "activation must be one of"),
    ("checkpoint_every", 0, "checkpoint_every must be a positive integer"),
    ("likelihood", "poisson", "likelihood must be one of"),
])
def test_train_api_bad_arguments(tmp_path, monkeypatch, field, value, message):
    with_data(monkeypatch, lambda tr, te: (tr, te))
    with pytest.raises(ValueError, match=message):
        train(out=str(tmp_path / "out"), epochs=1, **{**QUICK, field: value})


def test_train_api_resume_from_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        train(resume=str(tmp_path / "nope.npz"))


