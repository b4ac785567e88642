"""Datasets read from their published files: verified download and safe extraction (fetch),
MNIST/Fashion-MNIST IDX files (idx), CIFAR-10 pickled batches (cifar10)."""
from genlab.data.sources import cifar10, idx
from genlab.data.sources.fetch import SOURCES, RemoteFile, RemoteSource, default_data_root

__all__ = ["SOURCES", "RemoteFile", "RemoteSource", "cifar10", "default_data_root", "idx"]
