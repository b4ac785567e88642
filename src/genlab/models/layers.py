"""Pieces shared by the zoo's image networks: input checks, spatial arithmetic, named layers.

Every network built here names its layers (``features.conv3``, ``classifier.fc1``,
``stages.2.blocks.0.conv1``) so that per-layer results (layer robustness heatmaps, pruning
rates, distances from initialization) read as the papers' layer names, not as positions.

Spatial sizes follow the usual window arithmetic along each axis: a convolution or pooling of
kernel k, stride s and padding p maps a length n to ``floor((n + 2p - k) / s) + 1`` (``ceil``
instead of ``floor`` for a pooling built with ``ceil_mode=True``).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from torch import nn

from genlab.errors import UserError


def image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``, or a UserError naming ``model`` for any other shape."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"model {model!r} needs image inputs [C, H, W], got shape {shape}")
    return shape


def positive_int(model: str, option: str, value) -> int:
    """``value`` as an int >= 1, or a UserError naming the model and option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise UserError(f"model {model!r}: option {option}={value!r} must be a positive integer")
    return int(value)


@dataclass(frozen=True)
class Window:
    """A convolution or pooling window along one spatial axis."""

    kernel: int
    stride: int = 1
    padding: int = 0
    ceil: bool = False

    def out(self, n: int) -> int:
        span = (n + 2 * self.padding - self.kernel) / self.stride
        return (math.ceil(span) if self.ceil else math.floor(span)) + 1


def spatial_size(model: str, input_shape: tuple[int, int, int], windows: Sequence[Window],
                 what: str) -> tuple[int, int]:
    """The ``(H, W)`` after ``windows`` (applied in order), or a UserError when a size reaches 0.

    The error names the model, the shape, what shrank it (``what``, e.g. "3 max-pools") and
    the smallest square image the model takes.
    """
    def through(n: int) -> int:
        for window in windows:
            n = window.out(n)
            if n < 1:
                return 0
        return n

    _, h, w = input_shape
    out_h, out_w = through(h), through(w)
    if out_h < 1 or out_w < 1:
        smallest = next(n for n in range(1, 1 << 16) if through(n) >= 1)
        raise UserError(f"model {model!r} cannot take input shape {tuple(input_shape)}: its {what} shrink "
                        f"{h}x{w} to nothing; it needs images of at least {smallest}x{smallest}")
    return out_h, out_w


def conv_module(in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, padding: int | None = None,
                batchnorm: bool = True, bias: bool | None = None, affine: bool = True) -> nn.Sequential:
    """``conv -> BN -> ReLU`` as a Sequential with children ``conv``, ``bn``, ``relu``.

    ``padding`` defaults to ``kernel // 2`` (size-preserving at stride 1); ``bias`` defaults to
    ``not batchnorm`` (BN's shift takes the bias's place); without ``batchnorm`` there is no
    ``bn`` child; ``affine=False`` gives a BN without learnable scale and shift.
    """
    padding = kernel // 2 if padding is None else padding
    bias = (not batchnorm) if bias is None else bias
    parts: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias))]
    if batchnorm:
        parts.append(("bn", nn.BatchNorm2d(out_channels, affine=affine)))
    parts.append(("relu", nn.ReLU()))
    return nn.Sequential(OrderedDict(parts))


def fc_classifier(in_features: int, widths: Sequence[int], num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """``fc1 -> relu1 [-> dropout1] -> ... -> fcN`` (hidden ``widths``, then ``num_classes`` outputs)."""
    parts: list[tuple[str, nn.Module]] = []
    prev = in_features
    for i, width in enumerate(widths, start=1):
        parts += [(f"fc{i}", nn.Linear(prev, width)), (f"relu{i}", nn.ReLU())]
        if dropout > 0:
            parts.append((f"dropout{i}", nn.Dropout(dropout)))
        prev = width
    parts.append((f"fc{len(widths) + 1}", nn.Linear(prev, num_classes)))
    return nn.Sequential(OrderedDict(parts))


def dropout_rate(model: str, value) -> float:
    """``value`` as a dropout probability in [0, 1), or a UserError naming the model."""
    rate = float(value)
    if not 0.0 <= rate < 1.0:
        raise UserError(f"model {model!r}: option dropout={value!r} must lie in [0, 1)")
    return rate
