"""Tests for minivae/checkpoint.py: round trip, atomic writes, and clear errors for bad files; and, marked
``fault``, faults while writing: an exception after n bytes of a checkpoint, for many n, and at fsync and at the
final rename; a real SIGKILL of a process blocked in the middle of a save, at three points; a disk-full error
through the command line. Every time the previous checkpoint is byte-identical afterwards, with no temporary
file left behind (except the SIGKILLed writer's, which the next write removes)."""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minivae.checkpoint as checkpoint_module
from minivae.backend import to_host
from minivae.checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model, save_checkpoint
from minivae.cli import main
from minivae.model import VAE
from minivae.optim import Adam
from minivae.rng import RNG


def saved(tmp_path, likelihood="bernoulli", device="cpu"):
    model = VAE(6, 2, hidden=(5,), likelihood=likelihood, dtype="float64", device=device, seed=1)
    opt = Adam(model.params)
    rng = RNG(0)
    x = model.device.asarray(np.random.default_rng(0).uniform(size=(4, 6)))
    opt.step(model.loss_and_grads(x, rng.normal((4, 2), model.device, "float64"))[1])
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, {"seed": 0}, 1, rng)
    return path, model, opt, rng


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("device", ["cpu", "strict"])
def test_round_trip(tmp_path, likelihood, device):
    path, model, opt, rng = saved(tmp_path, likelihood, device)
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and ck["train"] == {"seed": 0} and ck["rng"] == rng.state
    assert ck["optim"]["t"] == 1 and set(ck["optim"]["m"]) == set(model.params)
    loaded, _ = load_model(path)
    for k, v in model.params.items():
        np.testing.assert_array_equal(to_host(loaded.params[k]), to_host(v))
        np.testing.assert_array_equal(ck["optim"]["m"][k], to_host(opt.m[k]))


def test_interrupted_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"first"))

    def broken(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_missing_directory_truncated_corrupted_and_foreign_files(tmp_path):
    path, _, _, _ = saved(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.npz.*cannot be read"):
        load_checkpoint(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="junk.npz"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a minivae checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_wrong_version_and_wrong_architecture(tmp_path):
    path, _, _, _ = saved(tmp_path)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    np.savez(tmp_path / "v99.npz", **{**data, "format": np.array(99)})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.npz")
    bad = {**data, "param/enc.0.W": np.ones((7, 5))}
    np.savez(tmp_path / "arch.npz", **bad)
    with pytest.raises(CheckpointError, match="enc.0.W.*shape"):
        load_model(tmp_path / "arch.npz")


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "f").st_mode & 0o777) == 0o644


# ---- faults while writing a checkpoint -----------------------------------------------------------------------

def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    return model, Adam(model.params)


def save(path, model, opt):
    save_checkpoint(path, model, opt, {"seed": 0}, 1, RNG(0))


@pytest.mark.fault
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


@pytest.mark.fault
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


@pytest.mark.fault
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


@pytest.mark.fault
def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    """Only dead writers' files are removed: one named after this very process, or after a live one, stays."""
    live = tmp_path / f".tmp-{os.getppid()}-abcdcheckpoint.npz"
    own = tmp_path / f".tmp-{os.getpid()}-abcdcheckpoint.npz"
    live.write_bytes(b"partial")
    own.write_bytes(b"partial")
    atomic_write(tmp_path / "checkpoint.npz", lambda f: f.write(b"x"))
    assert live.exists() and own.exists()


@pytest.mark.fault
def test_disk_full_during_training_is_one_line_and_keeps_the_checkpoint(good_run, monkeypatch, capsys):
    real = checkpoint_module.atomic_write

    def full(path, write):
        if str(path).endswith("checkpoint.npz"):
            return real(path, lambda f: write(FailAfter(f, 1000, OSError(28, "No space left on device"))))
        return real(path, write)

    monkeypatch.setattr(checkpoint_module, "atomic_write", full)
    assert main(["train", "--hidden", "16", "--z-dim", "3", "--batch-size", "100", "--epochs", "1",
                 "--out", str(good_run.out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert f"cannot write '{good_run.out}/checkpoint.npz'" in err[0], err   # the file that could not be written
    good_run.assert_untouched()
