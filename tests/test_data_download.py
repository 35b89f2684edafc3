"""Tests for the download path of minivae/data.py, on the loopback interface only: a local http.server serves
small IDX files, the expected SHA-256 digests are patched to theirs, and "no network" is a closed local port."""
import os
import re

import numpy as np
import pytest

from _data_helpers import STEMS, isolate, serve_folder, small_mnist, write_idx_folder
from minivae.data import IDX_SOURCES, DataError, download, load_dataset, load_idx_dataset


@pytest.fixture(autouse=True)
def closed_url(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


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
