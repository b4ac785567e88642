"""Downloads: verified against pinned SHA-256 digests, tested on a local HTTP server (127.0.0.1),
and the suite's guard that keeps every test off the network."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import struct
import threading
import urllib.error
import urllib.request
from dataclasses import replace

import numpy as np
import pytest

import conftest
from genlab.data.sources import fetch, idx

IDX_NAMES = (idx.IDX_TRAIN_IMAGES, idx.IDX_TRAIN_LABELS, idx.IDX_TEST_IMAGES, idx.IDX_TEST_LABELS)


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def tiny_mnist(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {idx.IDX_TRAIN_IMAGES: idx_gz(rng.integers(0, 256, (30, 28, 28))),
            idx.IDX_TRAIN_LABELS: idx_gz(rng.integers(0, 10, 30)),
            idx.IDX_TEST_IMAGES: idx_gz(rng.integers(0, 256, (20, 28, 28))),
            idx.IDX_TEST_LABELS: idx_gz(rng.integers(0, 10, 20))}


@pytest.fixture
def local_server():
    """An HTTP server on 127.0.0.1 serving ``server.files`` (name -> bytes); it records each path asked."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            server.requested.append(self.path)
            body = server.files.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.files, server.requested = {}, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/mnist"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)




MNIST = ["run", "randomization", "--dataset", "mnist", "--preset", "smoke", "--epochs", "1", "--n-train", "30",
         "--n-test", "20", "--quiet"]


def test_a_download_whose_checksum_differs_is_deleted_and_named(local_server, tmp_path, monkeypatch, genlab_cli):
    local_server.files = tiny_mnist()                      # not the published bytes: every digest differs
    monkeypatch.setenv("GENLAB_MNIST_MIRROR", local_server.url)
    folder = tmp_path / "data"
    code, err = genlab_cli(MNIST + ["--data-root", str(folder), "--out", str(tmp_path / "run")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    name = idx.IDX_TRAIN_IMAGES
    assert f"checksum mismatch for {name} downloaded from {local_server.url}" in err
    assert idx.MNIST_SHA256[name] in err and hashlib.sha256(local_server.files[name]).hexdigest() in err
    assert "the file was deleted" in err
    assert list(folder.iterdir()) == []                   # no partial or renamed file is left
    assert local_server.requested == [f"/mnist/{name}"]


def test_a_verified_download_from_a_local_server_trains(local_server, tmp_path, monkeypatch, genlab_cli):
    local_server.files = tiny_mnist()
    pins = tuple(fetch.RemoteFile(n, hashlib.sha256(b).hexdigest()) for n, b in local_server.files.items())
    monkeypatch.setitem(fetch.SOURCES, "mnist", replace(fetch.SOURCES["mnist"], files=pins))
    monkeypatch.setenv("GENLAB_MNIST_MIRROR", f"http://127.0.0.1:9/dead, {local_server.url}")
    folder = tmp_path / "data"
    code, err = genlab_cli(MNIST + ["--data-root", str(folder), "--out", str(tmp_path / "run")])
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_NAMES)
    assert all((folder / n).read_bytes() == b for n, b in local_server.files.items())
    assert sorted(local_server.requested) == sorted(f"/mnist/{n}" for n in IDX_NAMES)


def test_missing_files_with_no_reachable_mirror_name_the_folder(tmp_path, monkeypatch, genlab_cli):
    """The dataset files are absent and the fetch fails (patched): one line naming the folder and files."""
    asked = []

    def offline(url, dest):
        asked.append(url)
        raise urllib.error.URLError("offline (patched fetch)")

    monkeypatch.setattr(fetch, "fetch_url", offline)
    monkeypatch.delenv("GENLAB_MNIST_MIRROR")
    folder = tmp_path / "nothing"
    code, err = genlab_cli(MNIST + ["--data-root", str(folder), "--out", str(tmp_path / "run")])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(folder) in err and all(n in err for n in IDX_NAMES) and "offline (patched fetch)" in err
    assert asked == [f"{m}/{idx.IDX_TRAIN_IMAGES}" for m in fetch.SOURCES["mnist"].mirrors]  # each mirror once


# ----- the guard ---------------------------------------------------------------------------------------
@pytest.fixture
def recorded(monkeypatch):
    """Replace what the guard lets through with a recorder, so nothing here can reach a real host."""
    calls = []
    monkeypatch.setitem(conftest.REAL, "connect", lambda sock, address: calls.append(("connect", address)))
    monkeypatch.setitem(conftest.REAL, "connect_ex", lambda sock, address: calls.append(("connect_ex", address)) or 0)
    monkeypatch.setitem(conftest.REAL, "getaddrinfo", lambda host, *a, **k: calls.append(("getaddrinfo", host)) or [])
    return calls


@pytest.mark.parametrize("address", [("192.0.2.1", 80), ("2001:db8::1", 443, 0, 0), ("example.org", 80)])
def test_the_guard_refuses_connections_off_this_machine(address, recorded):
    with socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET) as sock:
        with pytest.raises(conftest.NetworkBlocked):
            sock.connect(address)
        with pytest.raises(conftest.NetworkBlocked):
            sock.connect_ex(address)
    with pytest.raises(conftest.NetworkBlocked):
        socket.getaddrinfo(address[0], 80)
    assert recorded == []


def test_the_guard_refuses_urllib_downloads(recorded):
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen("http://example.org/mnist/train-images-idx3-ubyte.gz", timeout=5)
    assert isinstance(caught.value.reason, conftest.NetworkBlocked)
    assert recorded == []


def test_the_guard_lets_loopback_through(recorded):
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))
        sock.connect_ex(("::1", 9, 0, 0))
    socket.getaddrinfo("localhost", 9)
    assert recorded == [("connect", ("127.0.0.1", 9)), ("connect_ex", ("::1", 9, 0, 0)), ("getaddrinfo", "localhost")]


def test_subprocesses_get_a_closed_local_mirror():
    import os

    assert all(os.environ[v] == conftest.LOOPBACK_MIRROR for v in conftest.MIRROR_VARIABLES)
