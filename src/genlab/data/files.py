"""Full MNIST, Fashion-MNIST and CIFAR-10 read from their published files (the names of
:mod:`genlab.data.sources`, kept importable from here).

Download and extraction live in :mod:`genlab.data.sources.fetch`, the IDX format in
:mod:`genlab.data.sources.idx`, CIFAR-10's pickled batches in :mod:`genlab.data.sources.cifar10`.
"""
from genlab.data.sources.cifar10 import (
    CIFAR10_ARCHIVE,
    CIFAR10_FOLDER,
    CIFAR10_SHA256,
    extract_cifar10_archive,
    load_cifar10,
    read_cifar10_batch,
)
from genlab.data.sources.fetch import (
    DATA_ROOT_ENV_VAR,
    SOURCES,
    Fetch,
    RemoteFile,
    RemoteSource,
    default_data_root,
    ensure_files,
    fetch_url,
    mirror_urls,
    sha256_of,
)
from genlab.data.sources.idx import (
    FASHION_MNIST_SHA256,
    IDX_DATASETS,
    MNIST_SHA256,
    IdxSplits,
    load_idx_dataset,
    parse_idx,
)

__all__ = [
    "CIFAR10_ARCHIVE", "CIFAR10_FOLDER", "CIFAR10_SHA256", "DATA_ROOT_ENV_VAR", "FASHION_MNIST_SHA256",
    "IDX_DATASETS", "MNIST_SHA256", "SOURCES", "Fetch", "IdxSplits", "RemoteFile", "RemoteSource",
    "default_data_root", "ensure_files", "extract_cifar10_archive", "fetch_url", "load_cifar10",
    "load_idx_dataset", "mirror_urls", "parse_idx", "read_cifar10_batch", "sha256_of",
]
