"""A validation split carved out of a training set, so that selection never looks at the test set."""
from __future__ import annotations

import numpy as np
import torch

from genlab.errors import UserError


def split_validation(x: torch.Tensor, y: torch.Tensor, size: int, seed: int):
    """(x_train, y_train, x_val, y_val): ``size`` examples drawn at random (seeded) for validation,
    the rest kept for training (disjoint)."""
    if size >= len(y):
        raise UserError(f"val_size={size} must be smaller than the {len(y)} training examples")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    val, train = order[:size], order[size:]
    return x[train], y[train], x[val], y[val]
