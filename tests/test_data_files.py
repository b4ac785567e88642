"""Loaders for MNIST / Fashion-MNIST (IDX) and CIFAR-10 (pickles), on tiny files written here.

The files are built byte by byte from the published format descriptions, independently of the
parser, so a parser that misreads the header, the byte order or the CHW layout fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from genlab.data import files
from genlab.data.sources import fetch
from genlab.errors import UserError

N_TRAIN, N_TEST = 7, 3
IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def no_real_network(monkeypatch):
    """Any test that forgets to inject a fake fetch fails instead of touching the network."""

    def refuse(url: str, dest: Path) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(fetch, "fetch_url", refuse)
    for variable in ("GENLAB_DATA", "GENLAB_MNIST_MIRROR", "GENLAB_FASHION_MNIST_MIRROR"):
        monkeypatch.delenv(variable, raising=False)


# --------------------------------------------------------------------------- file builders


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0x0000 08 ndim, big-endian uint32 sizes, raw bytes."""
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return magic + sizes + array.astype(np.uint8).tobytes(order="C")


def make_idx_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        IDX_NAMES[0]: rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: rng.integers(0, 10, size=N_TRAIN, dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: rng.integers(0, 10, size=N_TEST, dtype=np.uint8),
    }


def idx_file_bytes(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Published .gz file name -> gzipped IDX bytes."""
    return {name: gzip.compress(idx_bytes(array)) for name, array in arrays.items()}


def write_idx_files(folder: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        raw = idx_bytes(array)
        if compressed:
            (folder / name).write_bytes(gzip.compress(raw))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(raw)


CIFAR_SIZES = {
    "data_batch_1": 2, "data_batch_2": 3, "data_batch_3": 1, "data_batch_4": 2, "data_batch_5": 2,
    "test_batch": 3,
}


def make_cifar_batches(seed: int) -> dict[str, dict[bytes, object]]:
    """Batches as the published pickles hold them: (N, 3072) uint8 CHW rows, labels a list."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name, n in CIFAR_SIZES.items():
        batches[name] = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
    return batches


def write_cifar_folder(root: Path, batches: dict[str, dict]) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def add_tar_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar_archive(root: Path, batches: dict[str, dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, batch in batches.items():
            add_tar_bytes(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
    return archive


def expected_hwc(data: np.ndarray) -> np.ndarray:
    """x[i, h, w, c] = data[i, c*1024 + h*32 + w], written out with explicit loops."""
    n = data.shape[0]
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for c in range(3):
        for h in range(32):
            for w in range(32):
                out[:, h, w, c] = data[:, c * 1024 + h * 32 + w]
    return out


# --------------------------------------------------------------------------- IDX


def check_idx_result(result, arrays) -> None:
    x_train, y_train, x_test, y_test = result
    assert x_train.shape == (N_TRAIN, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (N_TEST, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (N_TRAIN,) and y_train.dtype == np.int64
    assert y_test.shape == (N_TEST,) and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, arrays[IDX_NAMES[0]])
    np.testing.assert_array_equal(y_train, arrays[IDX_NAMES[1]])
    np.testing.assert_array_equal(x_test, arrays[IDX_NAMES[2]])
    np.testing.assert_array_equal(y_test, arrays[IDX_NAMES[3]])


def test_gzipped_idx_files_load_exactly(tmp_path):
    arrays = make_idx_arrays(seed=0)
    write_idx_files(tmp_path, arrays)
    check_idx_result(files.load_idx_dataset("mnist", root=tmp_path, download=False), arrays)


def test_uncompressed_idx_files_load_exactly(tmp_path):
    arrays = make_idx_arrays(seed=1)
    write_idx_files(tmp_path, arrays, compressed=False)
    check_idx_result(files.load_idx_dataset("fashion-mnist", root=tmp_path, download=False), arrays)


def test_pixel_order_is_row_major_with_big_endian_header(tmp_path):
    arrays = make_idx_arrays(seed=2)
    image = np.zeros((28, 28), dtype=np.uint8)
    image[3, 17] = 200  # row 3, column 17 -> byte 3*28+17 of the image
    arrays[IDX_NAMES[0]][0] = image
    write_idx_files(tmp_path, arrays)
    raw = gzip.decompress((tmp_path / IDX_NAMES[0]).read_bytes())
    assert raw[16 + 3 * 28 + 17] == 200
    x_train = files.load_idx_dataset("mnist", root=tmp_path, download=False)[0]
    assert x_train[0, 3, 17] == 200 and int(x_train[0].sum()) == 200


def test_default_root_follows_genlab_data(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=3)
    write_idx_files(tmp_path / "mnist", arrays)
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path))
    assert files.default_data_root("mnist") == tmp_path / "mnist"
    check_idx_result(files.load_idx_dataset("mnist", download=False), arrays)
    monkeypatch.delenv("GENLAB_DATA")
    home_default = Path.home() / ".cache" / "genlab" / "data" / "cifar10"
    assert files.default_data_root("cifar10") == home_default


def test_truncated_idx_payload_names_the_file(tmp_path):
    arrays = make_idx_arrays(seed=4)
    write_idx_files(tmp_path, arrays)
    raw = idx_bytes(arrays[IDX_NAMES[0]])
    (tmp_path / IDX_NAMES[0]).write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(UserError) as caught:
        files.load_idx_dataset("mnist", root=tmp_path, download=False)
    message = str(caught.value)
    assert IDX_NAMES[0] in message and "truncated" in message
    assert str(N_TRAIN * 28 * 28) in message and str(N_TRAIN * 28 * 28 - 5) in message


def test_extra_bytes_after_payload_are_rejected(tmp_path):
    arrays = make_idx_arrays(seed=5)
    write_idx_files(tmp_path, arrays, compressed=False)
    path = tmp_path / IDX_NAMES[3].removesuffix(".gz")
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.*2 unexpected bytes"):
        files.load_idx_dataset("mnist", root=tmp_path, download=False)


def test_bad_magic_number_names_the_file(tmp_path):
    arrays = make_idx_arrays(seed=6)
    write_idx_files(tmp_path, arrays)
    # A label file where an image file belongs: magic 0x801 instead of 0x803.
    (tmp_path / IDX_NAMES[2]).write_bytes(gzip.compress(idx_bytes(arrays[IDX_NAMES[3]])))
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte\.gz.*0x00000801.*0x00000803"):
        files.load_idx_dataset("mnist", root=tmp_path, download=False)


def test_bad_and_truncated_gzip_name_the_file(tmp_path):
    arrays = make_idx_arrays(seed=7)
    write_idx_files(tmp_path, arrays)
    (tmp_path / IDX_NAMES[1]).write_bytes(b"this is not gzip")
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz: not a valid gzip"):
        files.load_idx_dataset("mnist", root=tmp_path, download=False)
    whole = gzip.compress(idx_bytes(arrays[IDX_NAMES[0]]))
    (tmp_path / IDX_NAMES[1]).write_bytes(gzip.compress(idx_bytes(arrays[IDX_NAMES[1]])))
    (tmp_path / IDX_NAMES[0]).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz: gzip stream is truncated"):
        files.load_idx_dataset("mnist", root=tmp_path, download=False)


def test_image_and_label_counts_must_agree(tmp_path):
    arrays = make_idx_arrays(seed=8)
    arrays[IDX_NAMES[3]] = arrays[IDX_NAMES[3]][:2]
    write_idx_files(tmp_path, arrays)
    with pytest.raises(UserError, match="holds 3 images but .* holds 2 labels"):
        files.load_idx_dataset("mnist", root=tmp_path, download=False)


def test_unknown_idx_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="'kmnist'.*mnist, fashion-mnist"):
        files.load_idx_dataset("kmnist", root=tmp_path)


# --------------------------------------------------------------------------- download


class FakeServer:
    """fetch(url, dest) stand-in: serves bytes by file name, or fails like a dead network."""

    def __init__(self, payloads: dict[str, bytes] | None = None, fail_hosts: tuple[str, ...] = ()):
        self.payloads = payloads or {}
        self.fail_hosts = fail_hosts
        self.requested: list[str] = []

    def __call__(self, url: str, dest: Path) -> None:
        self.requested.append(url)
        if not self.payloads or any(host in url for host in self.fail_hosts):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        dest.write_bytes(self.payloads[url.rsplit("/", 1)[-1]])


def pin_hashes(monkeypatch, dataset: str, payloads: dict[str, bytes]) -> None:
    """Make the module expect the SHA-256 of our tiny files instead of the published ones."""
    source = files.SOURCES[dataset]
    pinned = tuple(
        files.RemoteFile(name, hashlib.sha256(blob).hexdigest()) for name, blob in payloads.items()
    )
    monkeypatch.setitem(files.SOURCES, dataset, replace(source, files=pinned))


def test_verified_download_lands_files_and_uses_mirror_env(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=9)
    payloads = idx_file_bytes(arrays)
    pin_hashes(monkeypatch, "mnist", payloads)
    monkeypatch.setenv("GENLAB_MNIST_MIRROR", "https://dead.example/mnist, https://good.example/m/")
    server = FakeServer(payloads, fail_hosts=("dead.example",))
    folder = tmp_path / "new" / "mnist"
    check_idx_result(files.load_idx_dataset("mnist", root=folder, fetch=server), arrays)
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_NAMES)  # no temp files left
    assert server.requested[:2] == [f"https://dead.example/mnist/{IDX_NAMES[0]}",
                                    f"https://good.example/m/{IDX_NAMES[0]}"]
    assert all(url.startswith(("https://dead.example/mnist/", "https://good.example/m/"))
               for url in server.requested)


def test_only_missing_files_are_downloaded(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=10)
    payloads = idx_file_bytes(arrays)
    pin_hashes(monkeypatch, "fashion-mnist", payloads)
    write_idx_files(tmp_path, {name: arrays[name] for name in IDX_NAMES[:3]}, compressed=False)
    server = FakeServer(payloads)
    check_idx_result(files.load_idx_dataset("fashion-mnist", root=tmp_path, fetch=server), arrays)
    assert [url.rsplit("/", 1)[-1] for url in server.requested] == [IDX_NAMES[3]]


def test_checksum_mismatch_deletes_download_and_reports_both_hashes(tmp_path):
    tampered = b"not the published MNIST bytes"
    server = FakeServer({name: tampered for name in IDX_NAMES})
    with pytest.raises(UserError) as caught:
        files.load_idx_dataset("mnist", root=tmp_path, fetch=server)
    message = str(caught.value)
    expected = files.SOURCES["mnist"].file(IDX_NAMES[0]).sha256
    assert IDX_NAMES[0] in message
    assert expected in message and hashlib.sha256(tampered).hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # neither the temp file nor a renamed file remains


def test_no_network_gives_one_line_naming_folder_and_files(tmp_path):
    folder = tmp_path / "data" / "mnist"
    with pytest.raises(UserError) as caught:
        files.load_idx_dataset("mnist", root=folder, fetch=FakeServer())
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder) in message and "GENLAB_DATA" in message
    assert all(name in message for name in IDX_NAMES)
    assert [p for p in folder.iterdir()] == []


def test_download_disabled_never_fetches(tmp_path):
    server = FakeServer()
    with pytest.raises(UserError, match="download disabled") as caught:
        files.load_cifar10(root=tmp_path, download=False, fetch=server)
    assert server.requested == []
    assert "cifar-10-python.tar.gz" in str(caught.value) and str(tmp_path) in str(caught.value)


def test_pinned_hashes_are_sha256_hex_for_every_published_file():
    for source in files.SOURCES.values():
        for remote in source.files:
            assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
    assert {f.name for f in files.SOURCES["mnist"].files} == set(IDX_NAMES)
    assert {f.name for f in files.SOURCES["fashion-mnist"].files} == set(IDX_NAMES)
    assert [f.name for f in files.SOURCES["cifar10"].files] == ["cifar-10-python.tar.gz"]


# --------------------------------------------------------------------------- CIFAR-10


def check_cifar_result(result, batches) -> None:
    x_train, y_train, x_test, y_test = result
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    n_train = sum(CIFAR_SIZES[name] for name in train_names)
    assert x_train.shape == (n_train, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (CIFAR_SIZES["test_batch"], 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    train_data = np.concatenate([batches[name][b"data"] for name in train_names])
    np.testing.assert_array_equal(x_train, expected_hwc(train_data))
    train_labels = [label for name in train_names for label in batches[name][b"labels"]]
    np.testing.assert_array_equal(y_train, train_labels)
    np.testing.assert_array_equal(x_test, expected_hwc(batches["test_batch"][b"data"]))
    np.testing.assert_array_equal(y_test, batches["test_batch"][b"labels"])


def test_cifar10_from_extracted_folder(tmp_path):
    batches = make_cifar_batches(seed=11)
    write_cifar_folder(tmp_path, batches)
    check_cifar_result(files.load_cifar10(root=tmp_path, download=False), batches)


def test_cifar10_from_archive_extracts_then_reads(tmp_path):
    batches = make_cifar_batches(seed=12)
    write_cifar_archive(tmp_path, batches)
    check_cifar_result(files.load_cifar10(root=tmp_path, download=False), batches)
    extracted = sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir())
    assert extracted == sorted(CIFAR_SIZES)
    left_in_root = sorted(p.name for p in tmp_path.iterdir())
    assert left_in_root == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # staging removed


def test_cifar10_download_verifies_archive(tmp_path, monkeypatch):
    batches = make_cifar_batches(seed=13)
    archive_bytes = write_cifar_archive(tmp_path / "build", batches).read_bytes()
    payloads = {"cifar-10-python.tar.gz": archive_bytes}
    pin_hashes(monkeypatch, "cifar10", payloads)
    root = tmp_path / "root"
    check_cifar_result(files.load_cifar10(root=root, fetch=FakeServer(payloads)), batches)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == archive_bytes


@pytest.mark.parametrize("bad_name", ["../evil", "cifar-10-batches-py/../../evil", "/tmp/evil"])
def test_archive_members_escaping_root_are_refused(tmp_path, bad_name):
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        add_tar_bytes(tar, "cifar-10-batches-py/data_batch_1", b"x")
        add_tar_bytes(tar, bad_name, b"payload")
    with pytest.raises(UserError, match=r"cifar-10-python\.tar\.gz.*refusing.*evil"):
        files.load_cifar10(root=root, download=False)
    assert not (tmp_path / "evil").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_symlink_member_is_refused(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="link or special file"):
        files.load_cifar10(root=tmp_path, download=False)


def python2_style_batch_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """Protocol-2 pickle laid out as Python 2's cPickle wrote the published batches.

    numpy 1.x module path ``numpy.core.multiarray``, byte payloads as BINSTRING (Python 2 str),
    dtype rebuilt from ``numpy.dtype('u1')`` with its version-3 state tuple.
    """

    def short_str(raw: bytes) -> bytes:
        return b"U" + bytes([len(raw)]) + raw

    n_rows, n_cols = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
        + b"K\x00\x85" + short_str(b"b") + b"\x87R"
        + b"(K\x01" + b"M" + struct.pack("<H", n_rows) + b"M" + struct.pack("<H", n_cols) + b"\x86"
        + b"cnumpy\ndtype\n" + short_str(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + short_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89" + b"T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb"
    )
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return (
        b"\x80\x02}(" + short_str(b"data") + array + short_str(b"labels") + label_list + b"u."
    )


def test_cifar10_reads_python2_style_pickles(tmp_path):
    batches = make_cifar_batches(seed=17)
    folder = write_cifar_folder(tmp_path, batches)
    for name in ("data_batch_4", "test_batch"):
        batch = batches[name]
        raw = python2_style_batch_pickle(batch[b"data"], batch[b"labels"])
        (folder / name).write_bytes(raw)
    check_cifar_result(files.load_cifar10(root=tmp_path, download=False), batches)


def test_cifar_batch_missing_key_names_file_and_key(tmp_path):
    batches = make_cifar_batches(seed=14)
    del batches["data_batch_3"][b"labels"]
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(UserError, match=r"data_batch_3: CIFAR-10 batch has no b'labels'"):
        files.load_cifar10(root=tmp_path, download=False)


def test_cifar_batch_with_wrong_row_length_is_rejected(tmp_path):
    batches = make_cifar_batches(seed=15)
    batches["test_batch"][b"data"] = batches["test_batch"][b"data"][:, :3000]
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(UserError, match=r"test_batch: b'data' should be uint8 of shape \(N, 3072"):
        files.load_cifar10(root=tmp_path, download=False)


def test_corrupt_pickle_and_foreign_globals_are_refused(tmp_path):
    batches = make_cifar_batches(seed=16)
    folder = write_cifar_folder(tmp_path, batches)
    truncated = pickle.dumps(batches["data_batch_2"], protocol=2)[:100]
    (folder / "data_batch_2").write_bytes(truncated)
    with pytest.raises(UserError, match="data_batch_2: not a readable CIFAR-10 batch pickle"):
        files.load_cifar10(root=tmp_path, download=False)
    # A pickle that would call os.system when loaded by an unrestricted unpickler.
    (folder / "data_batch_2").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(UserError, match="refusing to load global os.system"):
        files.load_cifar10(root=tmp_path, download=False)
