"""Tests for minivae/health.py: a fault in training stops it with one message naming the epoch, the step and the
cause (a batch holding NaN, a loss gone non-finite by itself, a parameter turned inf, seen by the loss or hidden
from it by tanh, a diverged KL), and the last good checkpoint is left byte for byte as it was (SHA-256), with no
temporary file behind; before the first save the message says nothing was saved. The report reads only
array-API calls, so it runs on any device."""
import numpy as np
import pytest

import minivae.optim as optim_module
import minivae.train as train_module
from minivae.data import load_dataset
from minivae.health import fault_message, non_finite_params
from minivae.model import VAE
from minivae.rng import RNG
from minivae.train import TrainingError, train

pytestmark = pytest.mark.fault

QUICK = dict(hidden=(16,), z_dim=3, batch_size=100, log=lambda s: None)      # 15 steps per epoch on the digits
STEPS = 15


def test_non_finite_params_counts_nan_and_inf_per_parameter():
    params = {"a": np.array([1.0, np.nan, np.inf, np.nan]), "b": np.ones(3), "c": np.array([[-np.inf]])}
    assert non_finite_params(params) == {"a": "2 nan, 1 inf", "c": "1 inf"}
    assert non_finite_params({"b": np.ones(3)}) == {}


def test_a_batch_holding_nan_names_its_step(good_run, monkeypatch):
    """One NaN pixel in training example 100 (let past the data check, which would refuse it): the error names
    the step whose batch holds it and says so."""
    data = load_dataset("digits")
    data.x_train[100, 5] = np.nan
    monkeypatch.setattr(train_module, "load_dataset", lambda *a: data)
    monkeypatch.setattr(train_module, "check_data", lambda *a: None)
    order = RNG(0, stream="train").permutation(len(data.x_train))     # epoch 1's order, seed 0
    step = int(np.flatnonzero(order == 100)[0]) // 100 + 1
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(good_run.out), epochs=1, overwrite=True, **QUICK)
    msg = str(e.value)
    assert msg.startswith(f"epoch 1: the training loss is nan at step {step}/{STEPS} (global step {step})"), msg
    assert "its batch holds 1 NaN or infinite input value(s)" in msg and "left as it was" in msg
    good_run.assert_untouched()


def test_a_failure_before_the_first_save_says_nothing_was_saved(tmp_path, inf_after_step):
    """A run that fails in its first epoch, into a new folder, has no checkpoint to keep: the message says that
    nothing was saved (not that a file that does not exist "is left as it was"), and the folder is gone."""
    inf_after_step(3, "dec.0.W")
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(tmp_path / "new"), epochs=1, **QUICK)
    assert str(e.value).endswith("; stopping; nothing was saved"), str(e.value)
    assert not (tmp_path / "new").exists()


def test_a_nan_loss_names_its_step(good_run, monkeypatch):
    """The loss alone made NaN at the 7th call (parameters untouched): the step and the cause."""
    real, calls = VAE.loss_and_grads, []

    def nan_at_7(self, x, eps, objective=None, check_input=True):
        loss, grads, stats = real(self, x, eps, objective, check_input)
        calls.append(1)
        return (loss * np.nan if len(calls) == 7 else loss), grads, stats

    monkeypatch.setattr(VAE, "loss_and_grads", nan_at_7)
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"epoch 1: the training loss is nan at step "
                                                  r"7/15 .*its batch and the parameters were finite"):
        train(out=str(good_run.out), epochs=1, overwrite=True, **QUICK)
    good_run.assert_untouched()


def test_an_infinite_output_bias_names_the_next_step_and_the_parameter(tmp_path, monkeypatch):
    """Epoch 1 is saved; after step 20 (epoch 2, step 5) dec.out.b[0] becomes inf, so the loss of step 6 is
    infinite: the error names step 6 and 'dec.out.b', and epoch 1's checkpoint stays byte for byte."""
    import hashlib
    out = tmp_path / "run"
    seen = {}
    real_step = optim_module.Adam.step

    def step(self, grads):
        real_step(self, grads)
        if self.t == STEPS + 5:
            seen["sha"] = hashlib.sha256((out / "checkpoint.npz").read_bytes()).hexdigest()   # epoch 1's, as saved
            self.params["dec.out.b"][0] = np.inf

    monkeypatch.setattr(optim_module.Adam, "step", step)
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(out), epochs=3, checkpoint_every=1, **QUICK)
    msg = str(e.value)
    assert msg.startswith(f"epoch 2: the training loss is inf at step 6/{STEPS} (global step {STEPS + 6})"), msg
    assert "'dec.out.b' (1 inf)" in msg
    assert hashlib.sha256((out / "checkpoint.npz").read_bytes()).hexdigest() == seen["sha"]
    from minivae.checkpoint import load_checkpoint
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "metrics.json"]


def test_an_infinite_weight_hidden_by_tanh_is_found_by_the_parameter_check(good_run, inf_after_step):
    """enc.0.b[0] = inf after step 3: tanh saturates, every loss stays finite, and only the end-of-epoch check of
    the parameters sees it; the error names the parameter."""
    inf_after_step(3, "enc.0.b")
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(good_run.out), epochs=1, overwrite=True, **QUICK)
    msg = str(e.value)
    assert msg.startswith("epoch 1: parameters holding NaN or inf: 'enc.0.b' (1 inf), though every step's loss "
                          "was finite"), msg
    good_run.assert_untouched()


@pytest.mark.parametrize("optimizer, expected", [
    ("adam", r"epoch 1: the training diverged at step 2/15 \(global step 2\): its KL reached .* nats"),
    ("sgd", r"epoch 1: the training loss is (inf|nan) at step \d+/15 .*its batch was finite; parameters holding"),
], ids=["adam", "sgd"])
def test_a_learning_rate_of_1e6_stops_naming_the_step_and_cause(good_run, optimizer, expected):
    """Adam moves every weight by ~lr per step: the encoder's log-variance runs past the clamp and the KL
    reaches 1e17 nats (finite, thanks to the clamp, and reported as divergence). SGD's updates overflow to inf."""
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=expected):
        train(out=str(good_run.out), epochs=1, lr=1e6, optimizer=optimizer, overwrite=True, **QUICK)
    good_run.assert_untouched()


def test_a_diverged_kl_with_a_broken_parameter_names_both():
    """fault_message alone: every loss finite, step 3's KL beyond one coordinate at the clamp, and a parameter
    holding inf: the divergence, its step, and the parameter."""
    stats = np.array([[1.0, 2.0], [1.0, 2.0], [5.0, 1e30], [0.0, 0.0]])
    msg = fault_message(2, stats, None, {"enc.0.W": "1 inf"}, 4, None)
    assert msg.startswith("epoch 2: the training diverged at step 3/4 (global step 7): its KL reached 1e+30 nats")
    assert msg.endswith("try a smaller --lr; parameters holding NaN or inf: 'enc.0.W' (1 inf); stopping; nothing "
                        "was saved"), msg


def test_the_fault_report_runs_on_a_non_numpy_device(tmp_path, monkeypatch):
    """The checks and the report use only array-API calls: on array-api-strict's device, as on a GPU, an
    infinite output bias is reported with its step and name."""
    real = optim_module.Adam.step

    def step(self, grads):
        real(self, grads)
        if self.t == 3:
            p = self.params["dec.out.b"]
            p[0] = p.__array_namespace__().asarray(np.inf, device=p.device, dtype=p.dtype)

    monkeypatch.setattr(optim_module.Adam, "step", step)
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"epoch 1: the training loss is inf at step "
                                                  r"4/8 .*'dec\.out\.b' \(1 inf\)"):
        train(out=str(tmp_path / "run"), device="strict", epochs=1, hidden=(8,), z_dim=2, batch_size=200,
              log=lambda s: None)
