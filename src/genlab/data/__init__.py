"""Datasets by name, and the corruptions of Zhang et al. (2017)."""
from genlab.data.corruptions import (
    corrupt_labels,
    gaussian_inputs,
    random_pixels,
    shuffled_pixels,
)
from genlab.data.registry import DATASETS, Dataset, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "corrupt_labels",
    "gaussian_inputs",
    "random_pixels",
    "shuffled_pixels",
]
