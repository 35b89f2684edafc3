"""Tests for minivae/train.py: a short run learns, is reproducible from its seed, writes its files, and stops
with a clear error (saving nothing) when the loss goes non-finite."""
import json

import numpy as np
import pytest

from minivae.checkpoint import load_checkpoint
from minivae.train import TrainConfig, TrainingError, train

QUICK = dict(epochs=3, hidden=(32,), z_dim=4, log=lambda s: None)


def test_short_run_learns_and_writes_files(tmp_path):
    result = train(out=str(tmp_path), **QUICK)
    h = result.history
    assert len(h) == 3 and h[-1]["heldout_neg_elbo"] < h[0]["heldout_neg_elbo"]
    assert h[-1]["heldout_neg_elbo"] == pytest.approx(h[-1]["heldout_nll"] + h[-1]["heldout_kl"], rel=1e-12)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["final"] == h[-1] and metrics["config"]["epochs"] == 3
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ckpt["epoch"] == 3 and ckpt["model"]["hidden"] == [32] and ckpt["optim"]["t"] == 3 * 23
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:     # loadable without pickle
        assert "param/enc.0.W" in z.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.json"]


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    a = train(out=str(tmp_path / "a"), seed=3, **QUICK).history
    b = train(out=str(tmp_path / "b"), seed=3, **QUICK).history
    c = train(out=str(tmp_path / "c"), seed=4, **QUICK).history
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]    # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_gaussian_likelihood_and_sgd_train(tmp_path):
    h = train(out=str(tmp_path), likelihood="gaussian", optimizer="sgd", lr=1e-3, **QUICK).history
    assert np.isfinite(h[-1]["heldout_neg_elbo"]) and h[-1]["heldout_neg_elbo"] < h[0]["heldout_neg_elbo"]


def test_non_finite_loss_stops_and_saves_nothing(tmp_path):
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match="epoch 1: the training loss is"):
        train(out=str(tmp_path), lr=1e6, **QUICK)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("batch_size", -5), ("z_dim", 0), ("lr", 0.0), ("lr", float("nan")),
    ("beta", -1.0), ("seed", -1), ("optimizer", "rmsprop"), ("dtype", "float16"), ("epochs", 2.5),
])
def test_bad_config_names_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train(out=str(tmp_path), **{**QUICK, field: value})
    assert list(tmp_path.iterdir()) == []


def test_defaults_are_the_documented_ones():
    c = TrainConfig()
    assert (c.dataset, c.epochs, c.batch_size, c.lr, c.z_dim, c.hidden, c.activation, c.likelihood) == (
        "digits", 300, 64, 1e-3, 8, (400,), "tanh", "bernoulli")
