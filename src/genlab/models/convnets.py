"""Plain convolutional networks of the papers: Conv-2/4/6, Li et al.'s LeNet, the small AlexNet, NiN.

Every builder takes any image shape [C, H, W]; the fully connected head is sized from the
spatial arithmetic of :mod:`genlab.models.layers`, and an input too small for the pooling stack is
a UserError naming the model, the shape and the smallest image it takes.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from genlab.models.layers import Window, dropout_rate, fc_classifier, image_shape, positive_int, spatial_size

CONV_PLANS: dict[str, list] = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}


def frankle_conv(name: str, input_shape, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Conv-2 / Conv-4 / Conv-6 of Frankle & Carbin (2019, Fig. 2).

    3x3 convolutions with padding 1 (size-preserving) and ReLU, a 2x2 max-pool of stride 2 after
    every pair, then FC 256 - 256 - ``num_classes`` with ReLU (optional ``dropout`` after each
    hidden FC layer, as in their dropout experiments). No BatchNorm. Paper init: Gaussian Glorot,
    N(0, 2 / (fan_in + fan_out)) (``glorot-normal``).

    Parameters on CIFAR-10: Conv-2 4,301,642 (paper 4.3M, conv 38,720 = "38K"), Conv-4 2,425,930
    (2.4M / 260K). Conv-6: conv layers 1,145,408 (paper "1.1M"), all 2,262,602. The paper's
    "1.7M" for Conv-6 matches no build of the listed layers: the 4x4x256 = 4096 features left by
    the third pool give the first FC layer 1,048,832 parameters, and 1.7M would need 2,048
    features (no combination of the listed widths and pools produces that). The same plain
    build (SAME padding, 2x2 pools) is the only one that reproduces Conv-2's 4.3M and Conv-4's
    2.4M (valid padding would give 3.3M and 1.2M), and it gives Conv-6's 1.1M of convolutions,
    so it is the build used here; the 1.7M total is taken to be an error in the paper's table.
    Layer names: ``features.conv1`` .., ``features.pool1`` .., ``classifier.fc1`` .. ``fc3``.
    """
    shape = image_shape(name, input_shape)
    plan = CONV_PLANS[name]
    parts: list[tuple[str, nn.Module]] = []
    prev, conv, pool = shape[0], 0, 0
    for item in plan:
        if item == "M":
            pool += 1
            parts.append((f"pool{pool}", nn.MaxPool2d(2)))
            continue
        conv += 1
        parts += [(f"conv{conv}", nn.Conv2d(prev, item, 3, padding=1)), (f"relu{conv}", nn.ReLU())]
        prev = item
    h, w = spatial_size(name, shape, [Window(2, 2)] * pool, f"{pool} max-pools")
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict(parts))),
        ("flatten", nn.Flatten()),
        ("classifier", fc_classifier(prev * h * w, [256, 256], num_classes, dropout_rate(name, dropout))),
    ]))


def conv2(input_shape, num_classes, dropout=0.0, **_) -> nn.Module:
    return frankle_conv("conv2", input_shape, num_classes, dropout)


def conv4(input_shape, num_classes, dropout=0.0, **_) -> nn.Module:
    return frankle_conv("conv4", input_shape, num_classes, dropout)


def conv6(input_shape, num_classes, dropout=0.0, **_) -> nn.Module:
    return frankle_conv("conv6", input_shape, num_classes, dropout)


def lenet_li(input_shape, num_classes, dropout=0.0, **_) -> nn.Module:
    """The LeNet of Li et al. (2018, intrinsic dimension): VALID 5x5 convolutions.

    conv5x5(6) - ReLU - maxpool2 - conv5x5(16) - ReLU - maxpool2 - FC 120 - 84 - ``num_classes``.
    D = 62,006 parameters on CIFAR-10 (32 -> 28 -> 14 -> 10 -> 5) and 44,426 on MNIST 28x28
    (28 -> 24 -> 12 -> 8 -> 4). genlab's ``lenet`` pads its convolutions by 2 and takes its head
    from ``widths``; it stays as it is (studies' results depend on it), so this is a named variant
    with readable layer names (``features.conv1``, ``classifier.fc1``) and the fixed 120-84 head.
    """
    shape = image_shape("lenet-li", input_shape)
    h, w = spatial_size("lenet-li", shape, [Window(5), Window(2, 2), Window(5), Window(2, 2)],
                        "two valid 5x5 convolutions and max-pools")
    features = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(shape[0], 6, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
    ]))
    return nn.Sequential(OrderedDict([
        ("features", features), ("flatten", nn.Flatten()),
        ("classifier", fc_classifier(16 * h * w, [120, 84], num_classes, dropout_rate("lenet-li", dropout))),
    ]))


def alexnet_small(input_shape, num_classes, dropout=0.0, **_) -> nn.Module:
    """The small AlexNet of Zhang et al. (2017, appendix A), for 28x28x3 CIFAR-10 crops.

    Two modules of conv5x5(64, SAME) - ReLU - max-pool 3x3 stride 2 (SAME) - local response
    normalization, then FC 384 - FC 192 (ReLU) - linear ``num_classes``: 1,387,786 parameters at
    28x28x3 (28 -> 14 -> 7; 7*7*64 = 3136 features). The normalization constants are those of
    the TensorFlow CIFAR-10 tutorial network it is taken from (depth radius 4, bias 1,
    alpha 0.001/9, beta 0.75: a window of 9 channels, PyTorch alpha = 9 * 0.001/9) - the paper
    does not list them; nor does it state the initializer (the registry's paper init is the default).
    ``dropout`` (default 0, as in the paper) adds dropout after each hidden FC layer (for the
    regularization grid). Layer names: ``features.conv1`` .. ``features.norm2``, ``classifier.fc1`` .. ``fc3``.
    """
    shape = image_shape("alexnet-small", input_shape)
    pool = Window(3, 2, 1)
    h, w = spatial_size("alexnet-small", shape, [pool, pool], "two 3x3 stride-2 max-pools")
    parts: list[tuple[str, nn.Module]] = []
    prev = shape[0]
    for i in (1, 2):
        parts += [(f"conv{i}", nn.Conv2d(prev, 64, 5, padding=2)), (f"relu{i}", nn.ReLU()),
                  (f"pool{i}", nn.MaxPool2d(pool.kernel, pool.stride, padding=pool.padding)),
                  (f"norm{i}", nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0))]
        prev = 64
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict(parts))), ("flatten", nn.Flatten()),
        ("classifier", fc_classifier(64 * h * w, [384, 192], num_classes, dropout_rate("alexnet-small", dropout))),
    ]))


def nin(input_shape, num_classes, depth=3, width=192, batchnorm=True, dropout=0.0, **_) -> nn.Module:
    """Network-in-network as used by Jiang et al. (2019, "Fantastic generalization measures").

    ``depth`` NiN blocks, each a 3x3 stride-2 convolution (padding 1) then two 1x1 convolutions,
    every convolution followed by BN and ReLU, all with ``width`` channels; then a 1x1
    convolution to ``num_classes`` channels and global average pooling gives the logits.
    Jiang et al. sweep depth and width (three values each); the defaults here (3 blocks, 192
    channels, the width of Lin et al.'s original NiN) are genlab's, not the paper's. The paper
    does not state the initializer. ``batchnorm=False`` drops the BN layers and gives the
    convolutions biases. ``dropout`` (default 0: none) adds dropout with that probability at the end
    of every block, after its last ReLU (``features.block1.dropout``): Jiang et al. vary dropout
    (0, 0.25, 0.5) but do not say where it sits in their NiN; the end of each block is genlab's
    choice. Layer names: ``features.block1.conv1`` (3x3), ``.conv2``, ``.conv3`` (1x1), ``.bn1``..,
    ``classifier.conv``.
    """
    shape = image_shape("nin", input_shape)
    depth = positive_int("nin", "depth", depth)
    width = positive_int("nin", "width", width)
    rate = dropout_rate("nin", dropout)
    blocks: list[tuple[str, nn.Module]] = []
    prev = shape[0]
    for b in range(1, depth + 1):
        layers: list[tuple[str, nn.Module]] = []
        for i, (kernel, stride) in enumerate([(3, 2), (1, 1), (1, 1)], start=1):
            layers.append((f"conv{i}", nn.Conv2d(prev, width, kernel, stride=stride, padding=kernel // 2,
                                                 bias=not batchnorm)))
            if batchnorm:
                layers.append((f"bn{i}", nn.BatchNorm2d(width)))
            layers.append((f"relu{i}", nn.ReLU()))
            prev = width
        if rate > 0:
            layers.append(("dropout", nn.Dropout(rate)))
        blocks.append((f"block{b}", nn.Sequential(OrderedDict(layers))))
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict(blocks))),
        ("classifier", nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(width, num_classes, 1)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ]))),
    ]))

