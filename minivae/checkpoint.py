"""Checkpoints: one ``.npz`` file, loadable with ``np.load(path, allow_pickle=False)``, written atomically.

Keys:
    format              int, FORMAT_VERSION
    model, train        JSON strings: ``VAE(**model)`` rebuilds the architecture; ``train`` is the TrainConfig
    epoch               int, epochs completed
    rng                 JSON string, the training RNG's state
    optim               JSON string, the optimizer's scalar state (name, t, lr, ...)
    progress            JSON string: batches done in the current epoch ("step"), the epoch's partial loss sums,
                        and the per-epoch history so far
    data                JSON string: the data trained on, {dataset, binarize, data_dir, image_shape}: what the
                        pictures and evaluation need besides the data itself (older checkpoints: from "train")
    order               the current epoch's data order (int64), present only when saved mid-epoch
    param/<name>        each parameter (host copy)
    optim/<slot>/<name> each optimizer slot (Adam's m and v, SGD's v)

Atomic: the file is written to a temporary file in the same folder, flushed to disk and moved into place with
``os.replace``, so an interrupted save leaves the previous checkpoint intact and no partial file behind. An
exception (or Ctrl-C) during the write removes the temporary file at once. A process killed outright (SIGKILL,
power loss) cannot clean up after itself: its temporary file, named ``.tmp-<pid>-...``, is removed by the next
write into that folder once no process with that pid is alive (POSIX).
Tests: tests/test_checkpoint.py (its write faults, marked fault).
"""
import errno
import json
import os
import re
import tempfile
import zipfile

import numpy as np

from .backend import to_host
from .config import saved_config

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, truncated, corrupted or of another format version."""


TEMP_NAME = re.compile(r"^\.tmp-(?P<pid>\d+)-")     # atomic_write's temporary files: .tmp-<pid>-<random><name>


def _pid_alive(pid):
    try:
        os.kill(pid, 0)                           # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:                               # it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete the temporary files that writers killed mid-write left in ``folder`` (those whose pid no longer
    runs; a live writer's file is never touched). POSIX only: elsewhere ``os.kill(pid, 0)`` is not a query.
    Returns the names removed."""
    if os.name != "posix":
        return []
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = TEMP_NAME.match(name)
        if m and int(m.group("pid")) != os.getpid() and not _pid_alive(int(m.group("pid"))):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(name)
            except OSError:                       # gone already, or not ours to delete
                pass
    return removed


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it into place. On any exception the
    temporary file is removed and ``path`` is as it was (an OSError such as a full disk names ``path``); stale
    temporary files of killed writers are removed first (``remove_stale_temporaries``)."""
    if os.path.isdir(path):                       # else os.replace's error would name the temporary file
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=os.path.basename(path), dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)             # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:   # a full disk: name the file
            raise OSError(e.errno, f"cannot write {os.fspath(path)!r}: {e.strerror}") from None
        raise


def save_checkpoint(path, model, optimizer, train_config, epoch, rng, progress=None, order=None, data=None):
    """Write the model, optimizer, config, epoch (completed), RNG state and training progress to ``path``
    atomically. ``order`` is the data order of an epoch in progress (host int array), or None; ``data`` what
    the pictures and evaluation need to know of the data (dataset, binarize, data_dir, image_shape)."""
    state = optimizer.state_dict()
    slots = {k: v for k, v in state.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, dict)}
    arrays = {
        "format": np.array(FORMAT_VERSION),
        "model": np.array(json.dumps(model.config)),
        "train": np.array(json.dumps(train_config)),
        "epoch": np.array(epoch),
        "rng": np.array(rng.state),
        "optim": np.array(json.dumps(scalars)),
        "progress": np.array(json.dumps(progress or {"step": 0, "sums": None, "history": []})),
        "data": np.array(json.dumps(data or {})),
    }
    if order is not None:
        arrays["order"] = np.asarray(order, dtype=np.int64)
    for name, p in model.params.items():
        arrays[f"param/{name}"] = to_host(p)
    for slot, values in slots.items():
        for name, a in values.items():
            arrays[f"optim/{slot}/{name}"] = to_host(a)
    atomic_write(path, lambda f: np.savez(f, **arrays))


ZIP_MAGIC, NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"     # the first bytes of an .npz (a zip) and of an .npy file


def _check_path(path, what="path"):
    """``path`` as a str if it is a str or os.PathLike; a TypeError naming ``what`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a file path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def _read_npz(path):
    """Every array of the .npz file ``path``, read whole, or a CheckpointError saying what the file is instead."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
        if not head:
            raise CheckpointError(f"checkpoint {path!r} is an empty file")
        if head.startswith(NPY_MAGIC):
            raise CheckpointError(f"checkpoint {path!r} is a single NumPy array (.npy), not a minivae checkpoint "
                                  f"(an .npz archive written by minivae train)")
        if not head.startswith(ZIP_MAGIC):
            raise CheckpointError(f"checkpoint {path!r} is not a minivae checkpoint: not an .npz archive "
                                  f"(a checkpoint is the checkpoint.npz that minivae train writes)")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except PermissionError as e:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {e.strerror}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path!r} cannot be read (truncated or corrupted?): {e}") from None


def _record(data, key):
    """The JSON record ``key`` of a checkpoint: a dict (a ValueError if it is not)."""
    value = json.loads(str(data[key]))
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be a JSON object, got {type(value).__name__}")
    return value


def _check_finite_arrays(path, arrays, what):
    """Each host array of ``arrays`` (name -> array) must be a finite floating array: a CheckpointError naming
    the file and the array otherwise."""
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise CheckpointError(f"checkpoint {path!r}: {what} {name!r} has dtype {a.dtype}, not a float dtype")
        bad = a.size - np.count_nonzero(np.isfinite(a))
        if bad:
            raise CheckpointError(f"checkpoint {path!r} is corrupted: {what} {name!r} holds {bad} NaN or infinite "
                                  f"value(s)")


def load_checkpoint(path):
    """Read a checkpoint into host data: {"model", "train", "epoch", "rng", "optim", "params"}, where
    ``optim`` holds the scalar state and each slot as a dict of NumPy arrays. A CheckpointError names the file
    if it is missing, unreadable, not a minivae checkpoint (an .npy array, a text or JSON file, a foreign .npz),
    truncated, corrupted (a record that is not what it should be, parameters or optimizer state holding NaN or
    inf) or of another version. Everything is read and checked before anything is returned."""
    path = _check_path(path)
    data = _read_npz(path)
    if "format" not in data or "model" not in data:
        raise CheckpointError(f"checkpoint {path!r} is not a minivae checkpoint")
    try:
        version = int(data["format"])
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {path!r} has an unreadable format version") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {version}; "
                              f"this minivae reads version {FORMAT_VERSION}")
    try:
        optim = _record(data, "optim")
        for key, a in data.items():
            if key.startswith("optim/"):
                _, slot, name = key.split("/", 2)
                optim.setdefault(slot, {})[name] = a
        ckpt = {
            "model": _record(data, "model"),
            "train": _record(data, "train"),
            "epoch": int(data["epoch"]),
            "rng": str(data["rng"]),
            "optim": optim,
            "progress": _record(data, "progress"),
            "order": data.get("order"),
            "data": _data_record(data),
            "params": {k[len("param/"):]: a for k, a in data.items() if k.startswith("param/")},
        }
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} is incomplete or corrupted: {e}") from None
    try:
        saved_config(ckpt["train"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r} holds an invalid training config: {e}") from None
    _check_finite_arrays(path, ckpt["params"], "parameter")
    _check_finite_arrays(path, {k: a for k, a in data.items() if k.startswith("optim/")}, "optimizer state")
    return ckpt


def _data_record(data):
    """The stored data record; for a checkpoint written before it was stored, what its train config says."""
    if "data" in data:
        return _record(data, "data")
    train = _record(data, "train")
    return {"dataset": train.get("dataset", "digits"), "binarize": train.get("binarize", "none"),
            "data_dir": train.get("data_dir"), "image_shape": None}


def restore_params(model, params, path="checkpoint"):
    """Copy host ``params`` into ``model.params`` on the model's device, checking names and shapes."""
    if set(params) != set(model.params):
        raise CheckpointError(f"{path}: parameters {sorted(params)} do not match the architecture "
                              f"{sorted(model.params)}")
    for name, a in params.items():
        if tuple(a.shape) != tuple(model.params[name].shape):
            raise CheckpointError(f"{path}: parameter {name!r} has shape {tuple(a.shape)}, the architecture "
                                  f"needs {tuple(model.params[name].shape)}")
        model.params[name] = model.device.asarray(a, dtype=model.dtype_name)


def load_model(path, device="cpu", dtype=None):
    """The VAE saved in checkpoint ``path``, on ``device``, in ``dtype`` (default: the dtype it was trained in;
    evaluation may ask for float64). Returns (model, checkpoint dict)."""
    from .backend import get_device
    from .model import VAE
    device = get_device(device)                   # the caller's arguments: their errors name them, not the file
    if dtype is not None and dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    ckpt = load_checkpoint(path)
    config = dict(ckpt["model"])
    if dtype is not None:
        config["dtype"] = dtype
    try:
        model = VAE(**config, device=device)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} describes an invalid model: {e}") from None
    restore_params(model, ckpt["params"], os.fspath(path))
    return model, ckpt
