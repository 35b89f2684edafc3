"""Faults in training and in saving: each stops with one clear message naming the step and the cause, and the last
good checkpoint is byte-identical afterwards (SHA-256), with no temporary file left behind.

- A batch holding NaN, a NaN loss, a parameter that becomes inf (seen by the loss, and hidden from it by tanh),
  a learning rate of 1e6 (Adam: the KL runs past the clamp; SGD: the loss overflows), a broken state at Ctrl-C.
- An exception raised after n bytes of a checkpoint write, for many n, and at fsync and at the final rename; a
  real SIGKILL of a process blocked in the middle of a save, at three points; a disk-full error through the
  command line.
- An output folder that cannot be written: an error before training starts. The tests run as root here, and
  root ignores permission bits, so an unwritable folder is simulated (a path under a regular file; a
  permission error injected into the temporary-file creation); a chmod test runs only as a normal user.
"""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minivae.checkpoint as checkpoint_module
import minivae.optim as optim_module
import minivae.train as train_module
from minivae.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from minivae.cli import main
from minivae.data import load_dataset
from minivae.model import VAE
from minivae.rng import RNG
from minivae.train import TrainingError, train

pytestmark = pytest.mark.fault

QUICK = dict(hidden=(16,), z_dim=3, batch_size=100, log=lambda s: None)      # 15 steps per epoch on the digits
STEPS = 15


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_run(tmp_path):
    """An output folder holding the checkpoint of one good epoch, and its hash."""
    out = tmp_path / "run"
    train(out=str(out), epochs=1, **QUICK)
    return out, sha(out / "checkpoint.npz"), sorted(os.listdir(out))


def assert_untouched(good_run):
    out, digest, names = good_run
    assert sha(out / "checkpoint.npz") == digest
    assert sorted(os.listdir(out)) == names, os.listdir(out)          # no temporary file left behind


# ---- faults during training --------------------------------------------------------------------------------

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
        train(out=str(good_run[0]), epochs=1, overwrite=True, **QUICK)
    msg = str(e.value)
    assert msg.startswith(f"epoch 1: the training loss is nan at step {step}/{STEPS} (global step {step})"), msg
    assert "its batch holds 1 NaN or infinite input value(s)" in msg and "left as it was" in msg
    assert_untouched(good_run)


def test_a_failure_before_the_first_save_says_nothing_was_saved(tmp_path, monkeypatch):
    """A run that fails in its first epoch, into a new folder, has no checkpoint to keep: the message says that
    nothing was saved (not that a file that does not exist "is left as it was"), and the folder is gone."""
    inject_inf_after_step(monkeypatch, 3, "dec.0.W")
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
        train(out=str(good_run[0]), epochs=1, overwrite=True, **QUICK)
    assert_untouched(good_run)


def inject_inf_after_step(monkeypatch, t, name):
    """After optimizer step ``t`` (global), set element 0 of parameter ``name`` to +inf."""
    real = optim_module.Adam.step

    def step(self, grads):
        real(self, grads)
        if self.t == t:
            self.params[name].reshape(-1)[0] = np.inf

    monkeypatch.setattr(optim_module.Adam, "step", step)


def test_an_infinite_output_bias_names_the_next_step_and_the_parameter(tmp_path, monkeypatch):
    """Epoch 1 is saved; after step 20 (epoch 2, step 5) dec.out.b[0] becomes inf, so the loss of step 6 is
    infinite: the error names step 6 and 'dec.out.b', and epoch 1's checkpoint stays byte for byte."""
    out = tmp_path / "run"
    seen = {}
    real_step = optim_module.Adam.step

    def step(self, grads):
        real_step(self, grads)
        if self.t == STEPS + 5:
            seen["sha"] = sha(out / "checkpoint.npz")                # epoch 1's checkpoint, as saved
            self.params["dec.out.b"][0] = np.inf

    monkeypatch.setattr(optim_module.Adam, "step", step)
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(out), epochs=3, checkpoint_every=1, **QUICK)
    msg = str(e.value)
    assert msg.startswith(f"epoch 2: the training loss is inf at step 6/{STEPS} (global step {STEPS + 6})"), msg
    assert "'dec.out.b' (1 inf)" in msg
    assert sha(out / "checkpoint.npz") == seen["sha"] and load_checkpoint(out / "checkpoint.npz")["epoch"] == 1
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "metrics.json"]


def test_an_infinite_weight_hidden_by_tanh_is_found_by_the_parameter_check(good_run, monkeypatch):
    """enc.0.b[0] = inf after step 3: tanh saturates, every loss stays finite, and only the end-of-epoch check of
    the parameters sees it; the error names the parameter."""
    inject_inf_after_step(monkeypatch, 3, "enc.0.b")
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as e:
        train(out=str(good_run[0]), epochs=1, overwrite=True, **QUICK)
    msg = str(e.value)
    assert msg.startswith("epoch 1: parameters holding NaN or inf: 'enc.0.b' (1 inf), though every step's loss "
                          "was finite"), msg
    assert_untouched(good_run)


@pytest.mark.parametrize("optimizer, expected", [
    ("adam", r"epoch 1: the training diverged at step 2/15 \(global step 2\): its KL reached .* nats"),
    ("sgd", r"epoch 1: the training loss is (inf|nan) at step \d+/15 .*its batch was finite; parameters holding"),
], ids=["adam", "sgd"])
def test_a_learning_rate_of_1e6_stops_naming_the_step_and_cause(good_run, optimizer, expected):
    """Adam moves every weight by ~lr per step: the encoder's log-variance runs past the clamp and the KL
    reaches 1e17 nats (finite, thanks to the clamp, and reported as divergence). SGD's updates overflow to inf."""
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=expected):
        train(out=str(good_run[0]), epochs=1, lr=1e6, optimizer=optimizer, overwrite=True, **QUICK)
    assert_untouched(good_run)


def test_ctrl_c_with_a_broken_state_saves_nothing(good_run, monkeypatch, stop_at_step):
    """A stop requested at step 8 (what Ctrl-C does) after a weight became inf at step 4: the save is refused
    with the error, since resuming from it would only continue the failure."""
    inject_inf_after_step(monkeypatch, 4, "enc.0.W")

    stop_at_step(8)
    with np.errstate(all="ignore"), pytest.raises(TrainingError, match=r"epoch 1: .*'enc\.0\.W'"):
        train(out=str(good_run[0]), epochs=1, overwrite=True, **QUICK)
    assert_untouched(good_run)


def test_the_command_line_reports_a_fault_in_one_line(good_run, monkeypatch, capsys):
    inject_inf_after_step(monkeypatch, 3, "dec.0.W")
    assert main(["train", "--hidden", "16", "--z-dim", "3", "--batch-size", "100", "--epochs", "1",
                 "--out", str(good_run[0]), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minivae train: error: epoch 1: the training loss is nan at step ")
    assert "'dec.0.W'" in err[0] and "left as it was" in err[0]
    assert_untouched(good_run)


# ---- faults while writing a checkpoint -----------------------------------------------------------------------

class FailAfter:
    """A file whose writes fail (after writing what fits) once ``limit`` bytes have been written."""

    def __init__(self, f, limit, error):
        self._f, self._left, self._error = f, limit, error

    def write(self, data):
        data = bytes(data)
        if len(data) > self._left:
            self._f.write(data[:self._left])
            self._left = 0
            raise self._error
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def small_model():
    model = VAE(6, 2, hidden=(5,), dtype="float64", seed=1)
    return model, optim_module.Adam(model.params)


def save(path, model, opt):
    from minivae.rng import RNG
    save_checkpoint(path, model, opt, {"seed": 0}, 1, RNG(0))


def test_a_write_failing_after_n_bytes_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A disk-full OSError, and a KeyboardInterrupt, raised after n bytes of the npz for 40 values of n from 0
    to the whole file: every time the exception comes through, the previous checkpoint is byte-identical and the
    folder holds nothing else."""
    model, opt = small_model()
    path = tmp_path / "checkpoint.npz"
    save(path, model, opt)
    digest = sha(path)
    size = path.stat().st_size
    model.params["enc.0.b"] += 1.0                                        # the new save differs
    real = checkpoint_module.atomic_write
    points = sorted(set([0, 1, 2, 30, 100] + list(np.linspace(0, size, 35).astype(int))))
    for n in points:
        for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
            monkeypatch.setattr(checkpoint_module, "atomic_write",
                                lambda p, write, n=n, error=error: real(p, lambda f: write(FailAfter(f, n, error))))
            with pytest.raises(type(error)):
                save(path, model, opt)
            assert sha(path) == digest, n
            assert os.listdir(tmp_path) == ["checkpoint.npz"], (n, os.listdir(tmp_path))
    monkeypatch.undo()
    save(path, model, opt)                                                # and a clean save still works
    assert sha(path) != digest and os.listdir(tmp_path) == ["checkpoint.npz"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_failure_at_fsync_or_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch, where):
    model, opt = small_model()
    path = tmp_path / "checkpoint.npz"
    save(path, model, opt)
    digest = sha(path)

    def fail(*args):
        raise OSError(5, f"Input/output error in {where}")

    monkeypatch.setattr(checkpoint_module.os, where, fail)
    with pytest.raises(OSError, match=where):
        save(path, model, opt)
    monkeypatch.undo()
    assert sha(path) == digest and os.listdir(tmp_path) == ["checkpoint.npz"]


KILLED_WRITER = textwrap.dedent("""
    import io, os, sys, time
    from minivae.checkpoint import atomic_write
    path, n = sys.argv[1], int(sys.argv[2])
    data = open(sys.argv[3], "rb").read()           # the bytes of a real checkpoint

    def write(f):
        f.write(data[:n])
        f.flush()
        os.fsync(f.fileno())
        print("writing", flush=True)                 # the parent kills us here, mid-save
        time.sleep(60)

    atomic_write(path, write)
""")


@pytest.mark.parametrize("point", ["empty", "half", "all but the rename"])
def test_sigkill_in_the_middle_of_a_save(tmp_path, point):
    """A real SIGKILL of a process blocked inside atomic_write after writing nothing, half, or all of a new
    checkpoint (before the rename). The previous checkpoint is intact; the killed writer's temporary file, which
    no code could remove at the kill, is removed by the next write into the folder."""
    model, opt = small_model()
    path = tmp_path / "checkpoint.npz"
    save(path, model, opt)
    digest = sha(path)
    model.params["enc.0.b"] += 1.0
    save(tmp_path / "new.npz", model, opt)
    new = tmp_path / "new.npz"
    new_bytes = new.read_bytes()
    source = tmp_path.parent / f"{tmp_path.name}-new.npz"                 # outside the folder under test
    new.rename(source)
    n = {"empty": 0, "half": len(new_bytes) // 2, "all but the rename": len(new_bytes)}[point]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), str(n), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert sha(path) == digest
    leftovers = [f for f in os.listdir(tmp_path) if f != "checkpoint.npz"]
    assert leftovers and all(f.startswith(f".tmp-{proc.pid}-") for f in leftovers)
    assert os.path.getsize(tmp_path / leftovers[0]) == n
    save(path, model, opt)                                                # the next save cleans up
    assert os.listdir(tmp_path) == ["checkpoint.npz"] and path.read_bytes() != b""
    assert load_checkpoint(path)["epoch"] == 1


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    """Only dead writers' files are removed: one named after this very process, or after a live one, stays."""
    live = tmp_path / f".tmp-{os.getppid()}-abcdcheckpoint.npz"
    own = tmp_path / f".tmp-{os.getpid()}-abcdcheckpoint.npz"
    live.write_bytes(b"partial")
    own.write_bytes(b"partial")
    atomic_write(tmp_path / "checkpoint.npz", lambda f: f.write(b"x"))
    assert live.exists() and own.exists()


def test_disk_full_during_training_is_one_line_and_keeps_the_checkpoint(good_run, monkeypatch, capsys):
    real = checkpoint_module.atomic_write

    def full(path, write):
        if str(path).endswith("checkpoint.npz"):
            return real(path, lambda f: write(FailAfter(f, 1000, OSError(28, "No space left on device"))))
        return real(path, write)

    monkeypatch.setattr(checkpoint_module, "atomic_write", full)
    assert main(["train", "--hidden", "16", "--z-dim", "3", "--batch-size", "100", "--epochs", "1",
                 "--out", str(good_run[0]), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert f"cannot write '{good_run[0]}/checkpoint.npz'" in err[0], err          # the file that could not be written
    assert_untouched(good_run)


# ---- an output folder that cannot be written: refused before training starts -----------------------------

def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(VAE, "loss_and_grads", refuse)


def test_out_under_a_regular_file_is_refused_before_training(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    no_training(monkeypatch)
    with pytest.raises(ValueError, match=r"out .*file/run.* is not a writable folder: Not a directory"):
        train(out=str(tmp_path / "file" / "run"), epochs=1, **QUICK)


def test_a_permission_error_on_the_out_folder_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """Root writes anywhere, so the read-only folder is simulated: creating the write-test file there raises
    PermissionError, as it does for a normal user in a read-only folder."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", denied)
    no_training(monkeypatch)
    assert main(["train", "--hidden", "16", "--epochs", "1", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a writable folder: Permission denied" in err[0] and "ro" in err[0], err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_read_only_out_folder_is_refused_before_training(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    no_training(monkeypatch)
    try:
        with pytest.raises(ValueError, match="is not a writable folder"):
            train(out=str(ro), epochs=1, **QUICK)
    finally:
        ro.chmod(0o755)


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


def test_concurrent_claims_of_one_folder_never_blame_its_writability(tmp_path):
    """Two runs starting in one --out: the second is refused as "another minivae train is writing", never as
    "not a writable folder" (the writability probe once had a fixed name that concurrent runs raced on)."""
    import threading

    from minivae.run_folder import RunFolder

    out, errors = str(tmp_path / "run"), []

    def claim(times):
        for _ in range(times):
            try:
                with RunFolder(out, overwrite=True):
                    pass
            except ValueError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=claim, args=(400,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [e for e in errors if "another minivae train is writing" not in e], errors[:3]
