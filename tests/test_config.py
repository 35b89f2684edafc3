"""Tests for minivae/config.py, minivae/run_folder.py and the training entry points' handling of what the user
asked for: options typed on resume are applied or refused (never ignored), no run overwrites another, a failed
start leaves nothing behind, the log says what is trained, and the library trains on one's own arrays."""
import argparse
import dataclasses
import re

import numpy as np
import pytest

from minivae.checkpoint import load_checkpoint, load_model
from minivae.config import FIXED, MAY_CHANGE, TrainConfig, add_train_options, resume_policy, typed_options
from minivae.model import VAE
from minivae.train import fit, train

QUICK = dict(epochs=2, hidden=(8,), z_dim=2, batch_size=200)


def lines():
    out = []
    return out, out.append


def test_every_field_has_help_a_default_and_a_resume_policy():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"] and f.metadata["on_resume"] in (FIXED, MAY_CHANGE), f.name
    assert {k for k in ("epochs", "lr", "out", "checkpoint_every") if resume_policy(k) == MAY_CHANGE} == \
        {"epochs", "lr", "out", "checkpoint_every"}
    assert resume_policy("z_dim") == FIXED and resume_policy("dataset") == FIXED


def test_typed_options_are_what_was_typed_even_when_equal_to_the_default():
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    assert typed_options(parser.parse_args([])) == {}
    assert typed_options(parser.parse_args(["--lr", "0.001", "--hidden", "none"])) == {"lr": 0.001, "hidden": ()}


def test_validate_checks_every_name_before_anything_starts(tmp_path):
    for field, value in [("activation", "gelu"), ("likelihood", "poisson"), ("dataset", "cifar"),
                         ("device", "tpu"), ("dtype", "float16"), ("binarize", "always"), ("optimizer", "rmsprop"),
                         ("log_every", -1), ("hidden", (4, 0))]:
        with pytest.raises(ValueError, match=field):
            train(out=str(tmp_path / "run"), **{**QUICK, field: value}, log=lambda s: None)
    assert not (tmp_path / "run").exists()                       # nothing created by a refused start


def test_a_resumed_run_applies_a_changed_lr_and_refuses_a_changed_architecture(tmp_path):
    """The old command line compared with the parser's defaults, so a typed --lr 0.001 (the default) was
    silently dropped on resume and training went on at the saved 0.01."""
    train(out=str(tmp_path), lr=0.01, **QUICK, log=lambda s: None)
    ck = str(tmp_path / "checkpoint.npz")
    out, log = lines()
    result = train(resume=ck, epochs=3, lr=0.001, log=log)
    assert result.optimizer.lr == 0.001 and load_checkpoint(ck)["train"]["lr"] == 0.001
    assert "lr 0.01 -> 0.001" in out[0] and "epochs 2 -> 3" in out[0]
    for field, value, saved in (("z_dim", 8, 2), ("hidden", (16,), (8,)), ("likelihood", "gaussian", "bernoulli")):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} cannot change when resuming .* "
                                             f"trained with {re.escape(repr(saved))}"):
            train(resume=ck, **{field: value}, log=lambda s: None)
    train(resume=ck, z_dim=2, epochs=3, log=lambda s: None)        # the same value typed again is fine


def test_a_second_run_into_a_folder_with_a_checkpoint_is_refused(tmp_path):
    train(out=str(tmp_path), **QUICK, log=lambda s: None)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match="already holds a checkpoint: continue it with --resume"):
        train(out=str(tmp_path), **QUICK, log=lambda s: None)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    train(out=str(tmp_path), **{**QUICK, "epochs": 1}, overwrite=True, log=lambda s: None)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 1


def test_a_resumed_run_writes_beside_its_checkpoint(tmp_path, monkeypatch):
    """Resuming another folder's checkpoint from here used to write into ./runs/minivae (the saved relative
    --out), replacing this folder's own run."""
    train(out=str(tmp_path / "a"), **QUICK, log=lambda s: None)
    monkeypatch.chdir(tmp_path)
    train(resume=str(tmp_path / "a" / "checkpoint.npz"), epochs=3, log=lambda s: None)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.npz")["epoch"] == 3
    assert not (tmp_path / "runs").exists()
    train(resume=str(tmp_path / "a" / "checkpoint.npz"), epochs=4, out=str(tmp_path / "b"), log=lambda s: None)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.npz")["epoch"] == 4
    assert load_checkpoint(tmp_path / "a" / "checkpoint.npz")["epoch"] == 3


def test_the_log_names_the_objective_and_the_header_every_changed_option(tmp_path):
    out, log = lines()
    train(out=str(tmp_path / "b"), beta=4.0, **QUICK, log=log)
    assert "options: epochs=2, batch_size=200, z_dim=2, hidden=(8,), beta=4.0" in out[0]
    assert "train loss (nll + 4 kl)" in out[1]
    out, log = lines()
    train(out=str(tmp_path / "iw"), iw_samples=5, **QUICK, log=log)
    assert "iw_samples=5" in out[0] and "train -L_5 " in out[1]
    out, log = lines()
    train(out=str(tmp_path / "plain"), **QUICK, log=log)
    assert "train -ELBO " in out[1]


def test_log_every_makes_the_log_quieter(tmp_path):
    out, log = lines()
    train(out=str(tmp_path / "a"), **{**QUICK, "epochs": 6}, log_every=3, log=log)
    assert [line.split()[1] for line in out if line.startswith("epoch")] == ["3/6", "6/6"]
    out, log = lines()
    train(out=str(tmp_path / "b"), **{**QUICK, "epochs": 3}, log_every=0, log=log)
    assert len(out) == 3 and out[1].startswith("epoch    3/3")        # header, result, files


def test_warnings_for_options_that_will_not_do_what_they_say(tmp_path):
    out, log = lines()
    train(out=str(tmp_path / "w"), kl_warmup_epochs=5, **QUICK, log=log)
    assert out[0].startswith("warning: kl_warmup_epochs (5) is longer than the run (2 epochs)")
    out, log = lines()
    train(out=str(tmp_path / "c"), likelihood="categorical", **QUICK, log=log)
    assert out[0].startswith("warning: levels is 256 but the training data use only 17 of them")


@pytest.mark.parametrize("dtype", [np.float64, np.dtype("float64"), "float64"])
def test_dtypes_and_sizes_accept_what_numpy_accepts(dtype):
    model = VAE(np.int64(6), np.int32(2), hidden=(np.int64(4),), dtype=dtype, prior_components=np.int64(3))
    assert model.dtype_name == "float64" and model.x_dim == 6 and model.hidden == (4,)
    assert TrainConfig(dtype=dtype, epochs=np.int64(3)).validate().dtype == "float64"


def test_fit_trains_on_ones_own_arrays(tmp_path):
    r = np.random.default_rng(0)
    centres = r.uniform(size=(3, 10))
    x = np.clip(centres[r.integers(0, 3, 600)] + 0.05 * r.standard_normal((600, 10)), 0.0, 1.0)
    result = fit(x[:500], x_valid=x[500:], epochs=20, hidden=(16,), z_dim=2, batch_size=50, log=lambda s: None)
    h = result.history
    assert result.checkpoint is None and h[-1]["heldout_neg_elbo"] < h[0]["heldout_neg_elbo"]
    assert result.model.x_dim == 10
    quiet = fit(x[:100], epochs=1, hidden=(4,), z_dim=2, log=lambda s: None)           # no held-out set
    assert "heldout_neg_elbo" not in quiet.history[0]
    saved = fit(x[:100], epochs=1, hidden=(4,), z_dim=2, out=str(tmp_path / "f"), log=lambda s: None)
    model, ckpt = load_model(saved.checkpoint)
    assert ckpt["data"]["dataset"] == "arrays" and model.x_dim == 10
    with pytest.raises(ValueError, match="x_train must lie in \\[0, 1\\] for the bernoulli likelihood"):
        fit(x * 3.0, epochs=1, log=lambda s: None)
    with pytest.raises(TypeError, match="x_train must be a NumPy array"):
        fit([[0.5] * 10], epochs=1, log=lambda s: None)
