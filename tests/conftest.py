"""Shared fixtures: the devices every op is tested on, and GPU marking.

Ops are parametrised over ``cpu`` (NumPy), ``strict`` (array-api-strict on its non-default device, which
refuses implicit conversion to NumPy just as CuPy does) and ``gpu`` (CuPy; skipped where there is no GPU).
"""
import numpy as np
import pytest

from minivae.backend import DeviceError, get_device


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA GPU (skipped where there is none)")


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
