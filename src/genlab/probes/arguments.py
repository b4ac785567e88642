"""Argument checks shared by the numpy-based probes (random features, minimum-norm solves): every
bad value a user can pass becomes one :class:`~genlab.errors.UserError` naming the argument."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from genlab.errors import UserError


def as_matrix(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UserError(f"{name} must be a numeric matrix: {error}") from None
    if matrix.ndim != 2 or min(matrix.shape) == 0:
        raise UserError(f"{name} must be a non-empty 2-D matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise UserError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(matrix)


def as_targets(values: Any, n_rows: int, name: str) -> tuple[np.ndarray, bool]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    targets = np.asarray(values, dtype=np.float64)
    was_vector = targets.ndim == 1
    if was_vector:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n_rows:
        raise UserError(
            f"{name} must have {n_rows} rows (one per example), got shape {targets.shape}"
        )
    if not np.all(np.isfinite(targets)):
        raise UserError(f"{name} contains NaN or infinite values")
    return targets, was_vector


def as_labels(values: Any, n_rows: int, n_classes: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    labels = np.asarray(values)
    if labels.shape != (n_rows,) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"y_test must be {n_rows} integer labels, got shape {labels.shape} {labels.dtype}"
        )
    if labels.min() < 0 or labels.max() >= n_classes:
        raise UserError(
            f"y_test labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


def as_ridges(values: Any) -> tuple[float, ...]:
    ridges = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
    if len(ridges) == 0:
        raise UserError("ridge must be a number or a non-empty list of numbers")
    for value in ridges:
        require_nonnegative_finite(value, "ridge")
    return tuple(float(value) for value in ridges)


def as_feature_counts(values: Any) -> list[int]:
    counts = np.asarray(values).ravel()
    if counts.size == 0:
        raise UserError("feature_counts is empty")
    if not np.issubdtype(counts.dtype, np.integer) and not np.all(counts == np.round(counts)):
        raise UserError(f"feature_counts must be integers, got {counts.tolist()}")
    counts = counts.astype(np.int64)
    if counts.min() < 1:
        raise UserError(f"feature_counts must be positive, got {int(counts.min())}")
    return sorted({int(count) for count in counts})


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise UserError(f"seed must be a non-negative int or numpy Generator, got {seed!r}")


def require_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def require_positive_finite(value: Any, name: str) -> None:
    if not isinstance(value, (int, float, np.number)) or not (math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive finite number, got {value!r}")


def require_rcond(rcond: float | None) -> None:
    if rcond is not None and not (
        isinstance(rcond, (int, float, np.number)) and 0.0 <= float(rcond) < 1.0
    ):
        raise UserError(f"rcond must be None or a number in [0, 1), got {rcond!r}")


def require_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def require_nonnegative_finite(value: Any, name: str) -> None:
    if not isinstance(value, (int, float, np.number)) or not (math.isfinite(value) and value >= 0):
        raise UserError(f"{name} must be a non-negative finite number, got {value!r}")
