"""The ``minivae`` command on the datasets of minivae/data.py: train on MNIST files from a folder and evaluate the
checkpoint (which finds the same data through its train config), the synthetic dataset, and bad data options
giving one line on stderr. Offline: the download URLs point at a closed local port."""
import json

import pytest

from _data_helpers import STEMS, isolate, small_mnist, write_idx_folder
from minivae.cli import main

TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_train_then_evaluate_mnist_from_a_folder(tmp_path, monkeypatch, capsys, binarize):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    write_idx_folder(tmp_path / "mnist", small_mnist(n_train=20, n_test=8), gz={STEMS[0], STEMS[2]})
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
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.npz"), "--json", "e.json"]) == 0
    result = json.loads((elsewhere / "e.json").read_text())
    # the same held-out data (for dynamic: the same fixed binary sample): the mean of 10 draws per example lies
    # within a few standard errors of the last epoch's one-draw held-out -ELBO
    assert abs(result["neg_elbo"] - metrics["final"]["heldout_neg_elbo"]) < 5 * result["neg_elbo_se"] + 1.0


def test_a_checkpoint_works_after_its_data_folder_moved(tmp_path, monkeypatch, capsys):
    """The checkpoint records the image shape, the dataset and the binarisation: sample needs no data at all,
    and evaluate, reconstruct, interpolate and latent read the held-out images from --data-dir when the folder
    the checkpoint names has moved (those subcommands used to refuse --data-dir while the error asked for it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    write_idx_folder(tmp_path / "mnist", small_mnist(n_train=20, n_test=8), gz={STEMS[0], STEMS[2]})
    assert main(["train", "--dataset", "mnist", "--data-dir", "mnist", *TINY, "--out", "run"]) == 0
    (tmp_path / "mnist").rename(tmp_path / "moved")
    ck = str(tmp_path / "run" / "checkpoint.npz")
    capsys.readouterr()
    assert main(["sample", ck, "--n", "4"]) == 0
    assert main(["evaluate", ck, "--k", "5", "--exact", "no"]) == 2
    assert "pass --data-dir" in capsys.readouterr().err
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
    assert main(["train", "--dataset", "synthetic", *TINY, "--out", str(tmp_path / "run2")]) == 2
    assert "gaussian likelihood" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--binarize", "otsu"], "binarize must be one of none, threshold, sample, dynamic"),
    (["--dataset", "mnist", "--data-dir", "no-such-folder"], "no-such-folder' is not a folder"),
    (["--data-dir", "."], "data_dir is read only by the datasets mnist, fashion-mnist"),
    (["--dataset", "mnist", "--data-dir", "."], "could not download http://127.0.0.1:"),
    (["--dataset", "fashion-mnist"], "or pass --data-dir"),
    (["--dataset", "synthetic", "--likelihood", "gaussian", "--binarize", "sample"], "to binarize it ('sample')"),
])
def test_bad_data_options_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minivae train: error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
