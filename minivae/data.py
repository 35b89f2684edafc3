"""Data: the default dataset (scikit-learn's 1,797 handwritten 8x8 digits) and the checks every dataset passes.

Host-side only: arrays here are NumPy; training moves them to the device once, explicitly.
"""
from typing import NamedTuple, Optional

import numpy as np

SPLIT_SEED = 0          # the held-out split is fixed, whatever the training seed, so runs compare
HELD_OUT_FRACTION = 0.2


class Dataset(NamedTuple):
    """A dataset on the host: float64 data matrices (examples, dimensions), integer labels (or None), and
    ``image_shape`` (height, width) for datasets of images (None otherwise)."""
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    image_shape: Optional[tuple]


def load_digits():
    """The digits scaled to [0, 1] (pixel / 16), as a Dataset of float64 arrays.

    A fixed, seeded, stratified split: 1,437 training and 360 held-out images of 64 pixels.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split
    digits = sk_load_digits()
    x = digits.data.astype(np.float64) / 16.0                    # (1797, 64) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=HELD_OUT_FRACTION,
                                                        random_state=SPLIT_SEED, stratify=digits.target)
    return Dataset(x_train, x_test, y_train, y_test, (8, 8))


DATASETS = {"digits": load_digits}


def load_dataset(name):
    try:
        loader = DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}") from None
    return loader()


def check_data(x, likelihood, name="x"):
    """Validate a host data matrix before training or evaluation: a ValueError naming ``name`` if it is not
    a non-empty 2-D floating array of finite values (in [0, 1] for the Bernoulli likelihood)."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (examples, dimensions), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype} "
                         f"(scale integer data to floats first, e.g. pixels / 255)")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    if likelihood == "bernoulli" and (np.min(x) < 0.0 or np.max(x) > 1.0):
        raise ValueError(f"{name} must lie in [0, 1] for the bernoulli likelihood, "
                         f"got values in [{np.min(x):g}, {np.max(x):g}]")
    return x
