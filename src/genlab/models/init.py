"""Named initializers, applied with an explicit seed.

* ``default``: PyTorch's own reset_parameters (Kaiming-uniform with a=sqrt(5), uniform bias).
* ``glorot``: Glorot & Bengio (2010) uniform weights U(-a, a), a = sqrt(6 / (fan_in + fan_out)), zero biases.
* ``glorot-normal``: Glorot & Bengio (2010) Gaussian weights N(0, 2 / (fan_in + fan_out)), zero
  biases - the "Gaussian Glorot" initialization of Frankle & Carbin (2019).
* ``kaiming``: He et al. (2015) normal weights N(0, 2 / fan_in), zero biases.

For a convolution, fan_in = in_channels * kernel area and fan_out = out_channels * kernel area.
Normalization layers (BatchNorm, LayerNorm, GroupNorm) get scale 1 and shift 0 under every scheme,
and BatchNorm's running statistics are reset (mean 0, variance 1).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from genlab.errors import UserError

INITIALIZERS = {
    "default": "PyTorch's reset_parameters (Kaiming-uniform a=sqrt(5), uniform biases)",
    "glorot": "Glorot/Xavier uniform weights, zero biases (Glorot & Bengio 2010)",
    "glorot-normal": "Glorot/Xavier Gaussian weights, zero biases (Glorot & Bengio 2010; Frankle & Carbin 2019)",
    "kaiming": "Kaiming/He normal weights for ReLU, zero biases (He et al. 2015)",
}


def init_layer(layer: nn.Module, scheme: str, generator: torch.Generator) -> None:
    """Draw ``layer``'s weight and bias afresh from ``scheme`` with ``generator`` (in place)."""
    if scheme not in INITIALIZERS:
        raise UserError(f"unknown init {scheme!r}; choose one of: {', '.join(INITIALIZERS)}")
    weight = getattr(layer, "weight", None)
    bias = getattr(layer, "bias", None)
    if weight is None:
        return
    with torch.no_grad():
        if weight.dim() < 2:  # normalization layers: scale one, shift zero
            weight.fill_(1.0)
            if bias is not None:
                bias.zero_()
            return
        fan_in = weight[0].numel()
        fan_out = weight.shape[0] * weight[0, 0].numel()
        if scheme == "default":
            bound = (1.0 / fan_in) ** 0.5  # kaiming_uniform(a=sqrt(5)) reduces to 1/sqrt(fan_in)
            weight.uniform_(-bound, bound, generator=generator)
            if bias is not None:
                bias.uniform_(-bound, bound, generator=generator)
            return
        if scheme == "glorot":
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            weight.uniform_(-bound, bound, generator=generator)
        elif scheme == "glorot-normal":
            weight.normal_(0.0, (2.0 / (fan_in + fan_out)) ** 0.5, generator=generator)
        else:
            weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
        if bias is not None:
            bias.zero_()


INIT_ATTRIBUTE = "_genlab_init"  # the scheme `initialize` last used on a model (a re-initialization reuses it)


def initialize(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Initialize every parameterised layer of ``model`` from ``scheme``; deterministic in ``seed``.
    The scheme is recorded on the model (``INIT_ATTRIBUTE``; see :func:`init_scheme`)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.GroupNorm, _BatchNorm)):
            init_layer(module, scheme, generator)
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
    setattr(model, INIT_ATTRIBUTE, scheme)
    return model


def init_scheme(model: nn.Module) -> str:
    """The scheme ``model`` was initialized with by :func:`initialize`; ``default`` (PyTorch's own) for a
    module genlab did not initialize."""
    return getattr(model, INIT_ATTRIBUTE, "default")
