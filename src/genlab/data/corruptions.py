"""Corruptions of a training set used by the randomization tests (Zhang et al. 2017, Sec. 2).

All functions are pure: they take an explicit ``numpy.random.Generator`` seed and return new
arrays. Inputs are flattened per example for the pixel corruptions and reshaped back.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from genlab.errors import UserError

LabelNoise = Literal["uniform", "other"]


def corrupt_labels(
    labels: np.ndarray,
    p: float,
    num_classes: int,
    seed: int,
    mode: LabelNoise = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt labels with probability ``p``.

    Each example is selected independently with probability p. A selected label is replaced by

    * ``mode="uniform"`` (Zhang et al. 2017): a class drawn uniformly from all K classes, so it
      keeps its true value with probability 1/K and the expected fraction of wrong labels is
      p (K-1)/K;
    * ``mode="other"`` (Nakkiran et al. 2019): a class drawn uniformly from the K-1 *other*
      classes, so exactly the selected examples are wrong.

    Returns ``(new_labels, selected)`` where ``selected`` is the boolean mask of examples whose
    label was redrawn.
    """
    if not 0.0 <= p <= 1.0:
        raise UserError(f"label corruption p={p} must be in [0, 1]")
    if mode not in ("uniform", "other"):
        raise UserError(f"label_noise mode {mode!r} must be 'uniform' or 'other'")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    selected = rng.random(len(labels)) < p
    new = labels.copy()
    count = int(selected.sum())
    if mode == "uniform":
        new[selected] = rng.integers(0, num_classes, size=count)
    else:
        shift = rng.integers(1, num_classes, size=count)
        new[selected] = (labels[selected] + shift) % num_classes
    return new, selected


def shuffled_pixels(x: np.ndarray, seed: int) -> np.ndarray:
    """Apply one random permutation of the input coordinates to every example ("shuffled pixels").

    The same permutation must be applied to train and test inputs: pass the same seed.
    """
    flat = x.reshape(len(x), -1)
    perm = np.random.default_rng(seed).permutation(flat.shape[1])
    return flat[:, perm].reshape(x.shape)


def random_pixels(x: np.ndarray, seed: int) -> np.ndarray:
    """Apply an independent random permutation to each example ("random pixels")."""
    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random(flat.shape), axis=1)
    return np.take_along_axis(flat, order, axis=1).reshape(x.shape)


def gaussian_inputs(x: np.ndarray, seed: int, like: np.ndarray | None = None) -> np.ndarray:
    """Replace inputs by Gaussian noise with the per-coordinate mean and variance of ``like``.

    Zhang et al. draw "a Gaussian distribution with matching mean and variance to the original
    dataset"; we match each input coordinate's mean and standard deviation, measured on ``like``
    (the clean training inputs; defaults to ``x``).
    """
    ref = (x if like is None else like).reshape(len(x if like is None else like), -1)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(x), ref.shape[1])).astype(x.dtype)
    return (noise * std + mean).astype(x.dtype).reshape(x.shape)
