"""The one source of randomness in minivae: a seeded stream for initial weights, data order and the noise eps.

Ops never draw random numbers: the noise ``eps`` of the reparameterisation is an argument, so the loss is a
deterministic function that a finite-difference check can test (derivations/gradcheck.md#fixed-noise).

Draws are made on the host with NumPy's PCG64 and moved to the device explicitly (``Device.asarray``), so one
seed gives the same numbers on NumPy, CuPy and array-api-strict, and the stream's state is a small JSON-able
dict that goes into checkpoints.

One seed gives several independent streams (``RNG(seed, stream=...)``, NumPy's ``SeedSequence.spawn``): the
model's initial weights ("init") and the training loop's data order and noise ("train") never share numbers,
though both come from one ``--seed``. ``RNG(seed)`` without a stream is the seed's own root stream (evaluation
and pictures use it).
"""
import json

import numpy as np

from .backend import dtype_name
from .checks import check_int


STREAMS = ("init", "train")     # the independent streams of one seed, in spawn order: never reorder


def _check_shape(shape):
    """``shape`` as a tuple of non-negative ints (a ValueError naming it otherwise)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not isinstance(dims, (tuple, list)) or any(isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                                  or n < 0 for n in dims):
        raise ValueError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    return tuple(int(n) for n in dims)


class RNG:
    """A seeded host random stream. ``state`` / ``set_state`` round-trip exactly.

    ``stream``: None for the seed's root stream, or one of ``STREAMS`` for the child ``SeedSequence(seed)
    .spawn(len(STREAMS))[i]``, statistically independent of the root and of the other children."""

    def __init__(self, seed, stream=None):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if stream is None:
            source = int(seed)
        elif stream in STREAMS:
            source = np.random.SeedSequence(int(seed)).spawn(len(STREAMS))[STREAMS.index(stream)]
        else:
            raise ValueError(f"stream must be None or one of {', '.join(STREAMS)}; got {stream!r}")
        self.generator = np.random.Generator(np.random.PCG64(source))

    def normal(self, shape, device, dtype):
        """eps ~ N(0, I) of ``shape``, as an array of ``device`` with ``dtype``."""
        eps = self.generator.standard_normal(_check_shape(shape))        # float64 on the host
        return device.asarray(eps, dtype=dtype)

    def uniform(self, shape, device, dtype):
        """u ~ U[0, 1) of ``shape``, as an array of ``device`` with ``dtype``. Drawn in ``dtype`` itself, so
        u < 1 holds exactly (a float64 draw rounded to float32 could reach 1)."""
        u = self.generator.random(_check_shape(shape), dtype=np.dtype(dtype_name(dtype)))    # on the host
        return device.asarray(u, dtype=dtype)

    def permutation(self, n):
        """A random order of ``range(n)``, on the host (int64)."""
        return self.generator.permutation(check_int(n, "n", 1))

    def host_normal(self, shape, std=1.0):
        """Host float64 draws from N(0, std^2), used for weight initialisation."""
        return std * self.generator.standard_normal(_check_shape(shape))

    @property
    def state(self):
        """The bit generator's state as a JSON string."""
        return json.dumps(self.generator.bit_generator.state)

    def set_state(self, state):
        """Restore a ``state`` string; a ValueError (and the stream unchanged) if it is not one."""
        try:
            self.generator.bit_generator.state = json.loads(state)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"state must be an RNG state string (RNG.state), got an invalid one: {e}") from None
