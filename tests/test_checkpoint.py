"""Tests for minivae/checkpoint.py: round trip, atomic writes, and clear errors for bad files."""
import os

import numpy as np
import pytest

from minivae.backend import to_host
from minivae.checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model, save_checkpoint
from minivae.model import VAE
from minivae.optim import Adam
from minivae.rng import RNG


def saved(tmp_path, likelihood="bernoulli", device="cpu"):
    model = VAE(6, 2, hidden=(5,), likelihood=likelihood, dtype="float64", device=device, seed=1)
    opt = Adam(model.params)
    rng = RNG(0)
    x = model.device.asarray(np.random.default_rng(0).uniform(size=(4, 6)))
    opt.step(model.loss_and_grads(x, rng.normal((4, 2), model.device, "float64"))[1])
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, {"seed": 0}, 1, rng)
    return path, model, opt, rng


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_round_trip(tmp_path, likelihood, device):
    path, model, opt, rng = saved(tmp_path, likelihood, device)
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and ck["train"] == {"seed": 0} and ck["rng"] == rng.state
    assert ck["optim"]["t"] == 1 and set(ck["optim"]["m"]) == set(model.params)
    loaded, _ = load_model(path)
    for k, v in model.params.items():
        np.testing.assert_array_equal(to_host(loaded.params[k]), to_host(v))
        np.testing.assert_array_equal(ck["optim"]["m"][k], to_host(opt.m[k]))


def test_interrupted_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"first"))

    def broken(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_missing_directory_truncated_corrupted_and_foreign_files(tmp_path):
    path, _, _, _ = saved(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.npz.*cannot be read"):
        load_checkpoint(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="junk.npz"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a minivae checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_wrong_version_and_wrong_architecture(tmp_path):
    path, _, _, _ = saved(tmp_path)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    np.savez(tmp_path / "v99.npz", **{**data, "format": np.array(99)})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.npz")
    bad = {**data, "param/enc.0.W": np.ones((7, 5))}
    np.savez(tmp_path / "arch.npz", **bad)
    with pytest.raises(CheckpointError, match="enc.0.W.*shape"):
        load_model(tmp_path / "arch.npz")


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "f").st_mode & 0o777) == 0o644
