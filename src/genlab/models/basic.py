"""The small generic families: MLP, LeNet-style CNN, 1-D CNN, small residual net.

* ``mlp``: fully connected ReLU network with any hidden widths (optional dropout).
* ``lenet``: LeNet-style CNN for images (LeCun et al. 1998): two 5x5 conv+pool, then widths.
* ``cnn1d``: the small 1-D CNN of the MNIST-1D paper (Greydanus 2020): three strided convs.
* ``resnet``: a small residual network (He et al. 2016) of basic blocks, 1-D or 2-D by input.

Their layers are numbered (``nn.Sequential`` positions) and stay so: stored results of the
studies (layer tables, checkpoints) name them that way. The papers' CIFAR-10 networks with
named layers are in :mod:`genlab.models.resnets`, :mod:`~genlab.models.vgg`,
:mod:`~genlab.models.convnets` and :mod:`~genlab.models.inception`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from genlab.errors import UserError


def _mlp_layers(in_dim: int, widths: Sequence[int], out_dim: int, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    prev = in_dim
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = w
    layers.append(nn.Linear(prev, out_dim))
    return layers


def mlp(input_shape, num_classes, widths=(512,), dropout=0.0, **_) -> nn.Module:
    """MLP ``d - widths[0] - ... - K`` with ReLU; inputs are flattened."""
    in_dim = int(np.prod(input_shape))
    return nn.Sequential(nn.Flatten(), *_mlp_layers(in_dim, widths, num_classes, dropout))


def lenet(input_shape, num_classes, widths=(120, 84), dropout=0.0, channels=(6, 16), **_) -> nn.Module:
    """LeNet-5-style CNN: [conv5x5 - ReLU - maxpool2] x 2, then an MLP of ``widths``."""
    if len(input_shape) != 3:
        raise UserError(f"model 'lenet' needs image inputs [C, H, W], got shape {tuple(input_shape)}")
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, channels[0], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels[0], channels[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = features(torch.zeros(1, *input_shape)).shape[1]
    return nn.Sequential(*features, *_mlp_layers(flat, widths, num_classes, dropout))


def cnn1d(input_shape, num_classes, channels=25, **_) -> nn.Module:
    """1-D CNN of the MNIST-1D benchmark: three conv layers (k=5,3,3, stride 2) and a linear head."""
    if len(input_shape) != 2:
        raise UserError(f"model 'cnn1d' needs 1-D signals [C, L], got shape {tuple(input_shape)}")
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv1d(c, channels, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )
    flat = features(torch.zeros(1, *input_shape)).shape[1]
    return nn.Sequential(*features, nn.Linear(flat, num_classes))


class BasicBlock(nn.Module):
    """Residual block y = relu(x + conv2(relu(conv1(x)))) (He et al. 2016), no normalization."""

    def __init__(self, conv: type, channels: int):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, padding=1)
        self.conv2 = conv(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ResNet(nn.Module):
    """Small residual net: a stem conv, ``blocks`` basic blocks, global average pool, linear head."""

    def __init__(self, input_shape, num_classes, channels=16, blocks=3):
        super().__init__()
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        pool = nn.AdaptiveAvgPool1d(1) if len(input_shape) == 2 else nn.AdaptiveAvgPool2d(1)
        self.stem = conv(input_shape[0], channels, 3, padding=1)
        self.blocks = nn.Sequential(*[BasicBlock(conv, channels) for _ in range(blocks)])
        self.pool = pool
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def resnet(input_shape, num_classes, channels=16, blocks=3, **_) -> nn.Module:
    if len(input_shape) not in (2, 3):
        raise UserError(f"model 'resnet' needs [C, L] or [C, H, W] inputs, got {tuple(input_shape)}")
    return ResNet(input_shape, num_classes, channels=channels, blocks=blocks)
