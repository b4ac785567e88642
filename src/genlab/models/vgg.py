"""CIFAR VGG networks with BatchNorm (Simonyan & Zisserman 2015, adapted to 32x32 inputs).

Each convolution is 3x3 with padding 1 and a bias, followed by BN and ReLU; ``M`` is a 2x2
max-pool of stride 2. The configurations (numbers are channel counts):

* ``vgg11``: 64 M 128 M 256 256 M 512 512 M 512 512 M, then FC 10 on the flattened features
  (9,231,114 parameters on CIFAR-10; Zhang, Bengio & Singer 2019's VGG-11);
* ``vgg16``: 64 64 M 128 128 M 256x3 M 512x3 M 512x3 M, then FC 10 (14,728,266 on CIFAR-10);
* ``vgg19``: 64 64 M 128 128 M 256x4 M 512x4 M 512x4 (no last max-pool), then global average
  pooling and FC 10 - Frankle & Carbin 2019's VGG-19 (their reference code open_lth), 20,040,522
  parameters ("20.0M").

The max-pools round up (``ceil_mode``): on CIFAR's 32x32 (a power of two) that is the plain
pooling, and a 28x28 input (mnist5k) goes 28-14-7-4-2-1 instead of vanishing at the fifth pool.
Layer names: ``features.conv1`` .. ``features.convN``, ``features.bn1``.., ``features.pool1``..,
``classifier``. ``batchnorm=False`` drops the BN layers (the convolutions keep their biases);
``width`` (default 64, the published nets) sets the first layer's channels, every layer scaled alike
(64 -> ``width``, 128 -> 2 ``width``, ...).
Paper init: He et al.'s Gaussian N(0, 2 / fan_in) (``kaiming``), as in open_lth's VGG.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from genlab.models.layers import Window, image_shape, positive_int, spatial_size

CONFIGS: dict[str, list] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512],
}
POOL = Window(2, 2, ceil=True)


def vgg_features(in_channels: int, config: list, batchnorm: bool) -> nn.Sequential:
    """The convolutional part of a VGG: named ``convI``, ``bnI``, ``reluI`` and ``poolJ``."""
    parts: list[tuple[str, nn.Module]] = []
    prev, conv, pool = in_channels, 0, 0
    for item in config:
        if item == "M":
            pool += 1
            parts.append((f"pool{pool}", nn.MaxPool2d(POOL.kernel, POOL.stride, ceil_mode=POOL.ceil)))
            continue
        conv += 1
        parts.append((f"conv{conv}", nn.Conv2d(prev, item, 3, padding=1)))
        if batchnorm:
            parts.append((f"bn{conv}", nn.BatchNorm2d(item)))
        parts.append((f"relu{conv}", nn.ReLU()))
        prev = item
    return nn.Sequential(OrderedDict(parts))


def vgg(name: str, input_shape, num_classes: int, batchnorm: bool = True, width: int = 64) -> nn.Module:
    """VGG ``name`` (a key of :data:`CONFIGS`) for ``input_shape``; see the module docstring."""
    shape = image_shape(name, input_shape)
    width = positive_int(name, "width", width)
    config = [c if c == "M" else c * width // 64 or 1 for c in CONFIGS[name]]
    features = vgg_features(shape[0], config, bool(batchnorm))
    channels = [c for c in config if c != "M"][-1]
    if config[-1] == "M":  # flatten what the last max-pool leaves
        h, w = spatial_size(name, shape, [POOL] * config.count("M"), f"{config.count('M')} max-pools")
        features.add_module("flatten", nn.Flatten())
        in_features = channels * h * w
    else:  # global average pool (Frankle & Carbin's VGG-19)
        features.add_module("avgpool", nn.AdaptiveAvgPool2d(1))
        features.add_module("flatten", nn.Flatten())
        in_features = channels
    return nn.Sequential(OrderedDict([("features", features), ("classifier", nn.Linear(in_features, num_classes))]))


def vgg11(input_shape, num_classes, batchnorm=True, width=64, **_) -> nn.Module:
    return vgg("vgg11", input_shape, num_classes, batchnorm, width)


def vgg16(input_shape, num_classes, batchnorm=True, width=64, **_) -> nn.Module:
    return vgg("vgg16", input_shape, num_classes, batchnorm, width)


def vgg19(input_shape, num_classes, batchnorm=True, width=64, **_) -> nn.Module:
    return vgg("vgg19", input_shape, num_classes, batchnorm, width)
