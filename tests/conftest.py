"""Shared fixtures: the devices every op is tested on, and GPU marking.

Ops are parametrised over ``cpu`` (NumPy), ``strict`` (array-api-strict on its non-default device, which
refuses implicit conversion to NumPy just as CuPy does) and ``gpu`` (CuPy; skipped where there is no GPU).
"""
import numpy as np
import pytest

from minivae.backend import DeviceError, get_device


MARKERS = {
    "gpu": "needs CuPy and a CUDA GPU (skipped where there is none)",
    "edge": "numerics at extreme values",
    "bad_input": "bad user input: the error names the argument, and nothing changes",
    "fault": "faults in training or saving",
}


def pytest_configure(config):
    for name, what in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


# A fixed hypothesis profile (tests/test_ops.py): deterministic, bounded, no deadline, no database.
try:
    from hypothesis import HealthCheck, settings
except ImportError:                                        # the property tests skip themselves
    pass
else:
    settings.register_profile("minivae", derandomize=True, max_examples=30, deadline=None, database=None,
                              print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    settings.load_profile("minivae")


def _gpu_available():
    try:
        get_device("gpu")
        return True
    except DeviceError:
        return False


GPU = _gpu_available()
DEVICE_PARAMS = ["cpu", "strict", pytest.param("gpu", marks=[pytest.mark.gpu,
                 pytest.mark.skipif(not GPU, reason="no CuPy/CUDA GPU")])]


@pytest.fixture(params=DEVICE_PARAMS)
def device(request):
    """Each device: NumPy, array-api-strict's device1, and CuPy where a GPU exists."""
    return get_device(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def stop_at_step(monkeypatch):
    """``stop_at_step(n)``: the next training run stops as a first Ctrl-C would (minivae/train.py's
    ``_StopOnInterrupt``: after the current step it saves, mid-epoch, and returns interrupted) at its n-th step,
    counted from this call over every train() or resume that follows. It fires once: later runs go on undisturbed.
    The test's own stand-in for SIGINT, which only the one subprocess test of tests/test_train.py sends for real."""
    import minivae.train as train_module

    def arm(n):
        class StopAtStep(train_module._StopOnInterrupt):
            steps = 0

            @property
            def requested(self):                # read once after every step
                StopAtStep.steps += 1
                return StopAtStep.steps == n

            @requested.setter
            def requested(self, value):         # a real SIGINT is not sent: the handler never sets it
                pass

        monkeypatch.setattr(train_module, "_StopOnInterrupt", StopAtStep)
    return arm


# ---- faults: a good run to keep intact, and a parameter broken mid-training ------------------------------------

@pytest.fixture(scope="session")
def _one_good_epoch(tmp_path_factory):
    from minivae.train import train
    out = tmp_path_factory.mktemp("good_run") / "run"
    train(out=str(out), epochs=1, hidden=(16,), z_dim=3, batch_size=100, log=lambda s: None)
    return out


class GoodRun:
    """A run folder ``out`` holding the checkpoint of one good epoch, and what it held at the start."""

    def __init__(self, out):
        self.out = out
        self.digest, self.names = self.sha(), sorted(p.name for p in out.iterdir())

    def sha(self):
        import hashlib
        return hashlib.sha256((self.out / "checkpoint.npz").read_bytes()).hexdigest()

    def assert_untouched(self):
        """The checkpoint is byte for byte as it was (SHA-256), and no other file appeared (no temporary one)."""
        assert self.sha() == self.digest
        assert sorted(p.name for p in self.out.iterdir()) == self.names


@pytest.fixture
def good_run(_one_good_epoch, tmp_path):
    """A fresh copy, in this test's tmp_path, of a folder holding one good epoch's checkpoint: a GoodRun."""
    import shutil
    return GoodRun(shutil.copytree(_one_good_epoch, tmp_path / "run"))


@pytest.fixture
def inf_after_step(monkeypatch):
    """``inf_after_step(t, name)``: after Adam's global step t, element 0 of parameter ``name`` becomes +inf."""
    import minivae.optim as optim_module

    def arm(t, name):
        real = optim_module.Adam.step

        def step(self, grads):
            real(self, grads)
            if self.t == t:
                self.params[name].reshape(-1)[0] = np.inf

        monkeypatch.setattr(optim_module.Adam, "step", step)
    return arm


# ---- a trained model, shared ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digits_z2(tmp_path_factory):
    """A 64-16-(2)-16-64 VAE trained two epochs on the digits (seed 0; the two goals tracked each epoch, as
    ``--track-exact auto`` does at z_dim 2): (its TrainResult, its folder holding checkpoint.npz and
    metrics.json). Shared by the whole session: copy the folder before writing anything beside the checkpoint,
    and leave the model's parameters as they are."""
    from minivae.train import train
    out = tmp_path_factory.mktemp("digits_z2")
    return train(epochs=2, hidden=(16,), z_dim=2, out=str(out), log=lambda s: None), out
