"""Growing a trained network into a wider one ("weight reuse", Belkin et al. 2019, Fig. 3).

Belkin, Hsu, Ma & Mandal (2019), "Reconciling modern machine-learning practice and the
bias-variance trade-off", PNAS 116(32): below the interpolation threshold each network of the
width sweep starts from the previous (smaller) trained network, so that the sequence of
training losses decreases with width instead of depending on the luck of one random start.

The smaller network's parameters are copied exactly into the leading block of each parameter
of the wider one: for a layer ``W_small [h_out, h_in]`` the wider ``W [H_out, H_in]`` gets
``W[:h_out, :h_in] = W_small``, and biases ``b[:h_out] = b_small``. Everything outside the
leading block (weights into and out of the new units) keeps the wider network's own fresh
initialization (Glorot when the wider net was built with ``init="glorot"``).
"""
from __future__ import annotations

import torch
from torch import nn

from genlab.errors import UserError

__all__ = ["copy_into_leading_units", "leading_block"]


def leading_block(shape: torch.Size | tuple[int, ...]) -> tuple[slice, ...]:
    """The index of the leading ``shape`` block of a larger tensor: ``[:shape[0], :shape[1], ...]``."""
    return tuple(slice(0, size) for size in shape)


def copy_into_leading_units(source: nn.Module, target: nn.Module) -> nn.Module:
    """Copy every parameter and buffer of ``source`` into the leading block of ``target`` (in place).

    Both modules must have the same parameter names (the same architecture family) and every
    target tensor must be at least as large as its source tensor in every dimension. Entries of
    ``target`` outside the leading blocks are left as they are (its fresh initialization), so a
    width-h MLP copied into a width-H MLP keeps units 1..h exactly and units h+1..H as drawn.
    Returns ``target``.
    """
    source_tensors = _named_tensors(source)
    target_tensors = _named_tensors(target)
    if list(source_tensors) != list(target_tensors):
        raise UserError(
            "cannot grow a network into one with different parameters: "
            f"source has {list(source_tensors)}, target has {list(target_tensors)}"
        )
    for name, small in source_tensors.items():
        large = target_tensors[name]
        if small.dim() != large.dim() or any(s > t for s, t in zip(small.shape, large.shape)):
            raise UserError(
                f"cannot grow parameter {name!r}: source shape {tuple(small.shape)} does not fit "
                f"in target shape {tuple(large.shape)}"
            )
    with torch.no_grad():
        for name, small in source_tensors.items():
            large = target_tensors[name]
            large[leading_block(small.shape)] = small.to(device=large.device, dtype=large.dtype)
    return target


def _named_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    return tensors
