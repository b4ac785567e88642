"""The small Inception of Zhang et al. (2017, "Understanding deep learning requires rethinking
generalization", appendix A, Fig. 3), for 28x28x3 CIFAR-10 crops.

* conv module ``ConvM(c, k, s)`` = conv kxk (c channels, stride s, SAME padding, with bias) -> BN -> ReLU;
* ``Inception(c1, c3)`` = concat(ConvM(c1, 1x1), ConvM(c3, 3x3)) along channels;
* ``Downsample(c)`` = concat(ConvM(c, 3x3, stride 2), max-pool 3x3 stride 2);

Conv3x3(96) -> Inc(32, 32) -> Inc(32, 48) -> Down(80) -> Inc(112, 48) -> Inc(96, 64) -> Inc(80, 80)
-> Inc(48, 96) -> Down(96) -> Inc(176, 160) -> Inc(176, 160) -> mean pool (7x7 at 28x28 inputs:
global) -> FC 10. With BN carrying no learnable scale or shift this has exactly the paper's
1,649,402 parameters at [3, 28, 28] (the count does not depend on the image size), and
``batchnorm=False`` (the paper's "Inception w/o BatchNorm") has the same count. Stride-2 layers pad
by 1, so 28 -> 14 -> 7 as with TensorFlow's SAME padding. The paper does not state the
initializer (the registry's paper init is the default).

Layer names: ``features.conv1.conv``, ``features.inception3.branch1x1.conv``,
``features.downsample1.branch3x3.conv``, ``classifier``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from genlab.models.layers import conv_module, dropout_rate, image_shape

LAYOUT: list[tuple] = [
    ("inception", 32, 32), ("inception", 32, 48), ("downsample", 80),
    ("inception", 112, 48), ("inception", 96, 64), ("inception", 80, 80), ("inception", 48, 96),
    ("downsample", 96), ("inception", 176, 160), ("inception", 176, 160),
]


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, batchnorm: bool) -> nn.Sequential:
    return conv_module(in_channels, out_channels, kernel, stride=stride, batchnorm=batchnorm, bias=True,
                       affine=False)


class InceptionModule(nn.Module):
    """concat(1x1 conv module with ``c1`` channels, 3x3 conv module with ``c3`` channels)."""

    def __init__(self, in_channels: int, c1: int, c3: int, batchnorm: bool):
        super().__init__()
        self.branch1x1 = _conv(in_channels, c1, 1, 1, batchnorm)
        self.branch3x3 = _conv(in_channels, c3, 3, 1, batchnorm)
        self.out_channels = c1 + c3

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch3x3(x)], dim=1)


class DownsampleModule(nn.Module):
    """concat(3x3 stride-2 conv module with ``c`` channels, 3x3 stride-2 max-pool of the input)."""

    def __init__(self, in_channels: int, c: int, batchnorm: bool):
        super().__init__()
        self.branch3x3 = _conv(in_channels, c, 3, 2, batchnorm)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = c + in_channels

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.pool(x)], dim=1)


def inception_small(input_shape, num_classes, batchnorm=True, dropout=0.0, **_) -> nn.Module:
    """Zhang et al.'s small Inception (see the module docstring) for any image shape.

    ``dropout`` (default 0: the paper's network has none) puts a dropout layer on the pooled
    features before the classifier, for the regularization study's dropout cells (no parameters,
    so the count and the layer names stay the same).
    """
    shape = image_shape("inception-small", input_shape)
    batchnorm = bool(batchnorm)
    parts: list[tuple[str, nn.Module]] = [("conv1", _conv(shape[0], 96, 3, 1, batchnorm))]
    prev, inceptions, downsamples = 96, 0, 0
    for kind, *channels in LAYOUT:
        if kind == "inception":
            inceptions += 1
            module: nn.Module = InceptionModule(prev, *channels, batchnorm)
            parts.append((f"inception{inceptions}", module))
        else:
            downsamples += 1
            module = DownsampleModule(prev, *channels, batchnorm)
            parts.append((f"downsample{downsamples}", module))
        prev = module.out_channels
    parts += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    rate = dropout_rate("inception-small", dropout)
    if rate > 0:
        parts.append(("dropout", nn.Dropout(rate)))
    return nn.Sequential(OrderedDict([("features", nn.Sequential(OrderedDict(parts))),
                                      ("classifier", nn.Linear(prev, num_classes))]))
