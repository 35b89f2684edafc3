"""Tests for minivae/cli.py: ``minivae train`` / ``evaluate`` end to end, ``python -m minivae``, and bad input
giving a non-zero exit with one line on stderr and no traceback."""
import json
import subprocess
import sys

import numpy as np
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
    # evaluate uses the same held-out split as training: with the training seed and one draw per example, the
    # ELBO of the last epoch; its mean of 10 draws lies within a few standard errors of it
    from minivae.checkpoint import load_model
    from minivae.data import load_dataset
    from minivae.evaluate import evaluate_elbo
    model, _ = load_model(out / "checkpoint.npz", dtype="float32")
    x = load_dataset("digits").x_test.astype(np.float32)
    assert evaluate_elbo(model, x, seed=1)["neg_elbo"] == pytest.approx(final["heldout_neg_elbo"], rel=1e-6)
    assert abs(result["neg_elbo"] - final["heldout_neg_elbo"]) < 0.5 and result["neg_elbo_se"] < 0.2
    assert result["neg_elbo"] == pytest.approx(result["nll"] + result["kl"])


def test_hidden_none_trains_a_linear_vae(tmp_path):
    """--hidden none: only the output layers exist (no enc.0 / dec.0), and the encoder mean is affine in x:
    mu(x) = x @ enc.mu.W + enc.mu.b, so mu(a x1 + (1 - a) x2) = a mu(x1) + (1 - a) mu(x2)."""
    from minivae.checkpoint import load_model
    assert main(["train", "--epochs", "1", "--hidden", "none", "--out", str(tmp_path)]) == 0
    model, _ = load_model(str(tmp_path / "checkpoint.npz"), dtype="float64")
    assert sorted(model.params) == ["dec.out.W", "dec.out.b", "enc.logvar.W", "enc.logvar.b", "enc.mu.W", "enc.mu.b"]
    x = np.random.default_rng(0).uniform(size=(3, model.params["enc.mu.W"].shape[0]))
    mu = np.asarray(model.encode(x)[0])
    np.testing.assert_allclose(mu, x @ np.asarray(model.params["enc.mu.W"]) + np.asarray(model.params["enc.mu.b"]),
                               rtol=1e-12, atol=1e-12)
    mix = np.asarray(model.encode(0.3 * x[:1] + 0.7 * x[1:2])[0])
    np.testing.assert_allclose(mix, 0.3 * mu[:1] + 0.7 * mu[1:2], rtol=1e-12, atol=1e-12)


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
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minivae train: error: argument --") and "Traceback" not in err[0]


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
    assert main(["train", *SMALL, "--epochs", "3", *flags, "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[-1]["heldout_neg_elbo"] < history[0]["heldout_neg_elbo"]
    assert main(["evaluate", str(out / "checkpoint.npz"), "--k", "20", "--exact", "no",
                 "--json", str(tmp_path / "e.json")]) == 0
    capsys.readouterr()
    result = json.loads((tmp_path / "e.json").read_text())
    assert np.isfinite(result["neg_iw_bound"]) and result["neg_iw_bound"] < result["neg_elbo"] + 1.0
    assert ("bits_per_dim" in result) == ("categorical" in flags)
    from minivae.checkpoint import load_model
    model, _ = load_model(out / "checkpoint.npz")
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    c = model.config
    assert c["likelihood"] == given["--likelihood"]
    assert c["gaussian_variance"] == given.get("--gaussian-variance", "shared")
    assert (c["sigma"], c["sigma_min"], c["levels"]) == (float(given.get("--sigma", 1.0)),
                                                         float(given.get("--sigma-min", 1e-3)),
                                                         int(given.get("--levels", 256)))


@pytest.mark.parametrize("flags, needle", [
    (["--likelihood", "gaussian", "--gaussian-variance", "diagonal"], "gaussian_variance"),
    (["--likelihood", "gaussian", "--gaussian-variance", "fixed", "--sigma", "0"], "sigma"),
    (["--likelihood", "gaussian", "--sigma-min", "-1"], "sigma_min"),
    (["--likelihood", "categorical", "--levels", "1"], "levels"),
])
def test_bad_likelihood_options_one_line(tmp_path, capsys, flags, needle):
    assert main(["train", *SMALL, *flags, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_objective_and_prior_flags_train_evaluate_sample_and_resume(tmp_path, capsys):
    """--kl-warmup-epochs/--kl-warmup-start, --iw-samples and --prior mog --prior-components reach the run, are
    saved with it (a resume keeps them), and evaluate / sample use the mixture."""
    from minivae.checkpoint import load_checkpoint
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
    capsys.readouterr()
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "bad"), "--prior", "cauchy"]) == 2
    assert "prior must be one of" in capsys.readouterr().err


# ---- what the user typed is never ignored, and no run is lost ----------------------------------------------------

def test_resume_applies_a_typed_lr_even_when_it_is_the_default(tmp_path, capsys):
    """`train --lr 0.01`, then `train --resume CK --lr 0.001`: 0.001 is the parser's default, so the old command
    line dropped it and trained on at 0.01, exiting 0."""
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--lr", "0.01", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "checkpoint.npz"), "--lr", "0.001", "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "lr 0.01 -> 0.001" in printed
    from minivae.checkpoint import load_checkpoint
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt["train"]["lr"] == 0.001 and ckpt["optim"]["lr"] == 0.001 and ckpt["epoch"] == 3
    assert main(["train", "--resume", str(out / "checkpoint.npz"), "--z-dim", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--z-dim cannot change when resuming" in err[0]


def test_a_second_run_into_the_same_folder_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a checkpoint" in err[0] and "--resume" in err[0]
    assert (out / "checkpoint.npz").read_bytes() == before
    assert main(["train", *SMALL, "--out", str(out), "--overwrite", "--epochs", "1"]) == 0


def test_a_failed_start_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--activation", "gelu"]) == 2
    assert main(["train", "--resume", "missing.npz"]) == 2
    assert not (tmp_path / "runs").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "activation must be one of" in err[0]


def test_log_every_zero_prints_the_header_and_the_result(tmp_path, capsys):
    assert main(["train", *SMALL, "--log-every", "0", "--out", str(tmp_path / "run")]) == 0
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


def test_a_picture_named_jpg_is_refused_before_any_work(tmp_path, capsys):
    assert main(["train", *SMALL, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run" / "checkpoint.npz"), "--out", str(tmp_path / "s.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err and not (tmp_path / "s.jpg").exists()


@pytest.mark.parametrize("flags", [["--posterior", "flow", "--flow-steps", "2"],
                                   ["--prior", "vamp", "--pseudo-inputs", "4"]], ids=["flow", "vamp"])
def test_relaxation_flags_train_evaluate_and_sample(tmp_path, capsys, flags):
    """--posterior flow --flow-steps and --prior vamp --pseudo-inputs (derivations/flows.md, prior.md) reach the
    run and its checkpoint; evaluate at z_dim 2 prints the exact log p(x) and the gap (for the flow from the
    sampled ELBO, with its standard error, and without the ELBO surgery); sample draws from the prior."""
    from minivae.checkpoint import load_checkpoint
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--z-dim", "2", "--out", str(out)] + flags) == 0
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


@pytest.mark.parametrize("flags, needle", [(["--flow-steps", "0"], "flow_steps"),
                                           (["--posterior", "iaf"], "posterior"),
                                           (["--pseudo-inputs", "0"], "pseudo_inputs"),
                                           (["--free-bits", "-1"], "free_bits"),
                                           (["--free-bits", "2", "--iw-samples", "2"], "free_bits")])
def test_bad_relaxation_options_one_line(tmp_path, capsys, flags, needle):
    assert main(["train", *SMALL, *flags, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_made_decoder_trains_evaluates_and_samples(tmp_path, capsys):
    """--decoder made --made-hidden reach the run and its checkpoint; evaluate (without the quadrature, one MADE
    pass per example and grid point) and sample (D passes) run from it."""
    from minivae.checkpoint import load_checkpoint
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--decoder", "made", "--made-hidden", "70,70", "--out", str(out)]) == 0
    ckpt = str(out / "checkpoint.npz")
    saved = load_checkpoint(ckpt)["model"]
    assert (saved["decoder"], list(saved["made_hidden"])) == ("made", [70, 70])
    assert main(["evaluate", ckpt, "--k", "20", "--exact", "no", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert np.isfinite(result["neg_iw_bound"]) and result["neg_iw_bound"] < result["neg_elbo"] + 1.0
    assert main(["sample", ckpt, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main(["train", *SMALL, "--decoder", "made", "--likelihood", "gaussian", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decoder" in err[0] and not (tmp_path / "g").exists()
