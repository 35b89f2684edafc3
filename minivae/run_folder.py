"""The folder a training run writes into, claimed so that no run is lost: a folder that already holds a
checkpoint is refused unless the run resumes it or is told to overwrite it; two runs into one folder are refused
(an exclusive lock, ``fcntl.flock`` on the folder itself, held for the whole run and released by the system if
the process dies; no lock file is left behind);
nothing is created on disk before the run is known to be able to start, and a folder this claim created is
removed again if the run fails before writing anything into it.
Tests: tests/test_run_folder.py, tests/test_train.py, tests/test_cli.py.
"""
import os
import tempfile

try:
    import fcntl
except ImportError:                 # not POSIX: no lock, the other guarantees hold
    fcntl = None

CHECKPOINT = "checkpoint.npz"


class RunFolder:
    """``with RunFolder(out, resuming, overwrite) as folder:`` the run's folder, created if needed, proven
    writable and locked. ``resuming``: the run continues the checkpoint in this folder (then it may hold one)."""

    def __init__(self, out, resuming=False, overwrite=False):
        self.out, self.resuming, self.overwrite = out, resuming, overwrite
        self.checkpoint = os.path.join(out, CHECKPOINT)
        self.metrics = os.path.join(out, "metrics.json")

    def check(self):
        """Everything that can be known before creating anything: a ValueError naming the folder otherwise."""
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"out {self.out!r} exists and is not a folder")
        if os.path.exists(self.checkpoint) and not (self.resuming or self.overwrite):
            raise ValueError(f"{self.out} already holds a checkpoint: continue it with --resume {self.checkpoint}, "
                             f"choose a new --out, or pass --overwrite to replace it")
        return self

    def __enter__(self):
        self.check()
        self.created = not os.path.exists(self.out)
        self._lock = None
        try:
            os.makedirs(self.out, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.out, prefix=".write-test-")       # a unique name: no race
            os.close(fd)
            os.unlink(probe)
            self._lock = os.open(self.out, os.O_RDONLY)           # the folder itself is what is locked
        except OSError as e:
            self._remove_if_created()
            raise ValueError(f"out {self.out!r} is not a writable folder: {e.strerror or e}") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock)
                raise ValueError(f"another minivae train is writing to {self.out}; wait for it to finish or "
                                 f"choose another --out") from None
        return self

    def __exit__(self, exc_type, exc, tb):
        os.close(self._lock)                                 # releases the lock
        if exc_type is not None:
            self._remove_if_created()

    def _remove_if_created(self):
        """Remove the folder again if this claim made it and the run wrote nothing into it."""
        if not getattr(self, "created", False):
            return
        try:
            os.rmdir(self.out)                               # only if empty
        except OSError:
            pass
