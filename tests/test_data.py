"""Tests for minivae/data.py: the digits, the IDX parser and the MNIST folder reader, the synthetic dataset and
its closed-form log p(x), binarisation, the data checks, and the downloads, on the loopback interface only (a
local http.server serves small IDX files, the expected SHA-256 digests are patched to theirs, and "no network"
is a closed local port). The command line on these datasets: tests/test_cli.py."""
import gzip
import math
import os
import re

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import kstest, norm

from _data_helpers import STEMS, idx_bytes, isolate, serve_folder, small_mnist, write_idx_folder
from minivae.backend import array_namespace, to_host
from minivae.data import (BINARIZE_SEED, IDX_SOURCES, DataError, binarize_static, check_data, download,
                          dynamic_binarize, load_dataset, load_digits, load_idx_dataset, load_synthetic, parse_idx,
                          synthetic_log_px, synthetic_params)
from minivae.rng import RNG
from minivae.train import TrainConfig, train


@pytest.fixture(autouse=True)
def closed_url(monkeypatch, tmp_path):
    """Offline: the cache under tmp_path, both datasets' base URLs a closed local port (returned)."""
    return isolate(monkeypatch, tmp_path)


# ---------------------------------------------------------------------------------------------- digits

def test_digits_split_is_fixed_and_scaled():
    x_train, x_test, y_train, y_test, image_shape = load_digits()
    assert image_shape == (8, 8)
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and x_train.dtype == np.float64
    again = load_digits()
    np.testing.assert_array_equal(again[1], x_test)
    assert set(y_test) == set(range(10))


# ----------------------------------------------------------------------------------------- IDX parser

def test_parse_idx_reads_big_endian_bytes_written_by_hand():
    raw = bytes([0, 0, 0x0B, 2,          # magic: int16, 2 dimensions
                 0, 0, 0, 2, 0, 0, 0, 2,  # sizes 2, 2
                 0x00, 0x01, 0x01, 0x00, 0xFF, 0xFF, 0x7F, 0xFF])
    a = parse_idx(raw)
    np.testing.assert_array_equal(a, [[1, 256], [-1, 32767]])
    assert a.dtype == np.int16 and a.dtype.isnative


@pytest.mark.parametrize("dtype", [">u1", ">i1", ">i2", ">i4", ">f4", ">f8"])
def test_parse_idx_every_type_code(dtype):
    a = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == ">u1" else 5)).astype(dtype)
    np.testing.assert_array_equal(parse_idx(idx_bytes(a)), a)


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x00", "truncated IDX file: 2 byte"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "bad magic number 0x01000801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "bad magic number 0x00000701"),
    (b"\x00\x00\x08\x00", "bad magic number"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "shorter than its 16-byte header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x07", r"truncated IDX file: the header says 3 values"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x07", "size mismatch"),
])
def test_parse_idx_rejects_malformed_files_naming_them(raw, message):
    with pytest.raises(DataError, match=f"labels.idx: .*{message}"):
        parse_idx(raw, name="labels.idx")


def _folder(tmp_path, arrays=None, gz=True):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    write_idx_folder(folder, arrays or small_mnist(), gz=gz)
    return folder


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_reads_a_user_folder_gzipped_or_not_without_network(tmp_path, name):
    arrays = small_mnist(n_train=12, n_test=6)
    folder = _folder(tmp_path, arrays, gz={STEMS[0], STEMS[3]})   # two gzipped, two plain
    data = load_dataset(name, data_dir=str(folder))                # the base URL is a closed port
    assert data.image_shape == (28, 28)
    assert data.x_train.shape == (12, 784) and data.x_test.shape == (6, 784)
    assert data.x_train.dtype == np.float64 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train, arrays[STEMS[0]].reshape(12, 784) / 255.0)
    np.testing.assert_array_equal(data.x_test[5].reshape(28, 28), arrays[STEMS[2]][5] / 255.0)
    np.testing.assert_array_equal(data.y_test, arrays[STEMS[3]])
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    check_data(data.x_train, "bernoulli", "x")


def _corrupt(kind, folder):
    path = folder / (STEMS[0] + ".gz")
    raw = gzip.decompress(path.read_bytes())
    if kind == "magic":
        raw = b"\x08\x03" + raw[2:]
    elif kind == "truncated":
        raw = raw[:-100]
    elif kind == "extra bytes":
        raw = raw + b"\x00"
    elif kind == "truncated gzip":
        path.write_bytes(path.read_bytes()[:200])
        return path
    elif kind == "image size":
        raw = idx_bytes(np.zeros((12, 27, 28), np.uint8))
    elif kind == "count":
        raw = idx_bytes(np.zeros((11, 28, 28), np.uint8))
    path.write_bytes(gzip.compress(raw))
    return path


@pytest.mark.parametrize("kind, message", [
    ("magic", "bad magic number"), ("truncated", "truncated IDX file"), ("extra bytes", "size mismatch"),
    ("truncated gzip", "corrupt or truncated gzip"), ("image size", "expected 28x28 images"),
    ("count", "11 images but .* 12 labels"),
])
def test_corrupt_files_give_an_error_naming_the_file(tmp_path, kind, message):
    folder = _folder(tmp_path)
    path = _corrupt(kind, folder)
    with pytest.raises(ValueError, match=message) as err:
        load_idx_dataset("mnist", str(folder))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_labels_outside_0_to_9_are_refused(tmp_path):
    arrays = small_mnist()
    arrays[STEMS[1]][3] = 10
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*labels 0-9"):
        load_idx_dataset("mnist", str(_folder(tmp_path, arrays)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="mnist", data_dir="no/such/folder"), "data_dir 'no/such/folder' is not a folder"),
    (dict(name="digits", data_dir="."), "data_dir is read only by"),
    (dict(name="synthetic", data_dir="."), "data_dir is read only by"),
    (dict(name="imagenet"), "dataset must be one of digits, mnist, fashion-mnist, synthetic"),
    (dict(name="digits", binarize="otsu"), "binarize must be one of none, threshold, sample, dynamic"),
    (dict(name="synthetic", binarize="threshold"),
     r"dataset 'synthetic''s training data must lie in \[0, 1\] to binarize it \('threshold'\)"),
])
def test_load_dataset_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="data_dir .* is not a folder"):
        load_dataset("fashion-mnist", str(tmp_path / "f"))


# ------------------------------------------------------------------------------------------- synthetic

def test_synthetic_dataset_is_fixed_and_of_unit_scale():
    data = load_synthetic()
    assert data.x_train.shape == (5000, 16) and data.x_test.shape == (1000, 16)
    assert data.y_train is None and data.y_test is None and data.image_shape is None
    np.testing.assert_array_equal(load_dataset("synthetic").x_test, data.x_test)
    assert 0.5 < np.std(data.x_train) < 2.0
    A, c, sigma = synthetic_params()
    assert A.shape == (16, 2) and c.shape == (16,) and sigma > 0


def test_synthetic_log_px_matches_monte_carlo():
    """log p(x) = log E_{p(z)}[p(x|z)], estimated with S prior draws: log (1/S) sum_s N(x; A z_s + c, sigma^2 I),
    each term from scipy.stats.norm. The estimator's standard error (delta method, sd(w) / (sqrt(S) mean(w)))
    sets the tolerance."""
    A, c, sigma = synthetic_params()
    x = np.vstack([load_synthetic().x_test[:3], c + 1.0])             # three data points and one off the data
    S = 200_000
    z = np.random.default_rng(7).standard_normal((S, 2))
    mean = z @ A.T + c                                                # (S, D)
    exact = synthetic_log_px(x)
    assert exact.shape == (4,)
    for n in range(x.shape[0]):
        log_w = np.sum(norm.logpdf(x[n], loc=mean, scale=sigma), axis=1)   # (S,) log p(x_n | z_s)
        estimate = logsumexp(log_w) - math.log(S)
        w = np.exp(log_w - np.max(log_w))
        se = np.std(w) / (math.sqrt(S) * np.mean(w))
        assert se < 0.02
        assert abs(estimate - exact[n]) < 4 * se, (n, estimate, exact[n], se)


def test_synthetic_data_are_drawn_from_the_closed_form_model():
    """Mean log p(x) over the held-out draws is -H[N(c, Sigma)] = -(D/2)(1 + log 2 pi) - (1/2) log det Sigma,
    within 4 standard errors (log p(x) has variance D/2 under the model)."""
    A, c, sigma = synthetic_params()
    x = load_synthetic().x_test
    D = x.shape[1]
    _, logdet = np.linalg.slogdet(A @ A.T + sigma ** 2 * np.eye(D))
    neg_entropy = -0.5 * D * (1.0 + math.log(2.0 * math.pi)) - 0.5 * logdet
    se = math.sqrt(D / 2.0 / x.shape[0])
    assert abs(np.mean(synthetic_log_px(x)) - neg_entropy) < 4 * se


@pytest.mark.parametrize("x", [np.zeros((3, 15)), np.zeros(16), [[0.0] * 16]])
def test_synthetic_log_px_bad_input(x):
    with pytest.raises(ValueError, match=r"x must be a NumPy array of shape \(N, 16\)"):
        synthetic_log_px(x)


# -------------------------------------------------------------------------------------------- binarise

def test_binarize_static_threshold_and_sample():
    x = np.random.default_rng(3).random((400, 50))
    np.testing.assert_array_equal(binarize_static(x, "threshold", 0), (x > 0.5).astype(np.float64))
    assert binarize_static(x, "none", 0) is x
    b = binarize_static(x, "sample", 5)
    assert b.dtype == x.dtype and set(np.unique(b)) == {0.0, 1.0}
    np.testing.assert_array_equal(b, binarize_static(x, "sample", 5))
    assert not np.array_equal(b, binarize_static(x, "sample", 6))
    # E[b] = x: the mean of b - x over all entries is within 5 standard errors of 0
    assert abs(np.mean(b - x)) < 5 * math.sqrt(np.sum(x * (1 - x))) / x.size
    edges = np.array([[0.0, 1.0] * 500], dtype=np.float32)
    np.testing.assert_array_equal(binarize_static(edges, "sample", 0), edges)


@pytest.mark.parametrize("x, mode, message", [
    (np.zeros((2, 2)), "dynamic", "mode must be"),
    (np.zeros((2, 2)), "otsu", "mode must be"),
    (np.full((2, 2), 1.5), "threshold", r"binarize_static: x must lie in \[0, 1\] for mode 'threshold'"),
    (np.full((2, 2), -0.5), "sample", r"binarize_static: x must lie in \[0, 1\] for mode 'sample'"),
])
def test_binarize_static_bad_input(x, mode, message):
    with pytest.raises(ValueError, match=message):
        binarize_static(x, mode, 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dynamic_binarize_is_u_less_than_x_on_every_device(device, dtype):
    p = np.linspace(0.0, 1.0, 11)                                       # (11,) one probability per column
    x = device.asarray(np.tile(p, (4000, 1)), dtype=dtype)              # (4000, 11)
    u = RNG(0).uniform(tuple(x.shape), device, dtype)
    b = dynamic_binarize(x, u)
    assert array_namespace(b) is device.xp and b.dtype == x.dtype and tuple(b.shape) == tuple(x.shape)
    b_host, u_host = to_host(b), to_host(u)
    np.testing.assert_array_equal(b_host, (u_host < p).astype(dtype))
    # b ~ Bernoulli(p) column by column: each column mean within 5 standard errors (exact at p = 0 and 1)
    se = np.sqrt(p * (1 - p) / x.shape[0])
    assert np.all(np.abs(np.mean(b_host, axis=0) - p) <= 5 * se)


def test_dynamic_binarize_shape_mismatch(device):
    x = device.asarray(np.zeros((2, 3)), dtype="float64")
    with pytest.raises(ValueError, match=r"dynamic_binarize: u must have shape .* \(x's shape\)"):
        dynamic_binarize(x, device.asarray(np.zeros((3, 2)), dtype="float64"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rng_uniform_is_seeded_and_uniform(device, dtype):
    u = to_host(RNG(4).uniform((20000,), device, dtype))
    assert u.dtype == np.dtype(dtype) and u.min() >= 0.0 and u.max() < 1.0
    np.testing.assert_array_equal(u, to_host(RNG(4).uniform((20000,), device, dtype)))
    assert kstest(u, "uniform").pvalue > 1e-3


def test_binarize_modes_on_a_dataset():
    grey = load_digits()
    thr = load_dataset("digits", binarize="threshold")
    np.testing.assert_array_equal(thr.x_train, grey.x_train > 0.5)
    np.testing.assert_array_equal(thr.x_test, grey.x_test > 0.5)
    sample = load_dataset("digits", binarize="sample")
    np.testing.assert_array_equal(sample.x_train, binarize_static(grey.x_train, "sample", BINARIZE_SEED))
    np.testing.assert_array_equal(sample.x_train, load_dataset("digits", binarize="sample").x_train)
    dynamic = load_dataset("digits", binarize="dynamic")
    np.testing.assert_array_equal(dynamic.x_train, grey.x_train)       # binarised per batch in training
    np.testing.assert_array_equal(dynamic.x_test, sample.x_test)        # one fixed held-out sample
    assert set(np.unique(dynamic.x_test)) == {0.0, 1.0}


def test_dynamic_binarisation_trains_on_array_api_strict(tmp_path):
    result = train(TrainConfig(epochs=1, hidden=(8,), z_dim=2, binarize="dynamic", device="strict",
                               out=str(tmp_path)), log=lambda *a: None)
    assert math.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("field, value", [("binarize", "otsu"), ("data_dir", ""), ("data_dir", 3)])
def test_train_config_refuses_bad_data_options(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


# -------------------------------------------------------------------------------------------- checks

@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 4), dtype=np.int64), "floating dtype"),
    (np.zeros((3, 4), dtype=object), "floating dtype"),
    (np.array([[0.5, np.nan]]), "NaN or infinite"),
    (np.array([[0.5, np.inf]]), "NaN or infinite"),
    (np.array([[0.5, 1.5]]), r"in \[0, 1\]"),
    (np.array([[-0.1, 0.5]]), r"in \[0, 1\]"),
    (np.zeros((0, 4)), "empty"),
    (np.zeros(4), "2-D"),
])
def test_check_data_names_the_argument(x, message):
    with pytest.raises(ValueError, match=f"data.*{message}"):
        check_data(x, "bernoulli", name="data")


def test_gaussian_accepts_values_outside_unit_interval():
    """Real-valued data outside [0, 1] passes the Gaussian's check unchanged (the same array the Bernoulli and
    categorical refuse), while the checks every likelihood shares still run (a NaN is refused); a Gaussian model
    then takes it as it is: its -log p(x|z) is the normal density's (scipy.stats), and its loss is finite."""
    x = np.array([[-3.0, 7.0], [12.5, -0.25]])
    assert check_data(x, "gaussian") is x and x.tolist() == [[-3.0, 7.0], [12.5, -0.25]]
    for likelihood in ("bernoulli", "categorical"):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\] for the (bernoulli|categorical) likelihood"):
            check_data(x, likelihood)
    with pytest.raises(ValueError, match="contains 1 NaN"):
        check_data(np.array([[-3.0, np.nan]]), "gaussian")
    from minivae.model import VAE
    model = VAE(2, 1, hidden=(3,), likelihood="gaussian", gaussian_variance="fixed", sigma=0.5, dtype="float64")
    z = np.array([[0.3], [-1.2]])
    mean = model.decode(z)["mean"]
    np.testing.assert_allclose(model.reconstruction_nll(x, z), -np.sum(norm.logpdf(x, mean, 0.5), axis=1),
                               rtol=1e-12)
    loss, _, _ = model.loss_and_grads(x, np.array([[0.1], [0.4]]))
    assert np.isfinite(float(loss)) and x.tolist() == [[-3.0, 7.0], [12.5, -0.25]]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet")


# -------------------------------------------------------------------------------------------- downloads

@pytest.fixture
def served(tmp_path):
    """Small gzipped IDX files served on 127.0.0.1: (base URL, request log, arrays, {file: sha256})."""
    src = tmp_path / "src"
    src.mkdir()
    arrays = small_mnist(n_train=10, n_test=5, seed=1)
    digests = write_idx_folder(src, arrays, gz=True)
    with serve_folder(src) as (url, requests):
        yield url, requests, arrays, digests


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("name, env", [("mnist", "MINIVAE_MNIST_URL"),
                                       ("fashion-mnist", "MINIVAE_FASHION_MNIST_URL")])
def test_download_verifies_caches_and_reuses(tmp_path, monkeypatch, served, name, env):
    url, requests, arrays, digests = served
    monkeypatch.setenv(env, url)                                     # the base URL override
    for file, digest in digests.items():                             # the published digests -> the small files'
        monkeypatch.setitem(IDX_SOURCES[name].sha256, file, digest)
    cache = tmp_path / "cache" / name                                # $MINIVAE_DATA/<dataset>
    data = load_dataset(name)
    assert sorted(requests) == sorted("/" + f for f in digests)      # each file fetched once
    assert _files(cache) == sorted(digests)                          # verified files only, no temporary ones
    np.testing.assert_array_equal(data.x_train, arrays[STEMS[0]].reshape(10, 784) / 255.0)
    np.testing.assert_array_equal(data.y_test, arrays[STEMS[3]])

    again = load_dataset(name)                                       # from the cache: no request
    assert len(requests) == 4
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_checksum_mismatch_deletes_the_download(tmp_path, served):
    url, requests, _, digests = served
    wrong = dict(digests, **{"train-labels-idx1-ubyte.gz": "0" * 64})
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(DataError) as err:
        load_idx_dataset("mnist", str(folder), base_url=url, sha256=wrong)
    message = str(err.value)
    assert message.startswith("checksum mismatch for train-labels-idx1-ubyte.gz from " + url)
    assert "expected sha256 " + "0" * 64 in message and digests["train-labels-idx1-ubyte.gz"] in message
    assert "\n" not in message
    assert _files(folder) == ["train-images-idx3-ubyte.gz"]          # the verified first file stays; no partial
    assert len(requests) == 2


def test_no_network_names_the_url_and_the_folder(tmp_path, closed_url):
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(DataError) as err:
        load_idx_dataset("mnist", str(folder))                       # MINIVAE_MNIST_URL is a closed port
    expected = (f"could not download {closed_url}train-images-idx3-ubyte.gz: .*; put the files in "
                f"{re.escape(str(folder))} or pass --data-dir")
    assert re.fullmatch(expected, str(err.value)), str(err.value)
    assert _files(folder) == []


def test_missing_file_on_the_server(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve_folder(empty) as (url, requests):
        with pytest.raises(DataError, match=r"could not download .*train-images-idx3-ubyte.gz: HTTP 404"):
            load_idx_dataset("fashion-mnist", str(empty), base_url=url)
    assert requests == ["/train-images-idx3-ubyte.gz"]
    assert _files(empty) == []


def test_download_function_leaves_nothing_on_failure(tmp_path, served):
    url, _, _, digests = served
    target = tmp_path / "out.gz"
    assert download(url + "t10k-labels-idx1-ubyte.gz", str(target), digests["t10k-labels-idx1-ubyte.gz"])
    assert target.read_bytes() == (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    target.unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        download(url + "t10k-labels-idx1-ubyte.gz", str(target), "f" * 64)
    with pytest.raises(DataError, match="could not download not-a-url"):
        download("not-a-url", str(target), "f" * 64)
    assert os.listdir(tmp_path) == ["src"]                          # no out.gz, no temporary file


def test_published_checksums_are_well_formed():
    for source in IDX_SOURCES.values():
        assert set(source.sha256) == {stem + ".gz" for stem in STEMS}
        assert all(re.fullmatch("[0-9a-f]{64}", d) for d in source.sha256.values())
        assert source.url.endswith("/")
    assert len({d for s in IDX_SOURCES.values() for d in s.sha256.values()}) == 8
