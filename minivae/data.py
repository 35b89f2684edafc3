"""Data: the datasets minivae trains on, the checks every dataset passes, and binarisation.

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (the default; no download).
- ``mnist`` and ``fashion-mnist``: the four standard IDX files (LeCun et al. 1998, "Gradient-based learning
  applied to document recognition"; Xiao et al. 2017, "Fashion-MNIST"), read by a hand-written parser from a
  folder, or downloaded once into a cache folder and checked against their published SHA-256.
- ``synthetic``: a linear-Gaussian latent model (probabilistic PCA, Tipping & Bishop 1999) with fixed
  parameters, whose log p(x) has a closed form (``synthetic_log_px``), so a trained model's log-likelihood
  can be compared with the truth.

Binarisation (Bernoulli likelihood on binary pixels, as in Kingma & Welling 2013 section 5): ``threshold`` and
``sample`` binarise once, here; ``dynamic`` draws a fresh binarisation of every training batch inside the
training loop (``dynamic_binarize``, the one function here that runs on the device).

Everything else is host-side: arrays are NumPy; training moves them to the device once, explicitly.
"""
import contextlib
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from typing import NamedTuple, Optional

import numpy as np

from .backend import astype
from .checks import check_arrays, check_finite, check_shape, check_unit_interval
from .parts import LIKELIHOODS

SPLIT_SEED = 0          # the held-out split is fixed, whatever the training seed, so runs compare
HELD_OUT_FRACTION = 0.2
BINARIZE_SEED = 0       # the static binary samples are fixed too (training set: this seed; held out: seed + 1)
BINARIZE_MODES = ("none", "threshold", "sample", "dynamic")


class Dataset(NamedTuple):
    """A dataset on the host: float64 data matrices (examples, dimensions), integer labels (or None), and
    ``image_shape`` (height, width) for datasets of images (None otherwise)."""
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    image_shape: Optional[tuple]


class DataError(ValueError):
    """A dataset's files are missing, malformed or could not be downloaded. The message names the file or URL."""


# ----------------------------------------------------------------------------------------------------------
# digits

def load_digits():
    """The digits scaled to [0, 1] (pixel / 16), as a Dataset of float64 arrays.

    A fixed, seeded, stratified split: 1,437 training and 360 held-out images of 64 pixels.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split
    digits = sk_load_digits()
    x = digits.data.astype(np.float64) / 16.0                    # (1797, 64) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=HELD_OUT_FRACTION,
                                                        random_state=SPLIT_SEED, stratify=digits.target)
    return Dataset(x_train, x_test, y_train, y_test, (8, 8))


# ----------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
#
# An IDX file is: two zero bytes, a type code byte, a dimension count byte n (together the "magic number"),
# n big-endian uint32 sizes, then the values in row-major order, big-endian.

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw, name="IDX data"):
    """The array held by the bytes ``raw`` of an IDX file, in native byte order.

    A DataError naming ``name`` for a bad magic number, a file shorter than its header says (truncated) or
    one longer than its header says (size mismatch).
    """
    raw = bytes(raw)
    if len(raw) < 4:
        raise DataError(f"{name}: truncated IDX file: {len(raw)} byte(s), shorter than the 4-byte magic number")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{name}: not an IDX file: bad magic number 0x{raw[:4].hex().upper()} (expected two "
                        f"zero bytes, a type code in {codes} and a dimension count >= 1)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX file: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    count = math.prod(dims)
    expected, found = count * dtype.itemsize, len(raw) - header
    if found < expected:
        raise DataError(f"{name}: truncated IDX file: the header says {'x'.join(map(str, dims))} values of "
                        f"{dtype.name} ({expected} bytes) but only {found} bytes follow it")
    if found > expected:
        raise DataError(f"{name}: size mismatch: the header says {'x'.join(map(str, dims))} values of "
                        f"{dtype.name} ({expected} bytes) but {found} bytes follow it")
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="))                # a native-order copy


def read_idx(path):
    """The array in the IDX file ``path``, gzipped or not (recognised by the gzip magic bytes 1f 8b)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:        # gzip.BadGzipFile is an OSError
            raise DataError(f"{path}: corrupt or truncated gzip file ({e or type(e).__name__})") from None
    return parse_idx(raw, name=str(path))


IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


class IdxSource(NamedTuple):
    """Where a dataset's gzipped IDX files are served (``url`` + file name), the environment variable that
    overrides that base URL, and each file's SHA-256."""
    url: str
    url_env: str
    sha256: dict


# The base URLs and SHA-256 digests are the ones TensorFlow Datasets records for these files, in
# github.com/tensorflow/datasets: tensorflow_datasets/url_checksums/mnist.txt (commit 31f1255e57e5) and
# tensorflow_datasets/url_checksums/fashion_mnist.txt (commit 90b66237ad09), one "url size sha256" line per
# file. Sizes there: MNIST 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes; Fashion-MNIST 26,421,880 / 29,515 /
# 4,422,102 / 5,148 bytes (train images, train labels, test images, test labels). The Fashion-MNIST mirror is
# plain http, as in that file; the digest is what makes the download trustworthy.
IDX_SOURCES = {
    "mnist": IdxSource("https://storage.googleapis.com/cvdf-datasets/mnist/", "MINIVAE_MNIST_URL", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
    "fashion-mnist": IdxSource("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                               "MINIVAE_FASHION_MNIST_URL", {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
}


def default_data_dir(name):
    """The cache folder of dataset ``name``: ``$MINIVAE_DATA/<name>`` if that variable is set, else
    ``~/.cache/minivae/<name>``."""
    root = os.environ.get("MINIVAE_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "minivae")
    return os.path.join(root, name)


def _download_failure(e):
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def download(url, path, sha256, timeout=30.0):
    """Fetch ``url`` to ``path``, accepting it only if its SHA-256 is ``sha256``.

    The bytes go to a temporary file beside ``path`` that is renamed into place only after the digest
    matches, so ``path`` either does not exist or holds the verified file; the temporary file is deleted on
    every failure. A DataError with one line: the URL and the reason if the download fails, the file and both
    digests if the checksum does not match.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write to the data folder {folder}: {e.strerror or e}") from None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        digest.update(chunk)
                        f.write(chunk)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                    ValueError) as e:                        # ValueError: a malformed URL
                raise DataError(f"could not download {url}: {_download_failure(e)}; put the files in {folder} "
                                f"or pass --data-dir") from None
            f.flush()
            os.fsync(f.fileno())
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise DataError(f"checksum mismatch for {os.path.basename(path)} from {url}: expected sha256 "
                            f"{sha256.lower()}, got {actual}; the download was deleted")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _check_folder(data_dir):
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a folder path (str or os.PathLike), got {type(data_dir).__name__}")
    if not os.fspath(data_dir):
        raise ValueError("data_dir must be a folder path, got ''")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {str(data_dir)!r} is not a folder")
    return os.fspath(data_dir)


def load_idx_dataset(name, data_dir=None, *, base_url=None, sha256=None, timeout=30.0):
    """MNIST or Fashion-MNIST (``name``) as a Dataset: 60,000 training and the official 10,000 held-out
    images, pixels / 255 in [0, 1], float64 (N, 784), int64 labels, image_shape (28, 28).

    Each of the four files is read from ``data_dir`` as ``<file>`` or ``<file>.gz``; a missing one is
    downloaded there as ``<file>.gz``, verified against its SHA-256 (``sha256``: file name -> hex digest,
    default the published ones in ``IDX_SOURCES``). ``data_dir`` None means the cache folder
    ``default_data_dir(name)``, created if needed. ``base_url`` (default: the environment variable
    ``MINIVAE_MNIST_URL`` / ``MINIVAE_FASHION_MNIST_URL``, else the standard mirror) is where files are fetched.
    """
    try:
        source = IDX_SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {', '.join(IDX_SOURCES)}; got {name!r}") from None
    if data_dir is None:
        folder = default_data_dir(name)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the data folder {folder}: {e.strerror or e} "
                            f"(set MINIVAE_DATA or pass --data-dir)") from None
    else:
        folder = _check_folder(data_dir)
    base_url = base_url or os.environ.get(source.url_env) or source.url
    checksums = source.sha256 if sha256 is None else sha256

    arrays = {}
    for key, stem in IDX_FILES.items():
        path = next((os.path.join(folder, f) for f in (stem, stem + ".gz")
                     if os.path.isfile(os.path.join(folder, f))), None)
        if path is None:
            path = download(base_url.rstrip("/") + "/" + stem + ".gz", os.path.join(folder, stem + ".gz"),
                            checksums[stem + ".gz"], timeout=timeout)
        arrays[key] = (path, read_idx(path))

    for split in ("train", "test"):
        (xpath, x), (ypath, y) = arrays["x_" + split], arrays["y_" + split]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(f"{xpath}: expected 28x28 images of unsigned bytes, got shape {x.shape} of {x.dtype}")
        if y.ndim != 1 or y.dtype != np.uint8 or (y.size and y.max() > 9):
            raise DataError(f"{ypath}: expected a vector of labels 0-9 as unsigned bytes, got shape {y.shape} "
                            f"of {y.dtype}")
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{xpath} holds {x.shape[0]} images but {ypath} holds {y.shape[0]} labels")
    x_train, x_test = (arrays[k][1].reshape(-1, 784).astype(np.float64) / 255.0 for k in ("x_train", "x_test"))
    y_train, y_test = (arrays[k][1].astype(np.int64) for k in ("y_train", "y_test"))
    return Dataset(x_train, x_test, y_train, y_test, (28, 28))


# ----------------------------------------------------------------------------------------------------------
# synthetic: a linear-Gaussian latent model with a closed-form log p(x)

SYNTHETIC_SEED = 0
SYNTHETIC_DIM, SYNTHETIC_LATENT = 16, 2          # D, k
SYNTHETIC_SIZES = (5000, 1000)                   # training, held out
SYNTHETIC_SIGMA = 0.5


def synthetic_params():
    """The fixed parameters (A (D, k), c (D,), sigma) of the synthetic model, drawn from ``SYNTHETIC_SEED``.

    A's entries are N(0, 1/k), so each x_d has variance about 1 + sigma^2; c's are N(0, 1/4).
    """
    rng = np.random.default_rng(SYNTHETIC_SEED)
    A = rng.standard_normal((SYNTHETIC_DIM, SYNTHETIC_LATENT)) / math.sqrt(SYNTHETIC_LATENT)    # (D, k)
    c = 0.5 * rng.standard_normal(SYNTHETIC_DIM)                                               # (D,)
    return A, c, SYNTHETIC_SIGMA


def load_synthetic():
    """5,000 training and 1,000 held-out draws of z ~ N(0, I_k), x = z A^T + c + sigma * noise, noise ~ N(0, I_D),
    with the parameters of ``synthetic_params`` (D = 16, k = 2). float64; no labels; image_shape None.
    Train it with the Gaussian likelihood: its values are not in [0, 1]."""
    A, c, sigma = synthetic_params()
    rng = np.random.default_rng(SYNTHETIC_SEED + 1)
    n = sum(SYNTHETIC_SIZES)
    z = rng.standard_normal((n, SYNTHETIC_LATENT))                                   # (N, k)
    x = z @ A.T + c + sigma * rng.standard_normal((n, SYNTHETIC_DIM))               # (N, D)
    n_train = SYNTHETIC_SIZES[0]
    return Dataset(x[:n_train], x[n_train:], None, None, None)


def synthetic_log_px(x):
    """log p(x) (N,) in nats under the synthetic model, in closed form.

    With z ~ N(0, I) and x | z ~ N(A z + c, sigma^2 I), x is Gaussian (a linear map of Gaussians) with mean
    E[x] = c and covariance Cov[x] = A Cov[z] A^T + sigma^2 I, so

        log p(x) = log N(x; c, A A^T + sigma^2 I).
    """
    from scipy.stats import multivariate_normal
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != SYNTHETIC_DIM:
        raise ValueError(f"x must be a NumPy array of shape (N, {SYNTHETIC_DIM}), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    A, c, sigma = synthetic_params()
    cov = A @ A.T + sigma ** 2 * np.eye(SYNTHETIC_DIM)                             # (D, D)
    return np.atleast_1d(multivariate_normal(mean=c, cov=cov).logpdf(x)).reshape(x.shape[0])


# ----------------------------------------------------------------------------------------------------------
# binarisation

def binarize_static(x, mode, seed=BINARIZE_SEED):
    """A fixed binarisation of the host array ``x`` (values in [0, 1]), of x's dtype.

    - ``"none"``: x itself;
    - ``"threshold"``: b = [x > 1/2];
    - ``"sample"``: b = [u < x] with u ~ U[0, 1) drawn once from ``seed``, so b ~ Bernoulli(x) and the same
      seed gives the same b.
    """
    if mode not in ("none", "threshold", "sample"):
        raise ValueError(f"mode must be 'none', 'threshold' or 'sample' for a static binarisation, got {mode!r}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(f"binarize_static: x must be a NumPy array of floats, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if mode == "none":
        return x
    check_unit_interval(x, "binarize_static: x", f" for mode {mode!r} (intensities)")
    if mode == "threshold":
        return (x > 0.5).astype(x.dtype)
    u = np.random.default_rng(seed).random(x.shape)                  # U[0, 1), float64
    return (u < x).astype(x.dtype)                                   # P(u < x) = x


def dynamic_binarize(x, u):
    """b = [u < x], of x's dtype and namespace: for u ~ U[0, 1) drawn fresh (``RNG.uniform``), b ~ Bernoulli(x).

    Pure and array-API generic, like every op: the randomness is the argument ``u`` (x's shape).
    """
    check_arrays("dynamic_binarize", x=x, u=u)
    check_shape("dynamic_binarize", "u", u, tuple(x.shape), "x's shape")
    return astype(u < x, x.dtype)


def _binarize_dataset(data, mode, name):
    """Apply ``mode`` to a Dataset. threshold / sample: both sets binarised once. dynamic: the training set
    stays as intensities (the training loop binarises each batch afresh) and the held-out set gets one fixed
    sample, the same one ``sample`` uses, so held-out numbers compare across epochs, runs and the two modes."""
    if mode == "none":
        return data
    for x, part in ((data.x_train, "training"), (data.x_test, "held-out")):
        check_unit_interval(x, f"dataset {name!r}'s {part} data", f" to binarize it ({mode!r})")
    x_train = data.x_train if mode == "dynamic" else binarize_static(data.x_train, mode, BINARIZE_SEED)
    x_test = binarize_static(data.x_test, "threshold" if mode == "threshold" else "sample", BINARIZE_SEED + 1)
    return data._replace(x_train=x_train, x_test=x_test)


# ----------------------------------------------------------------------------------------------------------

DATASETS = ("digits", "mnist", "fashion-mnist", "synthetic")


def load_dataset(name, data_dir=None, binarize="none"):
    """Dataset ``name`` (one of ``DATASETS``), binarised as ``binarize`` says (one of ``BINARIZE_MODES``).

    ``data_dir`` is the folder of the IDX files for mnist / fashion-mnist (None: the cache folder, see
    ``load_idx_dataset``); the other datasets have no files and refuse it.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {binarize!r}")
    if name in IDX_SOURCES:
        data = load_idx_dataset(name, data_dir)
    elif data_dir is not None:
        raise ValueError(f"data_dir is read only by the datasets {', '.join(IDX_SOURCES)}; dataset {name!r} "
                         f"has no files (got data_dir {data_dir!r})")
    else:
        data = load_synthetic() if name == "synthetic" else load_digits()
    return _binarize_dataset(data, binarize, name)


def check_data(x, likelihood, name="x"):
    """Validate a host data matrix before training or evaluation, naming ``name``: a TypeError if it is not a
    NumPy array; a ValueError if it is not a non-empty 2-D floating array of finite values (in [0, 1] for the
    Bernoulli and categorical likelihoods). minivae/checks.py states where each check runs."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (examples, dimensions), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype} "
                         f"(scale integer data to floats first, e.g. pixels / 255)")
    check_finite(x, name)
    if LIKELIHOODS[likelihood].unit_interval:
        check_unit_interval(x, name, f" for the {likelihood} likelihood (real-valued data needs the gaussian "
                                     f"likelihood)")
    return x
