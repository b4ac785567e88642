"""Checking user-supplied (inputs, labels) pairs at the Python API boundary."""
from __future__ import annotations

from typing import Any

import torch

from genlab.errors import UserError


def as_labelled_tensors(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as float inputs and int64 class labels; a UserError naming ``what`` otherwise."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UserError(f"{what} must be a tuple (inputs, labels) of tensors")
    x, y = (torch.as_tensor(t) for t in data)
    if x.shape[0] != y.shape[0]:
        raise UserError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise UserError(f"{what}: labels must be a 1-D tensor of integer class indices, got {tuple(y.shape)} {y.dtype}")
    if x.shape[0] == 0:
        raise UserError(f"{what} is empty")
    return x.float(), y.long()
