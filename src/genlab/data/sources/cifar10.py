"""CIFAR-10 from its published archive of pickled batches, unpickled without running code.

CIFAR-10 "python version" (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): six
pickled dicts (``data_batch_1..5``, ``test_batch``) whose ``b"data"`` is an (N, 3072) uint8 array,
each row the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in row-major
order (CHW), and ``b"labels"`` a list of N ints in 0..9. Returned here as HWC (N, 32, 32, 3).
The batches are read by an unpickler that refuses every global but numpy's array rebuild.
"""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from genlab.data.sources.fetch import (
    SOURCES,
    Fetch,
    RemoteSource,
    default_data_root,
    ensure_files,
    extract_safely,
    pinned,
)
from genlab.data.sources.fetch import (
    one_line as _one_line,
)
from genlab.data.sources.idx import NUM_CLASSES, IdxSplits
from genlab.errors import UserError

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_IMAGE_SIDE = 32
CIFAR10_CHANNELS = 3

CIFAR10_SHA256 = {
    CIFAR10_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}
SOURCES["cifar10"] = RemoteSource(
    dataset="cifar10",
    files=pinned(CIFAR10_SHA256),
    mirrors=("https://www.cs.toronto.edu/~kriz",),
    mirror_env_var="GENLAB_CIFAR10_MIRROR",
)


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


def extract_cifar10_archive(archive: Path, root: Path) -> None:
    """Extract ``cifar-10-batches-py/`` from ``archive`` into ``root``, refusing unsafe members.

    Every member is checked before anything is written; extraction goes to a temporary folder
    and files are then moved into ``root/cifar-10-batches-py``, so an interrupted run leaves no
    half-written batch behind.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            staging = Path(tempfile.mkdtemp(prefix=".cifar10-extract-", dir=root))
            try:
                extract_safely(tar, archive, staging)
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
