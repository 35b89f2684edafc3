"""Tests for minivae/run_folder.py: the folder a run writes into is claimed before training starts. A folder
that cannot be written is refused (before any step, naming it and the reason); two runs never write into one
folder (the lock), and concurrent claims are refused as such, never blamed on the folder's writability. The
tests run as root here, and root ignores permission bits, so an unwritable folder is simulated (a path under a
regular file; a permission error injected into the temporary-file creation); a chmod test runs only as a normal
user. Refusing a folder that holds a checkpoint: tests/test_config.py, tests/test_cli.py."""
import os
import threading

import pytest

import minivae.run_folder as run_folder_module
from minivae.cli import main
from minivae.model import VAE
from minivae.run_folder import RunFolder
from minivae.train import train

pytestmark = pytest.mark.fault

QUICK = dict(hidden=(16,), z_dim=3, batch_size=100, log=lambda s: None)


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(VAE, "loss_and_grads", refuse)


def test_two_runs_into_one_folder_are_refused_while_one_holds_it(tmp_path):
    with RunFolder(str(tmp_path / "run")):
        with pytest.raises(ValueError, match="another minivae train is writing to"):
            with RunFolder(str(tmp_path / "run")):
                pass
    with RunFolder(str(tmp_path / "run")):                       # released at the end of the first
        pass
    assert os.listdir(tmp_path / "run") == []                     # no lock file left behind


def test_a_folder_the_claim_created_is_removed_if_the_run_fails_before_writing(tmp_path):
    with pytest.raises(RuntimeError):
        with RunFolder(str(tmp_path / "new")):
            raise RuntimeError("the run failed")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()                                   # one that existed before stays
    with pytest.raises(RuntimeError):
        with RunFolder(str(tmp_path / "kept")):
            raise RuntimeError("the run failed")
    assert (tmp_path / "kept").is_dir()


def test_out_under_a_regular_file_is_refused_before_training(tmp_path, no_training):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"out .*file/run.* is not a writable folder: Not a directory"):
        train(out=str(tmp_path / "file" / "run"), epochs=1, **QUICK)
    with pytest.raises(ValueError, match=r"out .*file.* exists and is not a folder"):
        train(out=str(tmp_path / "file"), epochs=1, **QUICK)


def test_a_permission_error_on_the_out_folder_is_refused_before_training(tmp_path, monkeypatch, capsys,
                                                                         no_training):
    """Root writes anywhere, so the read-only folder is simulated: creating the write-test file there raises
    PermissionError, as it does for a normal user in a read-only folder."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder_module.tempfile, "mkstemp", denied)
    assert main(["train", "--hidden", "16", "--epochs", "1", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a writable folder: Permission denied" in err[0] and "ro" in err[0], err
    assert not (tmp_path / "ro").exists()                           # the folder the claim made is gone again


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits")
def test_a_read_only_out_folder_is_refused_before_training(tmp_path, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="is not a writable folder"):
            train(out=str(ro), epochs=1, **QUICK)
    finally:
        ro.chmod(0o755)


def test_concurrent_claims_of_one_folder_never_blame_its_writability(tmp_path):
    """Two runs starting in one --out: the second is refused as "another minivae train is writing", never as
    "not a writable folder" (the writability probe once had a fixed name that concurrent runs raced on)."""
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

