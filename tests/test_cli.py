"""Tests for minivae/cli.py, run in process (``main(argv)``) on the smallest runs that still show each behaviour:
``minivae train`` / ``evaluate`` / ``sample`` end to end for every likelihood, objective, prior, posterior and
decoder option; what the user typed is never ignored and no run is lost; the datasets of minivae/data.py from the
command line (offline: the download URLs point at a closed local port); and bad input through every command
(marked ``bad_input``): exit status 2, exactly one line on stderr naming the problem, no traceback, no warning and
nothing written. Two tests run a real process, the only proof of the entry points: the console script ``minivae``
and ``python -m minivae``. The picture commands: tests/test_plots.py and tests/test_posterior.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import minivae.checkpoint as checkpoint_module
from minivae.checkpoint import load_checkpoint, load_model
from minivae.cli import main
from minivae.data import load_dataset
from minivae.rng import RNG

from _data_helpers import STEMS, isolate, small_mnist, write_idx_folder
from test_evaluate import numpy_elbo_terms

TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--track-exact", "no"]    # a run of 23 steps


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run(argv, capsys):
    """(exit status, stdout, stderr lines) of ``minivae argv`` in process, argparse's SystemExit as its status.
    In process a traceback cannot reach stderr (the exception fails the test instead); a warning that Python shows
    by default would be one more line on a real stderr, so none may be raised (the kinds it hides by default,
    such as ResourceWarning, are let through)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    captured = capsys.readouterr()
    shown = [w for w in caught if not issubclass(w.category, HIDDEN_BY_DEFAULT)]
    assert not shown, [str(w.message) for w in shown]
    return status, captured.out, captured.err.strip().splitlines()


def assert_one_line_error(status, err, needle, command=None):
    """Exit status 2 and one line on stderr, "minivae COMMAND: error: ..." holding ``needle`` (``command`` None:
    any command, or none where the top-level parser refuses the line)."""
    assert status == 2 and len(err) == 1, (status, err)
    prefix = rf"minivae {command}: error: " if command else r"minivae( [a-z]+)?: error: "
    assert re.match(prefix, err[0]) and needle in err[0] and "Traceback" not in err[0], err


# ---- the entry points, in a real process --------------------------------------------------------------------

def test_python_dash_m_trains(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minivae", "train", *TINY, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr                  # no warning, no bar
    assert "epoch    1/1" in done.stdout and load_checkpoint(tmp_path / "run" / "checkpoint.npz")["epoch"] == 1


def test_the_console_script_reports_bad_input_in_one_line(tmp_path):
    """The installed ``minivae`` script (setup.py's entry point): a bad option is exit 2 and one line on the real
    stderr, nothing else there (no traceback, no warning), and no folder made."""
    script = shutil.which("minivae", path=os.path.dirname(sys.executable)) or shutil.which("minivae")
    if script is None:
        pytest.skip("the minivae console script is not installed (pip install .)")
    done = subprocess.run([script, "train", "--epochs", "0", "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "minivae train: error: epochs must be a positive integer, got 0\n", done.stderr
    assert not (tmp_path / "o").exists()


# ---- train, then evaluate and sample -------------------------------------------------------------------------

def test_train_then_evaluate(tmp_path, capsys):
    """train writes the run and prints its last epoch; evaluate reads the held-out split training used (its ELBO
    at the training seed, one draw per example, is the last epoch's), and its --json ELBO, NLL, KL and standard
    error are those of 10 draws per example from RNG(--seed), each recomputed here in NumPy."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--z-dim", "2", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch    2/2" in printed and "held-out -ELBO" in printed and "log p(x)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "loss_curves.png", "metrics.json"]
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert main(["evaluate", str(out / "checkpoint.npz"), "--k", "20", "--exact", "no",
                 "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    assert f"{result['neg_elbo']:.4f} ± {result['neg_elbo_se']:.4f}" in printed and "KL" in printed
    from minivae.evaluate import evaluate_elbo
    x = load_dataset("digits").x_test
    model32, _ = load_model(out / "checkpoint.npz", dtype="float32")
    assert evaluate_elbo(model32, x.astype(np.float32), seed=1)["neg_elbo"] == pytest.approx(
        final["heldout_neg_elbo"], rel=1e-6)
    model, _ = load_model(out / "checkpoint.npz", dtype="float64")                  # evaluate's default dtype
    nll, kl = numpy_elbo_terms(model, x, RNG(0).normal((10, 360, 2), model.device, "float64"))
    assert result["nll"] == pytest.approx(np.mean(nll), rel=1e-10)
    assert result["kl"] == pytest.approx(np.mean(kl), rel=1e-10)
    assert result["neg_elbo"] == pytest.approx(np.mean(nll) + np.mean(kl), rel=1e-10)
    se = np.sqrt(np.sum(np.var(nll + kl, axis=0, ddof=1)) / 10) / 360
    assert result["neg_elbo_se"] == pytest.approx(se, rel=1e-8) and result["complete"] is True


def test_hidden_none_trains_a_linear_vae(tmp_path):
    """--hidden none: only the output layers exist (no enc.0 / dec.0), the encoder mean is affine in x,
    mu(x) = x @ enc.mu.W + enc.mu.b, so mu(a x1 + (1 - a) x2) = a mu(x1) + (1 - a) mu(x2), and so are the
    decoder's logits in z."""
    assert main(["train", "--epochs", "1", "--hidden", "none", "--out", str(tmp_path)]) == 0
    model, _ = load_model(str(tmp_path / "checkpoint.npz"), dtype="float64")
    assert sorted(model.params) == ["dec.out.W", "dec.out.b", "enc.logvar.W", "enc.logvar.b", "enc.mu.W", "enc.mu.b"]
    x = np.random.default_rng(0).uniform(size=(3, model.params["enc.mu.W"].shape[0]))
    mu = np.asarray(model.encode(x)[0])
    np.testing.assert_allclose(mu, x @ np.asarray(model.params["enc.mu.W"]) + np.asarray(model.params["enc.mu.b"]),
                               rtol=1e-12, atol=1e-12)
    mix = np.asarray(model.encode(0.3 * x[:1] + 0.7 * x[1:2])[0])
    np.testing.assert_allclose(mix, 0.3 * mu[:1] + 0.7 * mu[1:2], rtol=1e-12, atol=1e-12)
    logits = np.asarray(model.decode(mu)["logits"])
    np.testing.assert_allclose(np.asarray(model.decode(0.3 * mu[:1] + 0.7 * mu[1:2])["logits"]),
                               0.3 * logits[:1] + 0.7 * logits[1:2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flags", [
    ["--likelihood", "gaussian", "--gaussian-variance", "fixed", "--sigma", "0.2"],
    ["--likelihood", "gaussian", "--gaussian-variance", "shared"],
    ["--likelihood", "gaussian", "--gaussian-variance", "per-dim", "--sigma-min", "0.01"],
    ["--likelihood", "gaussian", "--gaussian-variance", "per-element"],
    ["--likelihood", "categorical", "--levels", "17"],
], ids=["fixed", "shared", "per-dim", "per-element", "categorical"])
def test_train_and_evaluate_each_likelihood(tmp_path, capsys, flags):
    """A short run on the digits learns; the checkpoint reloads the same likelihood and evaluates, with bits per
    dimension only for the discrete categorical (the exact log p(x) of each: tests/test_evaluate.py)."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--hidden", "16", *flags, "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[-1]["heldout_neg_elbo"] < history[0]["heldout_neg_elbo"]
    assert main(["evaluate", str(out / "checkpoint.npz"), "--k", "20", "--exact", "no",
                 "--json", str(tmp_path / "e.json")]) == 0
    capsys.readouterr()
    result = json.loads((tmp_path / "e.json").read_text())
    assert np.isfinite(result["neg_iw_bound"]) and result["neg_iw_bound"] < result["neg_elbo"] + 1.0
    assert ("bits_per_dim" in result) == ("categorical" in flags)
    model, _ = load_model(out / "checkpoint.npz")
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    c = model.config
    assert c["likelihood"] == given["--likelihood"]
    assert c["gaussian_variance"] == given.get("--gaussian-variance", "shared")
    assert (c["sigma"], c["sigma_min"], c["levels"]) == (float(given.get("--sigma", 1.0)),
                                                         float(given.get("--sigma-min", 1e-3)),
                                                         int(given.get("--levels", 256)))


def test_objective_and_prior_flags_train_evaluate_sample_and_resume(tmp_path, capsys):
    """--kl-warmup-epochs/--kl-warmup-start, --iw-samples and --prior mog --prior-components reach the run, are
    saved with it (a resume keeps them), and evaluate / sample use the mixture."""
    out = tmp_path / "run"
    flags = ["--kl-warmup-epochs", "2", "--kl-warmup-start", "0.1", "--iw-samples", "2", "--prior", "mog",
             "--prior-components", "3"]
    assert main(["train", "--epochs", "1", "--hidden", "8", "--z-dim", "3", "--out", str(out)] + flags) == 0
    ckpt = str(out / "checkpoint.npz")
    assert main(["train", "--resume", ckpt, "--epochs", "2"]) == 0
    saved = load_checkpoint(ckpt)
    assert (saved["epoch"], saved["model"]["prior"], saved["model"]["prior_components"]) == (2, "mog", 3)
    assert {k: saved["train"][k] for k in ("kl_warmup_epochs", "kl_warmup_start", "iw_samples")} == {
        "kl_warmup_epochs": 2, "kl_warmup_start": 0.1, "iw_samples": 2}
    assert [e["kl_weight"] for e in saved["progress"]["history"]][0] < 1.0
    assert main(["evaluate", ckpt, "--k", "20", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert np.isfinite(result["neg_iw_bound"]) and result["neg_iw_bound"] < result["neg_elbo"] + 1.0
    assert main(["sample", ckpt, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


@pytest.mark.parametrize("flags", [["--posterior", "flow", "--flow-steps", "2"],
                                   ["--prior", "vamp", "--pseudo-inputs", "4"]], ids=["flow", "vamp"])
def test_relaxation_flags_train_evaluate_and_sample(tmp_path, capsys, flags):
    """--posterior flow --flow-steps and --prior vamp --pseudo-inputs (derivations/flows.md, prior.md) reach the
    run and its checkpoint; evaluate at z_dim 2 prints the exact log p(x) and the gap (for the flow from the
    sampled ELBO, with its standard error, and without the ELBO surgery); sample draws from the prior."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)] + flags) == 0
    ckpt = str(out / "checkpoint.npz")
    saved = load_checkpoint(ckpt)["model"]
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    assert {k: saved[k] for k in ("posterior", "flow_steps", "prior", "pseudo_inputs")} == {
        "posterior": given.get("--posterior", "diagonal"), "flow_steps": int(given.get("--flow-steps", 4)),
        "prior": given.get("--prior", "normal"), "pseudo_inputs": int(given.get("--pseudo-inputs", 50))}
    capsys.readouterr()
    assert main(["evaluate", ckpt, "--k", "20", "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert np.isfinite(result["posterior_gap"]) and "-log p(x) (quadrature)" in printed
    assert ("posterior_gap_se" in result and result["posterior_gap_se"] is not None) == ("flow" in flags)
    assert ("surgery_skipped" in result) == ("flow" in flags)
    assert main(["sample", ckpt, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_made_decoder_trains_evaluates_and_samples(tmp_path, capsys):
    """--decoder made --made-hidden reach the run and its checkpoint; evaluate (without the quadrature, one MADE
    pass per example and grid point) and sample (D passes) run from it."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--decoder", "made", "--made-hidden", "8,8", "--out", str(out)]) == 0
    ckpt = str(out / "checkpoint.npz")
    saved = load_checkpoint(ckpt)["model"]
    assert (saved["decoder"], list(saved["made_hidden"])) == ("made", [8, 8])
    assert main(["evaluate", ckpt, "--k", "20", "--exact", "no", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert np.isfinite(result["neg_iw_bound"]) and result["neg_iw_bound"] < result["neg_elbo"] + 1.0
    assert main(["sample", ckpt, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


# ---- what the user typed is never ignored, and no run is lost ----------------------------------------------------

def test_resume_applies_a_typed_lr_even_when_it_is_the_default(tmp_path, capsys):
    """`train --lr 0.01`, then `train --resume CK --lr 0.001`: 0.001 is the parser's default, so the old command
    line dropped it and trained on at 0.01, exiting 0."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "0.01", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "checkpoint.npz"), "--lr", "0.001", "--epochs", "2"]) == 0
    assert "lr 0.01 -> 0.001" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt["train"]["lr"] == 0.001 and ckpt["optim"]["lr"] == 0.001 and ckpt["epoch"] == 2
    status, _, err = run(["train", "--resume", str(out / "checkpoint.npz"), "--z-dim", "8"], capsys)
    assert_one_line_error(status, err, "--z-dim cannot change when resuming", "train")


def test_a_second_run_into_the_same_folder_is_refused_in_one_line(digits_z2, tmp_path, capsys):
    out = shutil.copytree(digits_z2[1], tmp_path / "run")
    before = (out / "checkpoint.npz").read_bytes()
    status, _, err = run(["train", *TINY, "--out", str(out)], capsys)
    assert_one_line_error(status, err, "already holds a checkpoint", "train")
    assert "--resume" in err[0] and (out / "checkpoint.npz").read_bytes() == before
    assert main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.npz")["model"]["hidden"] == [8]


def test_a_failed_start_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--activation", "gelu"]) == 2
    assert main(["train", "--resume", "missing.npz"]) == 2
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "activation must be one of" in err[0]


def test_log_every_zero_prints_the_header_and_the_result(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--log-every", "0", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4 and printed[1].startswith("epoch    2/2")      # header, result, files, curves


def test_help_documents_every_train_option_with_its_default(capsys):
    import dataclasses

    from minivae.config import TrainConfig
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert text.count("(default: ") >= len(dataclasses.fields(TrainConfig))
    for command in ("sample", "reconstruct", "interpolate", "latent", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "(default: None)" not in capsys.readouterr().out, command


def test_a_picture_named_jpg_is_refused_before_any_work(digits_z2, tmp_path, capsys):
    status, _, err = run(["sample", str(digits_z2[1] / "checkpoint.npz"), "--out", str(tmp_path / "s.jpg")], capsys)
    assert_one_line_error(status, err, "must be a .png file", "sample")
    assert not (tmp_path / "s.jpg").exists()


@pytest.mark.fault
def test_the_command_line_reports_a_fault_in_one_line(good_run, inf_after_step, capsys):
    """A weight turned NaN in training (minivae/health.py's report) is one line, and the run kept as it was."""
    inf_after_step(3, "dec.0.W")
    status, _, err = run(["train", "--hidden", "16", "--z-dim", "3", "--batch-size", "100", "--epochs", "1",
                          "--out", str(good_run.out), "--overwrite"], capsys)
    assert_one_line_error(status, err, "epoch 1: the training loss is nan at step ", "train")
    assert "'dec.0.W'" in err[0] and "left as it was" in err[0]
    good_run.assert_untouched()


# ---- the datasets of minivae/data.py from the command line -------------------------------------------------------

def mnist_folder(tmp_path):
    (tmp_path / "mnist").mkdir()
    write_idx_folder(tmp_path / "mnist", small_mnist(n_train=20, n_test=8), gz={STEMS[0], STEMS[2]})
    return tmp_path / "mnist"


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_train_then_evaluate_mnist_from_a_folder(tmp_path, monkeypatch, capsys, binarize):
    """evaluate finds the same data through the checkpoint's train config, from another working folder."""
    monkeypatch.chdir(tmp_path)
    mnist_folder(tmp_path)
    # z_dim 3: evaluate's quadrature over z (z_dim <= 2) would take seconds on 784 dimensions
    assert main(["train", "--dataset", "mnist", "--data-dir", "mnist", "--epochs", "1", "--hidden", "8",
                 "--z-dim", "3", "--binarize", binarize, "--out", "run"]) == 0
    assert "on mnist (20 train / 8 held out)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["data_dir"] == str(tmp_path / "mnist")        # stored absolute
    assert metrics["config"]["binarize"] == binarize

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                                            # evaluate from another folder
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.npz"), "--k", "20", "--json", "e.json"]) == 0
    result = json.loads((elsewhere / "e.json").read_text())
    # the same held-out data (for dynamic: the same fixed binary sample): the mean of 10 draws per example lies
    # within a few standard errors of the last epoch's one-draw held-out -ELBO
    assert abs(result["neg_elbo"] - metrics["final"]["heldout_neg_elbo"]) < 5 * result["neg_elbo_se"] + 1.0


def test_a_checkpoint_works_after_its_data_folder_moved(tmp_path, monkeypatch, capsys):
    """The checkpoint records the image shape, the dataset and the binarisation: sample needs no data at all,
    and evaluate, reconstruct, interpolate and latent read the held-out images from --data-dir when the folder
    the checkpoint names has moved (those subcommands used to refuse --data-dir while the error asked for it)."""
    monkeypatch.chdir(tmp_path)
    mnist_folder(tmp_path)
    assert main(["train", "--dataset", "mnist", "--data-dir", "mnist", *TINY, "--out", "run"]) == 0
    (tmp_path / "mnist").rename(tmp_path / "moved")
    ck = str(tmp_path / "run" / "checkpoint.npz")
    capsys.readouterr()
    assert main(["sample", ck, "--n", "4"]) == 0
    status, _, err = run(["evaluate", ck, "--k", "5", "--exact", "no"], capsys)
    assert_one_line_error(status, err, "pass --data-dir", "evaluate")
    assert main(["evaluate", ck, "--k", "5", "--exact", "no", "--data-dir", "moved"]) == 0
    for command in (["reconstruct", ck, "--n", "4"], ["interpolate", ck, "--pairs", "1"], ["latent", ck]):
        assert main([*command, "--data-dir", "moved"]) == 0, command
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.npz", "interpolations.png", "latent_scatter.png", "loss_curves.png", "manifold.png",
        "metrics.json", "reconstructions.png", "samples.png"]


def test_train_synthetic_needs_the_gaussian_likelihood(tmp_path, capsys):
    assert main(["train", "--dataset", "synthetic", "--likelihood", "gaussian", *TINY,
                 "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    capsys.readouterr()
    status, _, err = run(["train", "--dataset", "synthetic", *TINY, "--out", str(tmp_path / "run2")], capsys)
    assert_one_line_error(status, err, "gaussian likelihood", "train")


# ---- bad input: exit 2, one line naming the problem, nothing written --------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good checkpoint (z_dim 3), one whose parameters do not fit the architecture it names, one of another
    format version, a foreign npz, a garbage file, a folder, and more broken files."""
    from minivae.train import train
    root = tmp_path_factory.mktemp("bad_input")
    train(out=str(root / "run"), epochs=1, hidden=(8,), z_dim=3, batch_size=200, log=lambda s: None)
    ck = root / "run" / "checkpoint.npz"
    with np.load(ck) as z:
        data = {k: z[k] for k in z.files}
    np.savez(root / "arch.npz", **{**data, "param/enc.0.W": np.zeros((64, 12), np.float32)})
    np.savez(root / "v7.npz", **{**data, "format": np.array(7)})
    np.savez(root / "foreign.npz", weights=np.ones(3))
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "folder").mkdir()
    (root / "file").write_text("x")
    nan = dict(data)
    nan["param/dec.out.W"] = np.where(np.arange(nan["param/dec.out.W"].size).reshape(nan["param/dec.out.W"].shape)
                                      == 0, np.nan, nan["param/dec.out.W"]).astype(np.float32)
    os.makedirs(root / "nan")
    np.savez(root / "nan" / "checkpoint.npz", **nan)
    np.save(root / "array.npy", np.ones(3))
    bad_train = json.loads(str(data["train"]))
    np.savez(root / "badtrain.npz", **{**data, "train": np.array(json.dumps({**bad_train, "z_dim": -1}))})
    return {"ck": str(ck), "arch": str(root / "arch.npz"), "v7": str(root / "v7.npz"),
            "foreign": str(root / "foreign.npz"), "garbage": str(root / "garbage.npz"),
            "dir": str(root / "folder"), "missing": str(root / "missing.npz"), "file": str(root / "file"),
            "nan": str(root / "nan" / "checkpoint.npz"), "npy": str(root / "array.npy"),
            "json": str(root / "run" / "metrics.json"), "badtrain": str(root / "badtrain.npz"), "root": root}


TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--z-dim", "3", "--batch-size", "200", "--out", "{root}/out"]

CLI_CASES = {
    # train: numbers out of range, unknown names
    "train --batch-size 0": (TRAIN + ["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    "train --batch-size -3": (TRAIN + ["--batch-size", "-3"], "batch_size must be a positive integer, got -3"),
    "train --batch-size 2.5": (TRAIN + ["--batch-size", "2.5"], "argument --batch-size: invalid int value"),
    "train --epochs 0": (TRAIN + ["--epochs", "0"], "epochs must be a positive integer, got 0"),
    "train --epochs -5": (TRAIN + ["--epochs", "-5"], "epochs must be a positive integer, got -5"),
    "train --epochs ten": (TRAIN + ["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    "train --hidden 0": (TRAIN + ["--hidden", "0"], "argument --hidden: layer sizes must be positive"),
    "train --hidden -3": (TRAIN + ["--hidden=-3"], "argument --hidden: layer sizes must be positive"),
    "train --hidden 4,x": (TRAIN + ["--hidden", "4,x"], "argument --hidden: "),
    "train --z-dim 0": (TRAIN + ["--z-dim", "0"], "z_dim must be a positive integer, got 0"),
    "train --z-dim -1": (TRAIN + ["--z-dim", "-1"], "z_dim must be a positive integer, got -1"),
    "train --checkpoint-every 0": (TRAIN + ["--checkpoint-every", "0"], "checkpoint_every must be a positive"),
    "train --seed -1": (TRAIN + ["--seed", "-1"], "seed must be a non-negative integer"),
    "train --lr -1": (TRAIN + ["--lr", "-1"], "lr must be > 0, got -1.0"),
    "train --lr nan": (TRAIN + ["--lr", "nan"], "lr must be a finite number, got nan"),
    "train --lr inf": (TRAIN + ["--lr", "inf"], "lr must be a finite number"),
    "train --beta -2": (TRAIN + ["--beta", "-2"], "beta must be >= 0, got -2.0"),
    "train --beta nan": (TRAIN + ["--beta", "nan"], "beta must be a finite number"),
    "train --activation swish": (TRAIN + ["--activation", "swish"], "activation must be one of"),
    "train --likelihood poisson": (TRAIN + ["--likelihood", "poisson"], "likelihood must be one of"),
    "train --dtype float16": (TRAIN + ["--dtype", "float16"], "dtype must be one of float32, float64"),
    "train --device tpu": (TRAIN + ["--device", "tpu"], "device must be one of"),
    "train --dataset imagenet": (TRAIN + ["--dataset", "imagenet"], "dataset must be one of"),
    "train --optimizer rmsprop": (TRAIN + ["--optimizer", "rmsprop"], "optimizer must be one of adam, sgd"),
    "train --prior cauchy": (TRAIN + ["--prior", "cauchy"], "prior must be one of"),
    "train --iw-samples 0": (TRAIN + ["--iw-samples", "0"], "iw_samples must be"),
    "train unknown option": (TRAIN + ["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    "train --out a file": (TRAIN + ["--out", "{file}"], "file' exists and is not a folder"),
    # train: the likelihood's, the posterior's, the prior's and the decoder's options
    "train --gaussian-variance diagonal": (TRAIN + ["--likelihood", "gaussian", "--gaussian-variance", "diagonal"],
                                           "gaussian_variance must be one of"),
    "train --sigma 0": (TRAIN + ["--likelihood", "gaussian", "--gaussian-variance", "fixed", "--sigma", "0"],
                        "sigma must be"),
    "train --sigma -1": (TRAIN + ["--likelihood", "gaussian", "--sigma", "-1"], "sigma must be"),
    "train --sigma-min -1": (TRAIN + ["--likelihood", "gaussian", "--sigma-min", "-1"], "sigma_min must be"),
    "train --levels 1": (TRAIN + ["--likelihood", "categorical", "--levels", "1"], "levels must be"),
    "train --flow-steps 0": (TRAIN + ["--flow-steps", "0"], "flow_steps must be"),
    "train --posterior iaf": (TRAIN + ["--posterior", "iaf"], "posterior must be one of"),
    "train --pseudo-inputs 0": (TRAIN + ["--pseudo-inputs", "0"], "pseudo_inputs must be"),
    "train --free-bits -1": (TRAIN + ["--free-bits", "-1"], "free_bits must be >= 0"),
    "train --free-bits with --iw-samples": (TRAIN + ["--free-bits", "2", "--iw-samples", "2"], "free_bits"),
    "train --decoder made with a gaussian": (TRAIN + ["--decoder", "made", "--likelihood", "gaussian"], "decoder"),
    # train: the data options (offline: the download URLs are a closed local port)
    "train --binarize otsu": (TRAIN + ["--binarize", "otsu"],
                              "binarize must be one of none, threshold, sample, dynamic"),
    "train --data-dir missing": (TRAIN + ["--dataset", "mnist", "--data-dir", "{root}/no-such-folder"],
                                 "no-such-folder' is not a folder"),
    "train --data-dir with the digits": (TRAIN + ["--data-dir", "{dir}"],
                                         "data_dir is read only by the datasets mnist, fashion-mnist"),
    "train mnist, nothing to download": (TRAIN + ["--dataset", "mnist", "--data-dir", "{dir}"],
                                         "could not download http://127.0.0.1:"),
    "train fashion-mnist, no network": (TRAIN + ["--dataset", "fashion-mnist"], "or pass --data-dir"),
    "train synthetic, binarised": (TRAIN + ["--dataset", "synthetic", "--likelihood", "gaussian", "--binarize",
                                            "sample"], "to binarize it ('sample')"),
    # train: bad files to resume from
    "train --resume missing": (["train", "--resume", "{missing}"], "missing.npz': no such file"),
    "train --resume folder": (["train", "--resume", "{dir}"], "folder' is a directory, not a file"),
    "train --resume garbage": (["train", "--resume", "{garbage}"], "garbage.npz' cannot be read"),
    "train --resume other architecture": (["train", "--resume", "{arch}"],
                                          "parameter 'enc.0.W' has shape (64, 12), the architecture needs (64, 8)"),
    "train --resume, z-dim changed": (["train", "--resume", "{ck}", "--z-dim", "5"],
                                      "--z-dim cannot change when resuming"),
    "train --resume, no epochs": (["train", "--resume", "{ck}", "--epochs", "0"], "epochs must be a positive"),
    # evaluate
    "evaluate missing": (["evaluate", "{missing}"], "missing.npz': no such file"),
    "evaluate folder": (["evaluate", "{dir}"], "folder' is a directory, not a file"),
    "evaluate garbage": (["evaluate", "{garbage}"], "garbage.npz' cannot be read"),
    "evaluate other architecture": (["evaluate", "{arch}"], "parameter 'enc.0.W' has shape (64, 12)"),
    "evaluate other format version": (["evaluate", "{v7}"], "v7.npz' has format version 7"),
    "evaluate foreign npz": (["evaluate", "{foreign}"], "foreign.npz' is not a minivae checkpoint"),
    "evaluate --k 0": (["evaluate", "{ck}", "--k", "0"], "k must be a positive integer, got 0"),
    "evaluate --dtype float16": (["evaluate", "{ck}", "--dtype", "float16"], "dtype must be 'float32' or"),
    "evaluate --device tpu": (["evaluate", "{ck}", "--device", "tpu"], "device must be one of cpu, gpu, strict"),
    "evaluate --json folder": (["evaluate", "{ck}", "--json", "{dir}"], "--json '"),
    "evaluate --json in a missing folder": (["evaluate", "{ck}", "--json", "{root}/no/such/r.json"], "--json '"),
    "evaluate --exact bogus": (["evaluate", "{ck}", "--exact", "bogus"], "argument --exact: invalid choice"),
    "evaluate --exact yes at z_dim 3": (["evaluate", "{ck}", "--exact", "yes"], "--exact yes needs z_dim 1 or 2"),
    # pictures
    "interpolate --steps 1": (["interpolate", "{ck}", "--steps", "1"], "steps must be an integer >= 2"),
    "interpolate --pairs 0": (["interpolate", "{ck}", "--pairs", "0"], "pairs must be an integer >= 1"),
    "reconstruct --device tpu": (["reconstruct", "{ck}", "--device", "tpu"], "device must be one of"),
    "latent folder": (["latent", "{dir}"], "folder' is a directory, not a file"),
    "sample garbage": (["sample", "{garbage}"], "garbage.npz' cannot be read"),
    # checkpoint faults, through every command that reads a checkpoint
    **{f"{cmd} {kind}": ([cmd, "{%s}" % kind] + extra, message)
       for cmd, extra in (("evaluate", ["--k", "2"]), ("sample", []), ("reconstruct", []), ("interpolate", []),
                          ("latent", []))
       for kind, message in (("nan", "checkpoint.npz' is corrupted: parameter 'dec.out.W' holds 1 NaN or infinite"),
                             ("npy", "array.npy' is a single NumPy array (.npy), not a minivae checkpoint"),
                             ("json", "metrics.json' is not a minivae checkpoint: not an .npz archive"),
                             ("file", "file' is not a minivae checkpoint: not an .npz archive"),
                             ("badtrain", "badtrain.npz' holds an invalid training config: z_dim must be"))},
    **{f"train --resume {kind}": (["train", "--resume", "{%s}" % kind], message)
       for kind, message in (("nan", "checkpoint.npz' is corrupted: parameter 'dec.out.W' holds 1 NaN"),
                             ("npy", "array.npy' is a single NumPy array (.npy)"),
                             ("json", "metrics.json' is not a minivae checkpoint"),
                             ("badtrain", "badtrain.npz' holds an invalid training config"))},
    # the command itself
    "no command": ([], "the following arguments are required: command"),
    "unknown command": (["fly"], "argument command: invalid choice: 'fly'"),
}


@pytest.mark.bad_input
@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_cli_bad_input(case, files, capsys, monkeypatch):
    argv, needle = CLI_CASES[case]
    monkeypatch.chdir(files["root"])
    status, out, err = run([a.format(**files) for a in argv], capsys)
    assert_one_line_error(status, err, needle)
    assert not os.path.exists(os.path.join(files["root"], "out"))            # a refused start creates nothing


@pytest.mark.bad_input
def test_cli_unreadable_checkpoint(files, capsys, monkeypatch):
    """Root reads any file, so an unreadable one is simulated: opening it raises PermissionError."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_module.np, "load", denied)
    status, _, err = run(["evaluate", files["ck"]], capsys)
    assert_one_line_error(status, err, "checkpoint.npz' cannot be read: Permission denied", "evaluate")


@pytest.mark.bad_input
def test_gpu_without_cupy_is_one_line(tmp_path, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    status, _, err = run(["train", *TINY, "--device", "gpu", "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(status, err, "--device gpu needs CuPy", "train")
    assert not (tmp_path / "o").exists()


@pytest.mark.bad_input
def test_refused_resumes_leave_the_checkpoint_folder_as_it_was(files):
    """After the refused resumes above, the good checkpoint's folder is as the fixture left it."""
    names = sorted(os.listdir(os.path.dirname(files["ck"])))
    assert names == ["checkpoint.npz", "metrics.json"]
    assert os.listdir(os.path.dirname(files["nan"])) == ["checkpoint.npz"]      # the refused NaN resume wrote nothing
    assert json.loads(open(os.path.join(os.path.dirname(files["ck"]), "metrics.json")).read())["final"]["epoch"] == 1
    assert open(files["file"]).read() == "x"                                  # the --out that is a file
