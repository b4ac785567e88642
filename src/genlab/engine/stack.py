"""Stacking K modules of one architecture into batched parameters, and the batched forward.

K models of the same structure but possibly different widths are stacked into tensors with a
leading model dimension, padded with zeros to the largest shape. A boolean ``mask`` marks the
real entries; padded entries are kept at exactly zero by the optimizer, so a padded hidden unit
has zero weights in and out and contributes nothing: a width-h MLP padded to width H computes
exactly what the width-h MLP computes (ReLU(0) = 0 and ReLU'(0) = 0).

The batched forward is ``torch.func.vmap`` over ``torch.func.functional_call`` of one template
module, so any ``nn.Module`` whose forward depends only on its parameters works (Linear and Conv
layers become batched matmuls / grouped convolutions).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap


@dataclass
class StackedModels:
    """K models as stacked tensors: ``params[name]`` has shape ``[K, *max_shape]``."""

    template: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]          # True where the entry is a real (trainable) weight
    shapes: list[dict[str, torch.Size]]     # each model's own (unpadded) parameter shapes

    @property
    def num_models(self) -> int:
        return len(self.shapes)

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s parameters and buffers, cut back to its own shapes (a copy)."""
        out = {}
        for name, tensor in self.params.items():
            shape = self.shapes[k][name]
            out[name] = tensor[k][tuple(slice(0, s) for s in shape)].detach().clone()
        for name, tensor in self.buffers.items():
            out[name] = tensor[k].detach().clone()
        return out

    def module(self, k: int, like: nn.Module | None = None) -> nn.Module:
        """A standalone ``nn.Module`` holding model ``k`` (``like`` gives the architecture)."""
        net = copy.deepcopy(like if like is not None else self.template)
        net.load_state_dict(self.state_dict(k))
        return net


def stack_modules(modules: list[nn.Module], device: str | torch.device = "cpu") -> StackedModels:
    """Stack ``modules`` (same parameter names, possibly different sizes) with zero padding."""
    names = [n for n, _ in modules[0].named_parameters()]
    for m in modules[1:]:
        if [n for n, _ in m.named_parameters()] != names:
            raise ValueError("all stacked models must have the same parameter names")
    shapes = [{n: p.shape for n, p in m.named_parameters()} for m in modules]
    params, masks = {}, {}
    for name in names:
        max_shape = torch.Size(max(s[name][i] for s in shapes) for i in range(len(shapes[0][name])))
        stacked = torch.zeros(len(modules), *max_shape, device=device)
        mask = torch.zeros(len(modules), *max_shape, dtype=torch.bool, device=device)
        for k, m in enumerate(modules):
            region = (k, *(slice(0, s) for s in shapes[k][name]))
            stacked[region] = dict(m.named_parameters())[name].detach().to(device)
            mask[region] = True
        params[name] = stacked
        masks[name] = mask
    buffers = {n: torch.stack([dict(m.named_buffers())[n].detach() for m in modules]).to(device)
               for n, _ in modules[0].named_buffers()}
    template = copy.deepcopy(modules[0]).to(device)
    return StackedModels(template, params, buffers, masks, shapes)


def stacked_forward(stack: StackedModels, params: dict[str, torch.Tensor], x: torch.Tensor,
                    shared_input: bool = False) -> torch.Tensor:
    """Outputs ``[K, B, ...]`` of the K models on inputs ``x`` (``[K, B, ...]``, or ``[B, ...]``
    when ``shared_input``: every model sees the same batch)."""
    template = stack.template

    def one(p, b, xb):
        return functional_call(template, (p, b), (xb,))

    return vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="different")(
        params, stack.buffers, x)
