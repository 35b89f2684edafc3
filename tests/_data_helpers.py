"""Helpers for tests/test_data.py: small IDX files written by hand, and an HTTP server on 127.0.0.1 that
serves a folder and counts the requests it answers. Nothing here reaches beyond the loopback interface."""
import contextlib
import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading

import numpy as np

IDX_TYPE_CODES = {np.dtype(">u1"): 0x08, np.dtype(">i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
                  np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(a):
    """The IDX encoding of array ``a``: 0, 0, type code, ndim, big-endian uint32 sizes, big-endian values."""
    a = np.asarray(a)
    big = a.dtype.newbyteorder(">")
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_CODES[big], a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(big).tobytes()


def small_mnist(n_train=12, n_test=6, seed=0):
    """Random 28x28 uint8 images and labels 0-9: {stem: array}."""
    rng = np.random.default_rng(seed)
    return {STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
            STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_idx_folder(folder, arrays, gz=True):
    """Write each array as ``<stem>`` or ``<stem>.gz`` (``gz`` True, False or a set of stems to gzip).
    Returns {file name: sha256 of the bytes written}."""
    digests = {}
    for stem, a in arrays.items():
        zipped = gz if isinstance(gz, bool) else stem in gz
        data = idx_bytes(a)
        if zipped:
            data = gzip.compress(data, mtime=0)
        name = stem + (".gz" if zipped else "")
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):       # keep test output quiet
        pass


@contextlib.contextmanager
def serve_folder(folder):
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) from a thread. Yields (base URL, the list of
    request paths it received); the server is shut down on exit."""
    handler = functools.partial(_CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url():
    """A base URL on 127.0.0.1 where nothing listens: a port the kernel just handed out, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def isolate(monkeypatch, tmp_path):
    """Keep a test on this machine: no proxy between urllib and 127.0.0.1, the cache folder under ``tmp_path``,
    and both datasets' base URLs pointing at a closed local port unless the test says otherwise."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("MINIVAE_DATA", str(tmp_path / "cache"))
    closed = closed_port_url()
    monkeypatch.setenv("MINIVAE_MNIST_URL", closed)
    monkeypatch.setenv("MINIVAE_FASHION_MNIST_URL", closed)
    return closed
