"""Bad input everywhere a user can give it, the kinds the other test files do not cover yet: on the command line
a non-zero exit and one message naming the bad argument (no traceback, nothing written); through the API a
ValueError (or CheckpointError, a ValueError) naming it, raised before any training step.

Each parametrised case is its own test; the summary at the end of a run counts cases and test functions
separately (tests/conftest.py). argparse's own errors (a bad int, an unknown option) print its usage line
before the one error line, as argparse always does; every other error is exactly one line.
"""
import json
import os

import numpy as np
import pytest

import minivae.checkpoint as checkpoint_module
import minivae.train as train_module
from minivae.checkpoint import CheckpointError, atomic_write, load_model, restore_params
from minivae.cli import main
from minivae.data import load_dataset
from minivae.model import VAE
from minivae.train import train

pytestmark = pytest.mark.bad_input

QUICK = dict(hidden=(8,), z_dim=3, batch_size=200, log=lambda s: None)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good checkpoint (z_dim 3), one whose parameters do not fit the architecture it names, one of another
    format version, a foreign npz, a garbage file and a folder."""
    root = tmp_path_factory.mktemp("bad_input")
    train(out=str(root / "run"), epochs=1, **QUICK)
    ck = root / "run" / "checkpoint.npz"
    with np.load(ck) as z:
        data = {k: z[k] for k in z.files}
    np.savez(root / "arch.npz", **{**data, "param/enc.0.W": np.zeros((64, 12), np.float32)})
    np.savez(root / "v7.npz", **{**data, "format": np.array(7)})
    np.savez(root / "foreign.npz", weights=np.ones(3))
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "folder").mkdir()
    (root / "file").write_text("x")
    return {"ck": str(ck), "arch": str(root / "arch.npz"), "v7": str(root / "v7.npz"),
            "foreign": str(root / "foreign.npz"), "garbage": str(root / "garbage.npz"),
            "dir": str(root / "folder"), "missing": str(root / "missing.npz"), "file": str(root / "file"),
            "root": root}


def run_cli(argv, files, capsys):
    """(exit status, stderr lines) of ``minivae argv`` run in-process; argparse's SystemExit becomes a status."""
    argv = [a.format(**files) for a in argv]
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err.strip().splitlines()


TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--z-dim", "3", "--batch-size", "200", "--out", "{root}/out"]

CLI_CASES = {
    # train: numbers out of range, unknown names, bad files to resume from
    "train --hidden 0": (TRAIN + ["--hidden", "0"], "argument --hidden: layer sizes must be positive"),
    "train --hidden -3": (TRAIN + ["--hidden=-3"], "argument --hidden: layer sizes must be positive"),
    "train --z-dim -1": (TRAIN + ["--z-dim", "-1"], "z_dim must be a positive integer, got -1"),
    "train --epochs -5": (TRAIN + ["--epochs", "-5"], "epochs must be a positive integer, got -5"),
    "train --checkpoint-every 0": (TRAIN + ["--checkpoint-every", "0"], "checkpoint_every must be a positive"),
    "train --seed -1": (TRAIN + ["--seed", "-1"], "seed must be a non-negative integer"),
    "train --batch-size 2.5": (TRAIN + ["--batch-size", "2.5"], "argument --batch-size: invalid int value"),
    "train --lr inf": (TRAIN + ["--lr", "inf"], "lr must be a finite number"),
    "train --beta nan": (TRAIN + ["--beta", "nan"], "beta must be a finite number"),
    "train --optimizer rmsprop": (TRAIN + ["--optimizer", "rmsprop"], "optimizer must be one of adam, sgd"),
    "train --prior cauchy": (TRAIN + ["--prior", "cauchy"], "prior must be one of"),
    "train --sigma -1": (TRAIN + ["--likelihood", "gaussian", "--sigma", "-1"], "sigma must be"),
    "train --levels 1": (TRAIN + ["--likelihood", "categorical", "--levels", "1"], "levels must be"),
    "train --iw-samples 0": (TRAIN + ["--iw-samples", "0"], "iw_samples must be"),
    "train unknown option": (TRAIN + ["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    "train --resume missing": (["train", "--resume", "{missing}"], "missing.npz': no such file"),
    "train --resume folder": (["train", "--resume", "{dir}"], "folder' is a directory, not a file"),
    "train --resume garbage": (["train", "--resume", "{garbage}"], "garbage.npz' cannot be read"),
    "train --resume other architecture": (["train", "--resume", "{arch}"],
                                          "parameter 'enc.0.W' has shape (64, 12), the architecture needs (64, 8)"),
    "train --resume, z-dim changed": (["train", "--resume", "{ck}", "--z-dim", "5"],
                                      "--z-dim cannot change when resuming"),
    "train --resume, no epochs": (["train", "--resume", "{ck}", "--epochs", "0"], "epochs must be a positive"),
    # evaluate
    "evaluate folder": (["evaluate", "{dir}"], "folder' is a directory, not a file"),
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
    # the command itself
    "no command": ([], "the following arguments are required: command"),
    "unknown command": (["fly"], "argument command: invalid choice: 'fly'"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_cli_bad_input(case, files, capsys):
    argv, needle = CLI_CASES[case]
    status, err = run_cli(argv, files, capsys)
    assert status != 0 and err and needle in err[-1], (status, err)
    if not err[-1].startswith(("minivae: error:", "usage:")) and "argument" not in err[-1]:
        assert len(err) == 1, err                                           # ours: exactly one line
    assert not os.path.exists(os.path.join(files["root"], "out", "checkpoint.npz"))


def test_cli_unreadable_checkpoint(files, capsys, monkeypatch):
    """Root reads any file, so an unreadable one is simulated: opening it raises PermissionError."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_module.np, "load", denied)
    status, err = run_cli(["evaluate", "{ck}"], files, capsys)
    assert status == 2 and len(err) == 1 and "checkpoint.npz' cannot be read: Permission denied" in err[0], err


# ---- the model's API: shapes and dtypes ---------------------------------------------------------------------

def model64():
    return VAE(6, 2, hidden=(3,), dtype="float64")


API_CASES = {
    "x float16": (lambda m: m.loss_and_grads(np.zeros((3, 6), np.float16), np.zeros((3, 2))),
                  "x must have dtype float64 like the model, got float16"),
    "x float32 into a float64 model": (lambda m: m.loss_and_grads(np.zeros((3, 6), np.float32), np.zeros((3, 2))),
                                       "x must have dtype float64"),
    "x bool": (lambda m: m.loss_and_grads(np.zeros((3, 6), bool), np.zeros((3, 2))), "x must have dtype"),
    "x complex": (lambda m: m.loss_and_grads(np.zeros((3, 6), complex), np.zeros((3, 2))), "x must have dtype"),
    "eps integer": (lambda m: m.loss_and_grads(np.zeros((3, 6)), np.zeros((3, 2), np.int64)), "eps must have dtype"),
    "encode x object": (lambda m: m.encode(np.zeros((3, 6), object)), "x must have dtype"),
    "encode x 3-D": (lambda m: m.encode(np.zeros((3, 6, 1))), r"x must have shape \(N, x_dim=6\)"),
    "decode z too wide": (lambda m: m.decode(np.zeros((3, 3))), r"z must have shape \(N, z_dim=2\), got \(3, 3\)"),
    "decode empty z": (lambda m: m.decode(np.zeros((0, 2))), r"z is an empty batch"),
    "decode z a list": (lambda m: m.decode([[0.0, 0.0]]), "z must be an array"),
    "reconstruction_nll rows differ": (lambda m: m.reconstruction_nll(np.zeros((3, 6)), np.zeros((2, 2))),
                                       "z must have one row per example of x"),
    "x_dim 2.5": (lambda m: VAE(2.5, 2), "x_dim must be a positive integer"),
    "z_dim True": (lambda m: VAE(6, True), "z_dim must be a positive integer"),
    "hidden negative": (lambda m: VAE(6, 2, hidden=(4, -1)), "hidden must be a positive integer"),
    "load_model device tpu": (lambda m: load_model("unused.npz", device="tpu"), "device must be one of"),
    "load_model dtype float16": (lambda m: load_model("unused.npz", dtype="float16"), "dtype must be 'float32'"),
}


@pytest.mark.parametrize("case", API_CASES, ids=list(API_CASES))
def test_api_bad_input(case):
    call, message = API_CASES[case]
    with pytest.raises(ValueError, match=message):
        call(model64())


def test_params_of_another_architecture_are_refused_naming_the_parameter():
    small, wide = VAE(6, 2, hidden=(3,)), VAE(6, 2, hidden=(5,))
    with pytest.raises(CheckpointError, match=r"parameter 'enc.0.W' has shape \(6, 5\), the architecture needs"):
        restore_params(small, {k: np.asarray(v) for k, v in wide.params.items()}, "wide.npz")
    gaussian = VAE(6, 2, hidden=(3,), likelihood="gaussian")
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        restore_params(small, {k: np.asarray(v) for k, v in gaussian.params.items()}, "gaussian.npz")


def test_writing_over_a_folder_names_the_folder(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError, match="out.json"):
        atomic_write(tmp_path / "out.json", lambda f: f.write(b"{}"))
    assert os.listdir(tmp_path) == ["out.json"]


# ---- data given to train(): refused before training, naming the data -------------------------------------

def with_data(monkeypatch, edit):
    data = load_dataset("digits")
    x_train, x_test = edit(data.x_train.copy(), data.x_test.copy())
    monkeypatch.setattr(train_module, "load_dataset", lambda *a: data._replace(x_train=x_train, x_test=x_test))

    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(VAE, "loss_and_grads", refuse)


def _set(a, value, where=(0, 0)):
    a[where] = value
    return a


DATA_CASES = {
    "bernoulli target 1.5": (lambda tr, te: (_set(tr, 1.5), te), r"training data must lie in \[0, 1\]"),
    "bernoulli target -0.2": (lambda tr, te: (_set(tr, -0.2), te), r"training data must lie in \[0, 1\]"),
    "NaN in held-out data": (lambda tr, te: (tr, _set(te, np.nan)), "held-out data contains 1 NaN"),
    "inf in training data": (lambda tr, te: (_set(tr, np.inf), te), "training data contains 1 NaN or infinite"),
    "empty training data": (lambda tr, te: (tr[:0], te), "training data is empty"),
    "integer training data": (lambda tr, te: (tr.astype(np.int64), te), "training data must have a floating dtype"),
    "data beyond float32": (lambda tr, te: (_set(tr, 1e39), te), "beyond the float32 range"),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_bad_training_data_is_refused_before_training(case, tmp_path, monkeypatch):
    edit, message = DATA_CASES[case]
    with_data(monkeypatch, edit)
    likelihood = "gaussian" if case == "data beyond float32" else "bernoulli"
    with pytest.raises(ValueError, match=message):
        train(out=str(tmp_path / "out"), epochs=1, likelihood=likelihood, **QUICK)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, message", [
    ("hidden", (0,), "hidden must be a positive integer"),
    ("activation", "swish", "activation must be one of"),
    ("checkpoint_every", 0, "checkpoint_every must be a positive integer"),
    ("likelihood", "poisson", "likelihood must be one of"),
])
def test_train_api_bad_arguments(tmp_path, monkeypatch, field, value, message):
    with_data(monkeypatch, lambda tr, te: (tr, te))
    with pytest.raises(ValueError, match=message):
        train(out=str(tmp_path / "out"), epochs=1, **{**QUICK, field: value})


def test_train_api_resume_from_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        train(resume=str(tmp_path / "nope.npz"))


def test_refused_resumes_leave_the_checkpoint_folder_as_it_was(files):
    """After the refused resumes above, the good checkpoint's folder is as the fixture left it."""
    names = sorted(os.listdir(os.path.dirname(files["ck"])))
    assert names == ["checkpoint.npz", "metrics.json"]
    assert json.loads(open(os.path.join(os.path.dirname(files["ck"]), "metrics.json")).read())["final"]["epoch"] == 1
