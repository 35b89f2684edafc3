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


# A fixed hypothesis profile (tests/test_properties.py): deterministic, bounded, no deadline, no database.
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
    """``stop_at_step(n)``: training's Ctrl-C handler reports a stop request at its n-th check (the n-th step
    counted across epochs from the start of the call), as the first Ctrl-C would; undone by ``monkeypatch``."""
    import minivae.train as train_module

    def install(n):
        class StopAtStep(train_module._StopOnInterrupt):
            calls = 0

            @property
            def requested(self):
                StopAtStep.calls += 1
                return StopAtStep.calls == n

            @requested.setter
            def requested(self, value):
                pass

        monkeypatch.setattr(train_module, "_StopOnInterrupt", StopAtStep)
    return install
