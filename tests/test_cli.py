"""Tests for minivae/cli.py: ``minivae train`` / ``evaluate`` end to end, ``python -m minivae``, and bad input
giving a non-zero exit with one line on stderr and no traceback."""
import json
import subprocess
import sys

import pytest

from minivae.cli import main

SMALL = ["--epochs", "2", "--hidden", "16", "--z-dim", "2"]


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch    2/2" in printed and "held-out -ELBO" in printed
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert main(["evaluate", str(out / "checkpoint.npz"), "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    assert "negative ELBO" in printed and "KL" in printed
    result = json.loads((tmp_path / "e.json").read_text())
    # evaluate uses the same held-out split and, with the training seed, the same noise as the last epoch
    assert main(["evaluate", str(out / "checkpoint.npz"), "--seed", "1", "--json", str(tmp_path / "f.json")]) == 0
    same = json.loads((tmp_path / "f.json").read_text())
    assert same["neg_elbo"] == pytest.approx(final["heldout_neg_elbo"], rel=1e-6)
    assert result["neg_elbo"] == pytest.approx(result["nll"] + result["kl"])


def test_hidden_none_trains_a_linear_vae(tmp_path):
    assert main(["train", "--epochs", "1", "--hidden", "none", "--out", str(tmp_path)]) == 0


def test_python_dash_m_runs_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minivae", "train", *SMALL, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoint.npz").exists()


@pytest.mark.parametrize("argv, needle", [
    (["train", "--batch-size", "0"], "batch_size"),
    (["train", "--batch-size", "-3"], "batch_size"),
    (["train", "--epochs", "0"], "epochs"),
    (["train", "--lr", "-1"], "lr"),
    (["train", "--lr", "nan"], "lr"),
    (["train", "--activation", "swish"], "activation"),
    (["train", "--likelihood", "poisson"], "likelihood"),
    (["train", "--dtype", "float16"], "dtype"),
    (["train", "--device", "tpu"], "device"),
    (["train", "--dataset", "imagenet"], "dataset"),
    (["train", "--z-dim", "0"], "z_dim"),
    (["train", "--beta", "-2"], "beta"),
    (["evaluate", "missing.npz"], "missing.npz"),
])
def test_bad_input_one_line_no_traceback(tmp_path, argv, needle):
    done = subprocess.run([sys.executable, "-m", "minivae", *argv, *(["--out", str(tmp_path / "o")]
                           if argv[0] == "train" else [])], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


@pytest.mark.parametrize("argv", [["train", "--hidden", "4,x"], ["train", "--epochs", "ten"]])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *SMALL, "--out", str(f)]) == 2
    assert "out" in capsys.readouterr().err and f.read_text() == "x"


def test_evaluate_corrupted_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz" in err[0]


def test_gpu_without_cupy_is_one_line(tmp_path, capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    assert main(["train", *SMALL, "--device", "gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device gpu needs CuPy" in err[0]
