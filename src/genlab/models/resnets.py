"""The CIFAR residual networks of the papers (He et al. 2016; Nakkiran et al. 2019; Frankle & Carbin 2019).

All share one layout: a 3x3 stem convolution, stages of residual blocks (the first block of a
stage may halve the resolution with stride 2 and change the width), global average pooling and a
linear classifier. A basic block computes ``y = relu(F(x) + shortcut(x))`` with
``F = bn2 . conv2 . relu . bn1 . conv1`` (3x3 convolutions). Where a block changes shape the
shortcut is either

* option **A** (He et al. 2016, Sec. 4.2, used for their CIFAR nets): ``x`` subsampled with stride 2
  and zero-padded with the missing channels - no parameters; or
* option **B**: a 1x1 convolution (stride 2) followed by BN - the common CIFAR ResNet-18.

Layer names: ``stem.conv``, ``stem.bn``, ``stages.S.blocks.B.conv1`` / ``bn1`` / ``conv2`` / ``bn2``,
``stages.S.blocks.B.shortcut.conv`` / ``.bn`` (option B), ``classifier``.

``batchnorm=False`` removes every BN and gives the convolutions biases instead (a convolution
followed by BN has none: BN's shift plays that role). Initialization: He et al. 2016 use the
Gaussian of He et al. (2015), N(0, 2 / fan_in) - genlab's ``kaiming``, the registry's paper init.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UserError
from genlab.models.layers import image_shape, positive_int


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def _conv3x3(in_channels: int, out_channels: int, stride: int, batchnorm: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batchnorm)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: ``x[:, :, ::s, ::s]`` with ``extra`` zero channels appended (no parameters)."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: str, batchnorm: bool,
              projection_bn: bool = True) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(out_channels - in_channels, stride)
    parts = [("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batchnorm))]
    if batchnorm and projection_bn:
        parts.append(("bn", nn.BatchNorm2d(out_channels)))
    return nn.Sequential(OrderedDict(parts))


class ResidualBlock(nn.Module):
    """Basic block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, batchnorm: bool):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, batchnorm)
        self.bn1 = _norm(out_channels, batchnorm)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, batchnorm)
        self.bn2 = _norm(out_channels, batchnorm)
        self.shortcut = _shortcut(in_channels, out_channels, stride, shortcut, batchnorm)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut`` (He et al. 2016b).

    As in the implementation Nakkiran et al. adapted, a projection shortcut (1x1 conv, no BN)
    is applied to ``relu(bn1(x))`` and an identity shortcut to ``x``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, batchnorm: bool):
        super().__init__()
        self.bn1 = _norm(in_channels, batchnorm)
        self.conv1 = _conv3x3(in_channels, out_channels, stride, batchnorm)
        self.bn2 = _norm(out_channels, batchnorm)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, batchnorm)
        self.shortcut = _shortcut(in_channels, out_channels, stride, shortcut, batchnorm, projection_bn=False)
        self.projects = not isinstance(self.shortcut, nn.Identity)

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.projects else x
        out = self.conv1(out)
        return self.conv2(torch.relu(self.bn2(out))) + skip


class ResNetStage(nn.Module):
    """``blocks`` residual blocks at one width; the first may downsample."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


class CifarResNet(nn.Module):
    """Stem conv, stages of residual blocks, global average pool, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks_per_stage: int,
                 strides: Sequence[int], shortcut: str, batchnorm: bool, preact: bool = False):
        super().__init__()
        stem = [("conv", _conv3x3(in_channels, widths[0], 1, batchnorm))]
        if not preact:  # a pre-activation net normalizes at the start of its first block instead
            stem += [("bn", _norm(widths[0], batchnorm)), ("relu", nn.ReLU())]
        self.stem = nn.Sequential(OrderedDict(stem))
        block = PreActBlock if preact else ResidualBlock
        stages, prev = [], widths[0]
        for width, stride in zip(widths, strides):
            stages.append(ResNetStage([block(prev if b == 0 else width, width, stride if b == 0 else 1,
                                             shortcut, batchnorm) for b in range(blocks_per_stage)]))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


def resnet18(input_shape, num_classes, width=64, batchnorm=True, preact=False, **_) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stem (no max-pool), 4 stages of 2 basic blocks, widths [k, 2k, 4k, 8k].

    ``width`` is k (Nakkiran et al. 2019 sweep k = 1..64; k = 64 is the standard net with
    11,173,962 parameters on CIFAR-10); strides [1, 2, 2, 2]; option-B shortcuts (1x1 conv + BN).
    ``preact=True`` builds the pre-activation variant Nakkiran et al. actually trained (He et al.
    2016b blocks, BN-ReLU before each conv, 1x1-conv shortcuts without BN, no BN after the stem;
    11,171,146 parameters at k = 64). Their code kept PyTorch's default initialization, genlab's
    ``init="default"``; the registry's paper init is He et al.'s Gaussian (``kaiming``).
    """
    c, _, _ = image_shape("resnet18", input_shape)
    k = positive_int("resnet18", "width", width)
    return CifarResNet(c, num_classes, [k, 2 * k, 4 * k, 8 * k], 2, [1, 2, 2, 2], "B", bool(batchnorm),
                       preact=bool(preact))


def cifar_resnet(name: str, blocks: int, input_shape, num_classes, width=16, batchnorm=True,
                 shortcut="A") -> nn.Module:
    """He et al. (2016, Sec. 4.2) CIFAR ResNet of depth 6n + 2: 3 stages of n blocks, widths w, 2w, 4w.

    ``shortcut="A"`` (the paper's choice for CIFAR: parameter-free zero-padding) or ``"B"``
    (1x1 conv + BN, as in open_lth, Frankle & Carbin's reference code).
    """
    c, _, _ = image_shape(name, input_shape)
    w = positive_int(name, "width", width)
    if shortcut not in ("A", "B"):
        raise UserError(f"model {name!r}: option shortcut={shortcut!r} must be 'A' (zero-padding) or 'B' (1x1 conv)")
    return CifarResNet(c, num_classes, [w, 2 * w, 4 * w], blocks, [1, 2, 2], shortcut, bool(batchnorm))


def resnet20(input_shape, num_classes, width=16, batchnorm=True, shortcut="A", **_) -> nn.Module:
    """ResNet-20 (n = 3): 269,722 parameters on CIFAR-10 with option A, 272,474 with option B
    (Frankle & Carbin's "ResNet-18", listed as 274K)."""
    return cifar_resnet("resnet20", 3, input_shape, num_classes, width, batchnorm, shortcut)


def resnet56(input_shape, num_classes, width=16, batchnorm=True, shortcut="A", **_) -> nn.Module:
    """ResNet-56 (n = 9): 853,018 parameters on CIFAR-10 with option A."""
    return cifar_resnet("resnet56", 9, input_shape, num_classes, width, batchnorm, shortcut)
