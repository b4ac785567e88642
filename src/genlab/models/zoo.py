"""The model registry: every family by name, built for a dataset's input shape and class count.

``build_model(name, input_shape, num_classes, init=..., seed=..., **options)`` builds and
initializes one network. Options a family does not take are ignored (studies pass their common
options, e.g. ``widths`` and ``dropout``, to every family); the papers' networks keep their
published architecture whatever ``widths`` says.

Initialization: ``init`` names a scheme of :data:`genlab.models.INITIALIZERS`, or ``"paper"``
for the scheme the model's paper used (the registry's ``paper_init``; ``"default"`` where the
paper does not say). ``init="default"`` is PyTorch's own scheme for every family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from genlab.errors import UserError
from genlab.models.basic import cnn1d, lenet, mlp, resnet
from genlab.models.convnets import alexnet_small, conv2, conv4, conv6, lenet_li, nin
from genlab.models.inception import inception_small
from genlab.models.init import INITIALIZERS, initialize
from genlab.models.resnets import resnet18, resnet20, resnet56
from genlab.models.vgg import vgg11, vgg16, vgg19

PAPER_INIT = "paper"
CIFAR10_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    summary: str
    builder: Callable[..., nn.Module]
    paper_init: str = "default"  # the scheme ``init="paper"`` resolves to


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry("mlp", "fully connected ReLU net, hidden sizes from --widths", mlp),
        ModelEntry("lenet", "LeNet-style CNN for images: 2 conv+pool layers, then --widths", lenet),
        ModelEntry("cnn1d", "the 1-D CNN of the MNIST-1D benchmark (3 strided convs)", cnn1d),
        ModelEntry("resnet", "small residual net of basic blocks (1-D or 2-D by input)", resnet),
        ModelEntry("resnet18", "CIFAR ResNet-18 with BN, widths [k,2k,4k,8k] (width=k, Nakkiran et al.; preact=)",
                   resnet18, "kaiming"),
        ModelEntry("resnet20", "He et al. 2016 CIFAR ResNet-20 with BN, widths 16/32/64 (shortcut=A|B)",
                   resnet20, "kaiming"),
        ModelEntry("resnet56", "He et al. 2016 CIFAR ResNet-56 with BN, widths 16/32/64 (shortcut=A|B)",
                   resnet56, "kaiming"),
        ModelEntry("vgg11", "CIFAR VGG-11 with BN, FC 10 head (Zhang, Bengio & Singer 2019)", vgg11, "kaiming"),
        ModelEntry("vgg16", "CIFAR VGG-16 with BN, FC 10 head", vgg16, "kaiming"),
        ModelEntry("vgg19", "CIFAR VGG-19 with BN, avg-pool + FC 10 (Frankle & Carbin 2019)", vgg19, "kaiming"),
        ModelEntry("conv2", "Frankle & Carbin's Conv-2: 3x3 convs 64,64,pool; FC 256-256", conv2, "glorot-normal"),
        ModelEntry("conv4", "Frankle & Carbin's Conv-4: + 128,128,pool", conv4, "glorot-normal"),
        ModelEntry("conv6", "Frankle & Carbin's Conv-6: + 256,256,pool", conv6, "glorot-normal"),
        ModelEntry("inception-small", "Zhang et al. 2017's small Inception (1,649,402 at 28x28x3; batchnorm=)",
                   inception_small),
        ModelEntry("alexnet-small", "Zhang et al. 2017's small AlexNet (1,387,786 at 28x28x3)", alexnet_small),
        ModelEntry("nin", "network-in-network of Jiang et al. 2019: depth= blocks of width= channels, BN", nin),
        ModelEntry("lenet-li", "Li et al. 2018's LeNet: valid 5x5 convs, FC 120-84", lenet_li),
    ]
}


def resolve_init(name: str, init: str) -> str:
    """The initializer scheme ``init`` means for model ``name`` (``"paper"`` -> its paper's scheme)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    scheme = MODELS[name].paper_init if init == PAPER_INIT else init
    if scheme not in INITIALIZERS:
        raise UserError(f"unknown init {init!r}; choose one of: {', '.join([*INITIALIZERS, PAPER_INIT])}")
    return scheme


def _build(name: str, input_shape, num_classes: int, options: dict) -> nn.Module:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    widths = options.get("widths")
    if widths is not None and any(int(w) <= 0 for w in widths):
        raise UserError(f"widths {list(widths)} must all be positive")
    return MODELS[name].builder(tuple(input_shape), num_classes, **options)


def build_model(name: str, input_shape, num_classes: int, *, init: str = "default", seed: int = 0,
                **options) -> nn.Module:
    """Build registered model ``name`` for a dataset and initialize it from ``init`` with ``seed``."""
    from genlab.engine.memory import check_model_fits

    scheme = resolve_init(name, init)
    build = lambda: _build(name, input_shape, num_classes, options)  # noqa: E731
    check_model_fits(build, f"model {name} {options.get('widths') or ''}".strip())
    return initialize(build(), scheme, seed)


def param_count(name: str, input_shape=CIFAR10_SHAPE, num_classes: int = 10, **options) -> int | None:
    """Number of parameters of model ``name`` at ``input_shape``, or None if it does not take that shape.

    Built on PyTorch's meta device: shapes only, no memory, no initialization.
    """
    try:
        with torch.device("meta"):
            model = _build(name, input_shape, num_classes, options)
    except UserError:
        return None
    return sum(p.numel() for p in model.parameters())


def param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The parameterised leaf layers of ``model`` in forward order, by qualified name."""
    return [(name, m) for name, m in model.named_modules()
            if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
