"""Full MNIST, Fashion-MNIST and CIFAR-10 read from their published files.

The files are looked up in a local folder (``$GENLAB_DATA/<dataset>``, else
``~/.cache/genlab/data/<dataset>``). Missing files are downloaded only when allowed: each one
goes to a temporary file in that folder, its SHA-256 is compared with the digest pinned below,
and only then is it renamed into place, so a half-written or tampered file never looks complete.

Formats
-------
IDX (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/; reused unchanged by Fashion-MNIST,
Xiao et al. 2017): a 32-bit big-endian magic number ``0x0000TTNN`` (TT = element type, 0x08 for
unsigned bytes; NN = number of dimensions), NN big-endian uint32 dimension sizes, then
prod(dims) bytes in row-major order. Images are 0x00000803 (n, rows, cols), labels 0x00000801 (n,).

CIFAR-10 "python version" (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): six
pickled dicts (``data_batch_1..5``, ``test_batch``) whose ``b"data"`` is an (N, 3072) uint8 array,
each row the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in row-major
order (CHW), and ``b"labels"`` a list of N ints in 0..9. Returned here as HWC (N, 32, 32, 3).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from genlab.errors import UserError

DATA_ROOT_ENV_VAR = "GENLAB_DATA"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
NUM_CLASSES = 10

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
MNIST_IMAGE_SIDE = 28

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_IMAGE_SIDE = 32
CIFAR10_CHANNELS = 3

Fetch = Callable[[str, Path], None]
"""Downloads ``url`` into the file ``dest`` (raises OSError/URLError when it cannot)."""

IdxSplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RemoteFile:
    """One published file and the SHA-256 of its exact bytes."""

    name: str
    sha256: str


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset's files come from: mirrors tried in order, overridable by an env var."""

    dataset: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    mirror_env_var: str

    def file(self, name: str) -> RemoteFile:
        """The pinned entry for ``name``."""
        return next(f for f in self.files if f.name == name)


IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

# SHA-256 of the published files, as pinned by several independent projects (torchvision,
# TensorFlow Datasets, Keras) that download them.
MNIST_SHA256 = {
    IDX_TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    IDX_TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    IDX_TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    IDX_TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
FASHION_MNIST_SHA256 = {
    IDX_TRAIN_IMAGES: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    IDX_TRAIN_LABELS: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    IDX_TEST_IMAGES: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    IDX_TEST_LABELS: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
CIFAR10_SHA256 = {
    CIFAR10_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}


def _pinned(digests: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, sha256) for name, sha256 in digests.items())


SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        dataset="mnist",
        files=_pinned(MNIST_SHA256),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            "https://storage.googleapis.com/cvdf-datasets/mnist",
            "http://yann.lecun.com/exdb/mnist",
        ),
        mirror_env_var="GENLAB_MNIST_MIRROR",
    ),
    "fashion-mnist": RemoteSource(
        dataset="fashion-mnist",
        files=_pinned(FASHION_MNIST_SHA256),
        mirrors=(
            "https://fashion-mnist.s3.eu-central-1.amazonaws.com",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        ),
        mirror_env_var="GENLAB_FASHION_MNIST_MIRROR",
    ),
    "cifar10": RemoteSource(
        dataset="cifar10",
        files=_pinned(CIFAR10_SHA256),
        mirrors=("https://www.cs.toronto.edu/~kriz",),
        mirror_env_var="GENLAB_CIFAR10_MIRROR",
    ),
}
IDX_DATASETS = ("mnist", "fashion-mnist")


# --------------------------------------------------------------------------- locations


def default_data_root(dataset: str) -> Path:
    """``$GENLAB_DATA/<dataset>`` if set, else ``~/.cache/genlab/data/<dataset>``."""
    base = os.environ.get(DATA_ROOT_ENV_VAR, "").strip()
    parent = Path(base).expanduser() if base else Path.home() / ".cache" / "genlab" / "data"
    return parent / dataset


def mirror_urls(source: RemoteSource) -> tuple[str, ...]:
    """Base URLs to try in order: the source's env var (comma/space separated), else defaults."""
    override = os.environ.get(source.mirror_env_var, "").replace(",", " ").split()
    bases = tuple(override) if override else source.mirrors
    return tuple(base.rstrip("/") for base in bases)


# --------------------------------------------------------------------------- download


def fetch_url(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest`` with urllib; every socket wait is bounded by the timeout."""
    request = urllib.request.Request(url, headers={"User-Agent": "genlab"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        with open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ValueError: urllib's answer to a malformed mirror URL.
_DOWNLOAD_ERRORS = (
    urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException, ValueError
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _missing_files_error(
    dataset: str, missing: list[str], folder: Path, reason: str, alternative: str
) -> UserError:
    what = ", ".join(missing) + (f" {alternative}" if alternative else "")
    return UserError(
        f"{dataset}: missing {what} in {folder} ({reason}); "
        f"put the files in that folder, or set {DATA_ROOT_ENV_VAR} to use another data folder "
        f"(files are looked for in ${DATA_ROOT_ENV_VAR}/{dataset})"
    )


def _download_verified(
    source: RemoteSource, remote: RemoteFile, folder: Path, fetch: Fetch
) -> None:
    """Fetch ``remote`` from the first mirror that answers, check its SHA-256, rename into place.

    Raises UserError on a checksum mismatch (temp file deleted) and lets the last network
    error propagate when every mirror failed.
    """
    last_error: BaseException | None = None
    for base in mirror_urls(source):
        handle, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=folder)
        os.close(handle)
        tmp_path = Path(tmp_name)
        try:
            fetch(f"{base}/{remote.name}", tmp_path)
        except _DOWNLOAD_ERRORS as error:
            tmp_path.unlink(missing_ok=True)
            last_error = error
            continue
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        actual = sha256_of(tmp_path)
        if actual != remote.sha256:
            tmp_path.unlink(missing_ok=True)
            raise UserError(
                f"{source.dataset}: checksum mismatch for {remote.name} downloaded from {base}: "
                f"expected sha256 {remote.sha256}, got {actual}; the file was deleted"
            )
        os.replace(tmp_path, folder / remote.name)
        return
    raise last_error if last_error is not None else OSError("no mirror URL configured")


def ensure_files(
    source: RemoteSource,
    folder: Path,
    missing: list[str],
    download: bool,
    fetch: Fetch | None = None,
    alternative: str = "",
) -> None:
    """Make every file named in ``missing`` exist in ``folder``, downloading it if allowed.

    Raises one-line UserError naming the missing files (followed by ``alternative``, e.g. other
    accepted forms) and the folder when download is off or impossible.
    """
    if not missing:
        return
    if not download:
        reason = "download disabled"
        raise _missing_files_error(source.dataset, missing, folder, reason, alternative)
    fetch = fetch if fetch is not None else fetch_url
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot create the folder: {_one_line(error)}"
        raise _missing_files_error(source.dataset, missing, folder, reason, alternative) from error
    for position, name in enumerate(missing):
        try:
            _download_verified(source, source.file(name), folder, fetch)
        except _DOWNLOAD_ERRORS as error:
            reason = f"download of {name} failed on every mirror, last error: {_one_line(error)}"
            raise _missing_files_error(
                source.dataset, missing[position:], folder, reason, alternative
            ) from error


# --------------------------------------------------------------------------- IDX


def _read_possibly_gzipped(path: Path) -> bytes:
    """File bytes, gunzipped when the name ends in .gz; UserError naming the file if unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, zlib.error) as error:
        raise UserError(f"{path}: not a valid gzip file ({_one_line(error)})") from error
    except EOFError as error:
        raise UserError(f"{path}: gzip stream is truncated ({_one_line(error)})") from error
    except OSError as error:
        raise UserError(f"{path}: cannot read ({_one_line(error)})") from error


def parse_idx(raw: bytes, expected_magic: int, source: Path) -> np.ndarray:
    """Decode an IDX byte string of unsigned bytes into an array of shape ``dims``.

    Checks the magic number, that the header holds all ``ndim`` big-endian uint32 sizes, and
    that the payload is exactly prod(dims) bytes. ``source`` only names the file in errors.
    """
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < 4:
        raise UserError(f"{source}: file is {len(raw)} bytes, too short for an IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise UserError(
            f"{source}: bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x}); "
            "not an IDX file of this kind, or a compressed file without the .gz name"
        )
    if len(raw) < header_size:
        raise UserError(f"{source}: IDX header truncated ({len(raw)} bytes, needs {header_size})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_payload = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header_size
    if payload < expected_payload:
        raise UserError(
            f"{source}: truncated IDX file: header {dims} promises {expected_payload} data bytes, "
            f"found {payload}"
        )
    if payload > expected_payload:
        raise UserError(
            f"{source}: IDX file has {payload - expected_payload} unexpected bytes after the "
            f"{expected_payload} promised by header {dims}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _idx_file_path(folder: Path, gz_name: str) -> Path | None:
    """The gzipped file if present, else the uncompressed one (same name minus .gz), else None."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_idx_files(folder: Path) -> list[str]:
    names = (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, IDX_TEST_IMAGES, IDX_TEST_LABELS)
    return [name for name in names if _idx_file_path(folder, name) is None]


def _check_labels(labels: np.ndarray, source: Path) -> None:
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise UserError(f"{source}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}")


def _load_idx_split(
    folder: Path, images_name: str, labels_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) int64 of one split, with counts cross-checked."""
    images_path = _idx_file_path(folder, images_name)
    labels_path = _idx_file_path(folder, labels_name)
    assert images_path is not None and labels_path is not None
    images = parse_idx(_read_possibly_gzipped(images_path), IDX_IMAGES_MAGIC, images_path)
    labels = parse_idx(_read_possibly_gzipped(labels_path), IDX_LABELS_MAGIC, labels_path)
    if images.shape[1:] != (MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE):
        raise UserError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {MNIST_IMAGE_SIDE}x{MNIST_IMAGE_SIDE}"
        )
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    _check_labels(labels, labels_path)
    return images, labels.astype(np.int64)


def load_idx_dataset(
    name: str,
    root: Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
) -> IdxSplits:
    """Load MNIST or Fashion-MNIST from the four published IDX files.

    Returns ``(x_train, y_train, x_test, y_test)``: images uint8 (n, 28, 28), labels int64 in
    0..9 (60000 train / 10000 test for the published files). Files may be gzipped or not.
    ``fetch(url, dest)`` replaces the urllib downloader (tests pass a fake one).

    Example::

        x_train, y_train, x_test, y_test = load_idx_dataset("mnist", download=False)
    """
    if name not in IDX_DATASETS:
        raise UserError(f"unknown IDX dataset {name!r}; choose one of {', '.join(IDX_DATASETS)}")
    folder = Path(root).expanduser() if root is not None else default_data_root(name)
    missing = _missing_idx_files(folder)
    alternative = "(or uncompressed, without .gz)"
    ensure_files(SOURCES[name], folder, missing, download, fetch, alternative=alternative)
    x_train, y_train = _load_idx_split(folder, IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS)
    x_test, y_test = _load_idx_split(folder, IDX_TEST_IMAGES, IDX_TEST_LABELS)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- CIFAR-10


def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    """The only callables a CIFAR batch pickle needs: numpy's array rebuild and Python 2 bytes."""
    # ndarray.__reduce__ names numpy's private rebuild function, whatever module numpy keeps it in.
    reconstruct = np.zeros(1).__reduce__()[0]
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler refusing every global but the few a CIFAR batch uses, so it runs no code."""

    allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError
    ) as error:
        raise UserError(
            f"{path}: not a readable CIFAR-10 batch pickle ({_one_line(error)})"
        ) from error
    except OSError as error:
        raise UserError(f"{path}: cannot read ({_one_line(error)})") from error
    if not isinstance(batch, dict):
        raise UserError(f"{path}: CIFAR-10 batch should be a dict, found {type(batch).__name__}")
    return batch


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: images uint8 (N, 32, 32, 3) in HWC order and labels int64 (N,).

    Row r of ``b"data"`` holds channel c, pixel (h, w) at column c*1024 + h*32 + w.
    """
    batch = _unpickle_batch(path)
    for key in (b"data", b"labels"):
        if key not in batch:
            keys = ", ".join(sorted(map(repr, batch)))
            raise UserError(f"{path}: CIFAR-10 batch has no {key!r} entry (keys: {keys})")
    row_length = CIFAR10_CHANNELS * CIFAR10_IMAGE_SIDE * CIFAR10_IMAGE_SIDE
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_length:
        raise UserError(
            f"{path}: b'data' should be uint8 of shape (N, {row_length}), "
            f"found {data.dtype} {data.shape}"
        )
    labels = np.asarray(batch[b"labels"])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{path}: b'labels' should be {data.shape[0]} integers, "
            f"found {labels.dtype} {labels.shape}"
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise UserError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    side = CIFAR10_IMAGE_SIDE
    images = data.reshape(-1, CIFAR10_CHANNELS, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _unsafe_member_reason(member: tarfile.TarInfo) -> str | None:
    """Why a tar member may not be extracted (None when it is a plain file or folder inside)."""
    name = member.name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]):
        return "absolute path"
    if ".." in parts:
        return "path with '..'"
    if not (member.isfile() or member.isdir()):
        return "link or special file"
    return None


def extract_cifar10_archive(archive: Path, root: Path) -> None:
    """Extract ``cifar-10-batches-py/`` from ``archive`` into ``root``, refusing unsafe members.

    Every member is checked before anything is written; extraction goes to a temporary folder
    and files are then moved into ``root/cifar-10-batches-py``, so an interrupted run leaves no
    half-written batch behind.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_member_reason(member)
                if reason is not None:
                    raise UserError(
                        f"{archive}: refusing to extract member {member.name!r} ({reason})"
                    )
            staging = Path(tempfile.mkdtemp(prefix=".cifar10-extract-", dir=root))
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # Python without extraction filters; members were validated above
                    tar.extractall(staging, members=members)
                _move_extracted_batches(staging / CIFAR10_FOLDER, root / CIFAR10_FOLDER, archive)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"{archive}: not a readable tar.gz archive ({_one_line(error)})") from error
    except OSError as error:
        raise UserError(f"{archive}: extraction into {root} failed ({_one_line(error)})") from error


def _move_extracted_batches(extracted: Path, destination: Path, archive: Path) -> None:
    if not extracted.is_dir():
        raise UserError(f"{archive}: archive has no {CIFAR10_FOLDER}/ folder")
    destination.mkdir(exist_ok=True)
    for item in extracted.iterdir():
        target = destination / item.name
        if item.is_file() and not target.exists():
            os.replace(item, target)


def _cifar10_batch_names() -> tuple[str, ...]:
    return (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)


def _cifar10_batches_present(root: Path) -> bool:
    return all((root / CIFAR10_FOLDER / name).is_file() for name in _cifar10_batch_names())


def load_cifar10(
    root: Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
) -> IdxSplits:
    """Load CIFAR-10 (python version) as ``(x_train, y_train, x_test, y_test)``.

    Images uint8 (N, 32, 32, 3) HWC, labels int64 in 0..9 (50000 train / 10000 test for the
    published files). Read from ``root/cifar-10-batches-py/`` or, when incomplete, from
    ``root/cifar-10-python.tar.gz`` (extracted safely), downloading the archive if allowed.
    """
    folder = Path(root).expanduser() if root is not None else default_data_root("cifar10")
    if not _cifar10_batches_present(folder):
        archive = folder / CIFAR10_ARCHIVE
        missing = [] if archive.is_file() else [CIFAR10_ARCHIVE]
        alternative = f"(or the extracted {CIFAR10_FOLDER}/ folder)"
        ensure_files(SOURCES["cifar10"], folder, missing, download, fetch, alternative=alternative)
        extract_cifar10_archive(archive, folder)
        if not _cifar10_batches_present(folder):
            batches = folder / CIFAR10_FOLDER
            absent = [n for n in _cifar10_batch_names() if not (batches / n).is_file()]
            raise UserError(f"{archive}: archive lacks {', '.join(absent)} in {CIFAR10_FOLDER}/")
    train = [read_cifar10_batch(folder / CIFAR10_FOLDER / name) for name in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = read_cifar10_batch(folder / CIFAR10_FOLDER / CIFAR10_TEST_BATCH)
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    return x_train, y_train, x_test, y_test
