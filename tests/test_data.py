"""Tests for minivae/data.py: the default dataset and the data checks."""
import numpy as np
import pytest

from minivae.data import check_data, load_dataset, load_digits


def test_digits_split_is_fixed_and_scaled():
    x_train, x_test, y_train, y_test, image_shape = load_digits()
    assert image_shape == (8, 8)
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and x_train.dtype == np.float64
    again = load_digits()
    np.testing.assert_array_equal(again[1], x_test)
    assert set(y_test) == set(range(10))


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 4), dtype=np.int64), "floating dtype"),
    (np.zeros((3, 4), dtype=object), "floating dtype"),
    (np.array([[0.5, np.nan]]), "NaN or infinite"),
    (np.array([[0.5, np.inf]]), "NaN or infinite"),
    (np.array([[0.5, 1.5]]), r"in \[0, 1\]"),
    (np.array([[-0.1, 0.5]]), r"in \[0, 1\]"),
    (np.zeros((0, 4)), "empty"),
    (np.zeros(4), "2-D"),
    ([[0.0, 1.0]], "NumPy array"),
])
def test_check_data_names_the_argument(x, message):
    with pytest.raises(ValueError, match=f"data.*{message}"):
        check_data(x, "bernoulli", name="data")


def test_gaussian_accepts_values_outside_unit_interval():
    check_data(np.array([[-3.0, 7.0]]), "gaussian")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")
