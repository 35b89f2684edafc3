"""Tests for minivae/train.py: a short run learns, is reproducible from its seed, writes its files, and stops
with a clear error (saving nothing) when the loss goes non-finite."""
import json

import numpy as np
import pytest

from minivae.checkpoint import load_checkpoint
from minivae.data import load_digits
from minivae.rng import RNG
from minivae.train import TrainConfig, TrainingError, train

from test_evaluate import numpy_elbo_terms

QUICK = dict(epochs=3, hidden=(32,), z_dim=4, log=lambda s: None)


def test_short_run_learns_and_writes_files(tmp_path):
    result = train(out=str(tmp_path), **QUICK)
    h = result.history
    assert len(h) == 3 and h[-1]["heldout_neg_elbo"] < h[0]["heldout_neg_elbo"]
    # the held-out terms, each against the float64 NumPy recomputation at the final parameters and the noise of
    # RNG(seed), one draw per example (float32 model: rounding of float32 sums over 360 x 64 terms)
    nll, kl = numpy_elbo_terms(result.model, load_digits().x_test, RNG(0).normal((1, 360, 4), result.model.device,
                                                                                 "float32"))
    assert h[-1]["heldout_nll"] == pytest.approx(np.mean(nll), rel=1e-5)
    assert h[-1]["heldout_kl"] == pytest.approx(np.mean(kl), rel=1e-5)
    assert h[-1]["heldout_neg_elbo"] == pytest.approx(np.mean(nll) + np.mean(kl), rel=1e-5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["final"] == h[-1] and metrics["config"]["epochs"] == 3
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ckpt["epoch"] == 3 and ckpt["model"]["hidden"] == [32] and ckpt["optim"]["t"] == 3 * 23
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:     # loadable without pickle
        assert "param/enc.0.W" in z.files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.json"]   # curves: the CLI


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


@pytest.mark.fault
def test_non_finite_loss_stops_and_saves_nothing(tmp_path):
    # Adam at lr 1e6: the encoder's log-variance runs past the clamp and the KL reaches 1e17 nats in step 2
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match="epoch 1: the training diverged at step"):
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


RESUME = dict(hidden=(16,), z_dim=3, dtype="float64", batch_size=100, log=lambda s: None)


def params_of(result):
    return {k: np.asarray(v).copy() for k, v in result.model.params.items()}


def test_resume_is_bitwise_identical_to_a_straight_run(tmp_path):
    """N epochs straight, and N/2 + save + load + N/2, give the same parameters bit for bit (float64, CPU),
    the same optimizer state and the same history."""
    straight = train(out=str(tmp_path / "a"), epochs=6, **RESUME)
    first = train(out=str(tmp_path / "b"), epochs=3, **RESUME)
    second = train(resume=str(tmp_path / "b" / "checkpoint.npz"), epochs=6, log=lambda s: None)
    a, b = params_of(straight), params_of(second)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(straight.optimizer.m[k], second.optimizer.m[k]) for k in a)
    assert second.optimizer.t == straight.optimizer.t == 6 * 15
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]    # noqa: E731
    assert strip(second.history) == strip(straight.history) and len(first.history) == 3


def test_resume_from_the_middle_of_an_epoch(tmp_path, stop_at_step):
    """A stop requested mid-epoch (what Ctrl-C does) saves the epoch's data order, step and partial sums;
    resuming from there is bitwise identical to the straight run."""
    straight = params_of(train(out=str(tmp_path / "a"), epochs=2, **RESUME))
    stop_at_step(7 + 15)                                 # epoch 2, step 7 of 15
    stopped = train(out=str(tmp_path / "b"), epochs=2, **RESUME)
    assert stopped.interrupted
    ck = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert ck["epoch"] == 1 and ck["progress"]["step"] == 7 and ck["order"].shape == (1437,)
    resumed = params_of(train(resume=str(tmp_path / "b" / "checkpoint.npz"), log=lambda s: None))
    assert all(np.array_equal(straight[k], resumed[k]) for k in straight)


def test_resume_refuses_to_change_the_run(tmp_path):
    train(out=str(tmp_path), epochs=2, **RESUME)
    with pytest.raises(ValueError, match="--z-dim cannot change when resuming .*trained with 3, you gave 5"):
        train(resume=str(tmp_path / "checkpoint.npz"), z_dim=5)
    with pytest.raises(ValueError, match="epochs .1. is below the 2 epochs"):
        train(resume=str(tmp_path / "checkpoint.npz"), epochs=1)


def test_ctrl_c_saves_and_exits_cleanly_then_resume_finishes(tmp_path):
    """A real SIGINT to `minivae train`: exit 130 with no traceback, a loadable checkpoint and no temporary
    file; `--resume` then finishes the run with the same parameters as a run never interrupted."""
    import signal
    import subprocess
    import sys
    args = ["--hidden", "16", "--z-dim", "3", "--dtype", "float64", "--batch-size", "100", "--epochs", "400"]
    proc = subprocess.Popen([sys.executable, "-m", "minivae", "train", *args, "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:                     # wait until training is under way
        if line.startswith("epoch    2/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted in epoch" in out
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.npz", "loss_curves.png",
                                                                     "metrics.json"]
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert 2 <= ck["epoch"] < 400
    resumed = train(resume=str(tmp_path / "run" / "checkpoint.npz"), epochs=ck["epoch"] + 2, log=lambda s: None)
    straight = train(out=str(tmp_path / "straight"), epochs=ck["epoch"] + 2, **RESUME)
    a, b = params_of(straight), params_of(resumed)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.fault
def test_ctrl_c_with_a_broken_state_saves_nothing(good_run, inf_after_step, stop_at_step):
    """A stop requested at step 8 (what Ctrl-C does) after a weight became inf at step 4: the save is refused
    with the error (minivae/health.py's report), since resuming from it would only continue the failure."""
    inf_after_step(4, "enc.0.W")
    stop_at_step(8)
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"epoch 1: .*'enc\.0\.W'"):
        train(out=str(good_run.out), epochs=1, overwrite=True, hidden=(16,), z_dim=3, batch_size=100,
              log=lambda s: None)
    good_run.assert_untouched()


@pytest.mark.fault
def test_checkpoint_every_and_nan_keeps_the_last_good_checkpoint(tmp_path):
    import hashlib
    train(out=str(tmp_path), epochs=2, checkpoint_every=1, **RESUME)
    path = tmp_path / "checkpoint.npz"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match="left as it was"):
        train(out=str(tmp_path), epochs=2, lr=1e6, checkpoint_every=1, overwrite=True, **RESUME)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# ---- objectives and priors: warm-up, the importance-weighted bound, the mixture prior --------------------------

NEW_OPTIONS = dict(kl_warmup_epochs=2, kl_warmup_start=0.2, iw_samples=2, prior="mog", prior_components=3)


def test_resume_with_warmup_iw_and_mog_is_bitwise_identical(tmp_path, stop_at_step):
    """Warm-up, K = 2 and the mixture prior together: one epoch, a resume stopped mid-epoch (in the warm-up),
    and a second resume give bit for bit the parameters and history of a straight run, because the KL weight
    is a function of (epoch, step) alone. The checkpoint carries the options and rebuilds the mixture."""
    from minivae.checkpoint import load_model
    straight = train(out=str(tmp_path / "a"), epochs=3, **RESUME, **NEW_OPTIONS)
    train(out=str(tmp_path / "b"), epochs=1, **RESUME, **NEW_OPTIONS)
    ckpt = str(tmp_path / "b" / "checkpoint.npz")

    stop_at_step(7)                                      # of the resume: epoch 2, step 7 of 15
    assert train(resume=ckpt, epochs=3, log=lambda s: None).interrupted
    resumed = train(resume=ckpt, log=lambda s: None)
    a, b = params_of(straight), params_of(resumed)
    assert "prior.mu" in a and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]    # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    saved = load_checkpoint(ckpt)
    assert {k: saved["train"][k] for k in NEW_OPTIONS} == NEW_OPTIONS
    model, _ = load_model(ckpt)
    assert (model.config["prior"], model.config["prior_components"]) == ("mog", 3)
    assert all(np.array_equal(np.asarray(model.params[k]), b[k]) for k in b)


def test_history_records_the_kl_weight(tmp_path):
    """Each epoch's mean KL weight: rising over a 2-epoch warm-up from 0 (23 steps an epoch), then beta."""
    h = train(out=str(tmp_path), epochs=3, hidden=(8,), z_dim=2, beta=2.0, kl_warmup_epochs=2,
              log=lambda s: None).history
    s = 23
    expected = [2.0 * (0 * s + (s - 1) / 2) / (2 * s), 2.0 * (s + (s - 1) / 2) / (2 * s), 2.0]
    assert [e["kl_weight"] for e in h] == pytest.approx(expected, rel=1e-12)
    assert all(e["kl_weight"] == 1.0 for e in train(out=str(tmp_path / "plain"), epochs=1, hidden=(8,), z_dim=2,
                                                    log=lambda s: None).history)


def test_iw_and_mog_runs_learn(tmp_path):
    for name, options in (("iw", dict(iw_samples=3)), ("mog", dict(prior="mog", prior_components=4))):
        h = train(out=str(tmp_path / name), **QUICK, **options).history
        assert h[-1]["heldout_neg_elbo"] < h[0]["heldout_neg_elbo"], name


@pytest.mark.parametrize("field, value", [
    ("kl_warmup_epochs", -1), ("kl_warmup_epochs", 1.5), ("kl_warmup_start", -0.5),
    ("kl_warmup_start", float("inf")), ("iw_samples", 0), ("prior", "cauchy"), ("prior_components", 0),
])
def test_bad_objective_or_prior_option_names_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train(out=str(tmp_path), **{**QUICK, field: value})
    assert list(tmp_path.iterdir()) == []


# ---- --track-exact: the two goals over training ----------------------------------------------------------------

def test_track_exact_records_the_two_goals_each_epoch(tmp_path):
    """auto at z_dim 2 on the digits: each epoch's log p(x), ELBO and gap on the first 100 held-out examples,
    as an independent float64 quadrature of the saved model (at exact_log_px's default tol) finds them."""
    from minivae.checkpoint import load_model
    from minivae.data import load_digits
    from minivae.evaluate import exact_log_px
    result = train(out=str(tmp_path), epochs=2, hidden=(16,), z_dim=2, log=lambda s: None)
    for e in result.history:
        assert e["exact_examples"] == 100 and e["heldout_gap"] > 0
        assert e["heldout_log_px"] > e["heldout_exact_elbo"] > -e["heldout_neg_elbo"] - 1.0
    assert result.history[1]["heldout_log_px"] != result.history[0]["heldout_log_px"]
    model, _ = load_model(tmp_path / "checkpoint.npz", dtype="float64")
    ex = exact_log_px(model, load_digits().x_test[:100])
    last = result.history[-1]
    assert last["heldout_log_px"] == pytest.approx(ex["log_px"], abs=1e-3)
    assert last["heldout_exact_elbo"] == pytest.approx(ex["elbo"], abs=1e-3)
    assert last["heldout_gap"] == pytest.approx(ex["gap"], abs=2e-3)
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]["heldout_gap"] == last["heldout_gap"]


@pytest.mark.parametrize("options, tracked", [
    (dict(z_dim=3), False),                                      # auto: only z_dim <= 2
    (dict(z_dim=2, track_exact="no"), False),
    (dict(z_dim=1, track_exact="yes"), True),
])
def test_track_exact_auto_yes_no(tmp_path, options, tracked):
    h = train(out=str(tmp_path), epochs=1, hidden=(8,), log=lambda s: None, **options).history
    assert ("heldout_log_px" in h[0]) == tracked


def test_track_exact_auto_skips_more_than_1000_decoder_values_per_example(monkeypatch):
    """auto: D = 1001, or the digits' 64 pixels x 17 categorical levels, is skipped; yes tracks it anyway."""
    import minivae.train
    from minivae.train import fit
    monkeypatch.setattr(minivae.train, "TRACK_MAX_POINTS", 2000)             # a quick, capped quadrature
    x = np.random.default_rng(0).uniform(size=(20, 1001))
    h = fit(x, x[:2], epochs=1, hidden=(4,), z_dim=2, log=lambda s: None).history
    assert "heldout_log_px" not in h[0]
    h = fit(x, x[:2], epochs=1, hidden=(4,), z_dim=2, track_exact="yes", log=lambda s: None).history
    assert h[0]["exact_examples"] == 2 and np.isfinite(h[0]["heldout_gap"])
    x = np.random.default_rng(0).integers(0, 17, size=(20, 64)) / 16.0
    h = fit(x, x[:2], epochs=1, hidden=(4,), z_dim=2, likelihood="categorical", levels=17,
            log=lambda s: None).history
    assert "heldout_log_px" not in h[0]


@pytest.mark.parametrize("options, needle", [
    (dict(z_dim=3, track_exact="yes"), "track_exact yes needs z_dim 1 or 2"),
    (dict(z_dim=2, track_exact="always"), "track_exact"),
])
def test_track_exact_bad_values_name_the_option(tmp_path, options, needle):
    with pytest.raises(ValueError, match=needle):
        train(out=str(tmp_path / "run"), epochs=1, log=lambda s: None, **options)
    assert not (tmp_path / "run").exists()


def test_track_exact_yes_needs_held_out_data():
    from minivae.train import fit
    x = np.random.default_rng(0).uniform(size=(20, 5))
    with pytest.raises(ValueError, match="held-out"):
        fit(x, epochs=1, hidden=(4,), z_dim=2, track_exact="yes", log=lambda s: None)


def test_track_exact_at_its_grid_cap_records_that_it_did_not_converge(tmp_path, monkeypatch):
    """A posterior too narrow for TRACK_MAX_POINTS points: the epoch is recorded, flagged, without a warning."""
    import warnings

    import minivae.train
    monkeypatch.setattr(minivae.train, "TRACK_MAX_POINTS", 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = train(out=str(tmp_path), epochs=1, hidden=(8,), z_dim=2, log=lambda s: None).history
    assert h[0]["exact_converged"] is False and np.isfinite(h[0]["heldout_log_px"])


def test_track_exact_converges_on_the_digits(tmp_path):
    h = train(out=str(tmp_path), epochs=1, hidden=(8,), z_dim=2, log=lambda s: None).history
    assert h[0]["exact_converged"] is True
