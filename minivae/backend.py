"""Array-module dispatch, and the one place where data crosses between host and device.

Every op finds its array module from its arguments (CuPy's ``get_array_module``; the array API's
``__array_namespace__``): NumPy arrays run on NumPy, CuPy arrays on CuPy, array-API arrays (for example
``array_api_strict`` on its non-default device) on their own namespace. Array type in equals array type out.

Ops never move data. Moving data is explicit and lives in this one module. Host -> device has two paths:
``Device.asarray`` (onto a named device: parameters, data, noise) and ``from_host`` (onto the device of a given
array: the gradient checks' upstream gradients and directions). Device -> host has one: ``to_host``. Nothing else in
minivae calls ``np.asarray``, ``float()`` or ``.item()`` on an array that may live on a device.
"""
import numpy as np


class DeviceError(RuntimeError):
    """The requested device cannot be used (for example ``--device gpu`` without a working CuPy/CUDA)."""


def array_namespace(*arrays):
    """The array module shared by ``arrays`` (Python scalars and None are skipped).

    NumPy arrays -> ``numpy``; CuPy arrays -> ``cupy``; any other array that implements the array API standard
    -> its ``__array_namespace__()``. Mixing namespaces is a ``TypeError``: minivae never converts silently.
    """
    found = None
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float)):
            continue
        if isinstance(a, (np.ndarray, np.generic)):
            xp = np
        elif type(a).__module__.split(".")[0] == "cupy":
            import cupy
            xp = cupy
        elif hasattr(a, "__array_namespace__"):
            xp = a.__array_namespace__()
        else:
            raise TypeError(f"expected an array, got {type(a).__name__}")
        if found is None:
            found = xp
        elif xp is not found:
            raise TypeError(f"arrays from different array modules: {found.__name__} and {xp.__name__}")
    return np if found is None else found


def astype(x, dtype):
    """``x`` cast to ``dtype`` in its own namespace (``xp.astype`` in the array API, a method in older CuPy)."""
    xp = array_namespace(x)
    return xp.astype(x, dtype) if hasattr(xp, "astype") else x.astype(dtype)


def sum_to_shape(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, so the result has ``shape``.

    The backward of a broadcast: if ``a`` of shape ``shape`` was broadcast to ``g.shape`` in the forward pass,
    ``da = sum_to_shape(dout, a.shape)``.  derivations/likelihoods.md#gaussian-backward
    """
    xp = array_namespace(g)
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = xp.sum(g, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = xp.sum(g, axis=stretched, keepdims=True)
    return xp.asarray(g)                 # NumPy's sum over every axis gives a scalar; a 0-d input gets a 0-d array


def to_host(a):
    """Device -> host: a NumPy copy of ``a`` (a no-op for NumPy arrays). The only device-to-host path."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np.asarray(a)
    xp = array_namespace(a)
    if xp.__name__ == "cupy":
        return a.get()
    if xp.__name__ == "array_api_strict":
        return np.asarray(a.to_device(xp.Device("CPU_DEVICE")))
    return np.from_dlpack(a)


def from_host(a, like):
    """Host -> the array module and device of the array ``like`` (a no-op when ``like`` is a NumPy array)."""
    xp = array_namespace(like)
    if xp is np:
        return np.asarray(a)
    if xp.__name__ == "cupy":
        with like.device:                     # CuPy's asarray takes no device argument: use its context
            return xp.asarray(a)
    return xp.asarray(a, device=like.device)


class Device:
    """Where arrays live: a name, the array module ``xp`` and its device handle.

    ``Device.asarray(host_array)`` moves host data onto this device; with ``from_host`` (which follows an existing
    array instead of naming a device), one of the two host-to-device paths in minivae.
    """

    def __init__(self, name, xp, handle=None):
        self.name, self.xp, self.handle = name, xp, handle

    def asarray(self, a, dtype=None):
        """Host -> device: ``a`` (NumPy array or scalar) as an array of this device, cast to ``dtype``."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype_name(dtype), copy=False)
        if self.handle is None:
            return self.xp.asarray(a)
        return self.xp.asarray(a, device=self.handle)

    def dtype(self, name):
        """The namespace's dtype object for ``"float32"`` / ``"float64"``."""
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
        return getattr(self.xp, name)

    def __repr__(self):
        return f"Device({self.name!r})"


def dtype_name(dtype):
    """The dtype's name, e.g. ``"float32"``, for anything NumPy reads as a dtype (``"float32"``, ``np.float32``,
    ``np.dtype("float32")``; CuPy's are NumPy's) or an array-API dtype object (``array_api_strict.float32``).
    A dtype that is none of these is returned as given, for the caller's check to name."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        name = getattr(dtype, "name", None) or str(dtype).split(".")[-1]
        try:
            return np.dtype(name).name
        except TypeError:
            return dtype


DEVICES = ("cpu", "gpu", "strict")


def get_device(name):
    """Resolve a device name.

    - ``"cpu"``: NumPy.
    - ``"gpu"``: CuPy on the current CUDA device; a ``DeviceError`` with a one-line reason if CuPy or a GPU is
      missing.
    - ``"strict"``: ``array_api_strict`` on its non-default device ``Device("device1")``, which refuses implicit
      conversion to NumPy just as CuPy does. Slow; it exists to prove, without a GPU, that the GPU path holds
      no NumPy-only call.
    """
    if isinstance(name, Device):
        return name
    if name == "cpu":
        return Device("cpu", np)
    if name == "gpu":
        try:
            import cupy
        except ImportError:
            raise DeviceError("--device gpu needs CuPy: pip install 'minivae[gpu]' "
                              "(see the README for the wheel that matches your CUDA)") from None
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver or runtime missing: CuPy raises its own error types
            raise DeviceError(f"--device gpu: CuPy is installed but CUDA is not usable ({e})") from None
        if n < 1:
            raise DeviceError("--device gpu: CuPy is installed but no CUDA GPU was found")
        return Device("gpu", cupy)
    if name == "strict":
        try:
            import array_api_strict
        except ImportError:
            raise DeviceError("--device strict needs array-api-strict: pip install array-api-strict") from None
        return Device("strict", array_api_strict, array_api_strict.Device("device1"))
    raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
