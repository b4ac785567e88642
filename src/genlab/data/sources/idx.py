"""MNIST and Fashion-MNIST from their four published IDX files.

IDX (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/; reused unchanged by Fashion-MNIST,
Xiao et al. 2017): a 32-bit big-endian magic number ``0x0000TTNN`` (TT = element type, 0x08 for
unsigned bytes; NN = number of dimensions), NN big-endian uint32 dimension sizes, then
prod(dims) bytes in row-major order. Images are 0x00000803 (n, rows, cols), labels 0x00000801 (n,).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from genlab.data.sources.fetch import (
    SOURCES,
    Fetch,
    RemoteSource,
    default_data_root,
    ensure_files,
    pinned,
)
from genlab.data.sources.fetch import (
    one_line as _one_line,
)
from genlab.errors import UserError

NUM_CLASSES = 10
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
MNIST_IMAGE_SIDE = 28

IdxSplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

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
SOURCES["mnist"] = RemoteSource(
    dataset="mnist",
    files=pinned(MNIST_SHA256),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        "https://storage.googleapis.com/cvdf-datasets/mnist",
        "http://yann.lecun.com/exdb/mnist",
    ),
    mirror_env_var="GENLAB_MNIST_MIRROR",
)
SOURCES["fashion-mnist"] = RemoteSource(
    dataset="fashion-mnist",
    files=pinned(FASHION_MNIST_SHA256),
    mirrors=(
        "https://fashion-mnist.s3.eu-central-1.amazonaws.com",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    ),
    mirror_env_var="GENLAB_FASHION_MNIST_MIRROR",
)
IDX_DATASETS = ("mnist", "fashion-mnist")


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
