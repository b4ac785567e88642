"""Stacking K modules of one architecture into batched parameters, and the batched forward.

K models of the same structure but possibly different widths are stacked into tensors with a
leading model dimension, padded with zeros to the largest shape. A boolean ``mask`` marks the
real entries; padded entries are kept at exactly zero by the optimizer, so a padded hidden unit
has zero weights in and out and contributes nothing: a width-h MLP padded to width H computes
exactly what the width-h MLP computes (ReLU(0) = 0 and ReLU'(0) = 0).

The batched forward is ``torch.func.vmap`` over ``torch.func.functional_call`` of one template
module, so any ``nn.Module`` whose forward depends only on its parameters works (Linear and Conv
layers become batched matmuls / grouped convolutions).

A module that cannot run under ``vmap`` (e.g. one built on custom autograd functions without vmap
rules, or holding sparse buffers, like :class:`genlab.subspace.SubspaceModel` with a Fastfood or
sparse projection) declares ``_genlab_no_vmap = True``. Its parameters are stacked the same way
(leading model dimension, padding, masks), so optimizer, schedules, evaluation, stop rules and
snapshots are unchanged; but the batched forward loops over the models, calling each one's
``functional_call`` on its own (unpadded) slice of the stacked parameters. The modules themselves
are kept as ``StackedModels.members`` (moved to the device, not copied: a module with sparse
buffers cannot be deep-copied) and their parameters are never written. Their buffers stay in
them and are not stacked: typically frozen and large (a projection matrix), they would be
duplicated in memory and in every snapshot; a buffer the forward updates in place (BatchNorm
statistics) is therefore updated in the given module and is not part of a resume snapshot.
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
    members: list[nn.Module] | None = None  # per-model modules when the forward loops instead of vmap
    buffer_shapes: list[dict[str, torch.Size]] | None = None  # each model's own buffer shapes (None: all equal)

    @property
    def num_models(self) -> int:
        return len(self.shapes)

    def unpadded(self, k: int, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Model ``k``'s slice of stacked ``params`` (default: the current ones; e.g. a checkpoint),
        cut back to its own shapes (a copy)."""
        params = self.params if params is None else params
        return {name: tensor[own_region(k, self.shapes[k][name])].detach().clone() for name, tensor in params.items()}

    def state_dict(self, k: int, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Model ``k``'s parameters (current, or from stacked ``params``) and buffers, unpadded (a copy)."""
        out = self.unpadded(k, params)
        for name, tensor in self.buffers.items():
            out[name] = tensor[self.buffer_region(k, name)].detach().clone()
        return out

    def own_entries(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Tensors shaped like the stacked parameters (``[K, *max_shape]``: parameters, optimizer state,
        checkpoints) as 1-D tensors of each model's own entries, model after model (a width sweep's
        padding can be ~8x its real entries). None when some padding entry is not zero: then only the
        padded tensors hold everything."""
        out = {}
        for name, tensor in tensors.items():
            shapes = [own[name] for own in self.shapes]
            if all(shape == tensor.shape[1:] for shape in shapes):
                out[name] = tensor.reshape(-1)
                continue
            flat = torch.cat([tensor[own_region(k, shape)].reshape(-1) for k, shape in enumerate(shapes)])
            if torch.count_nonzero(flat) != torch.count_nonzero(tensor):
                return None
            out[name] = flat
        return out

    def from_own_entries(self, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The stacked, zero-padded tensors that :meth:`own_entries` flattened. Raises ValueError when
        a tensor does not hold exactly this stack's entries."""
        out = {}
        for name, entries in flat.items():
            shapes = [own[name] for own in self.shapes]
            sizes = [shape.numel() for shape in shapes]
            if entries.dim() != 1 or entries.numel() != sum(sizes):
                raise ValueError(f"{name}: {entries.numel()} entries where these models have {sum(sizes)}")
            out[name] = zero_padded([part.view(shape) for part, shape in zip(entries.split(sizes), shapes)],
                                    entries.device)
        return out

    def buffer_region(self, k: int, name: str) -> tuple:
        """Where model ``k``'s own buffer ``name`` sits in its padded stacked slice."""
        return (k,) if self.buffer_shapes is None else own_region(k, self.buffer_shapes[k][name])

    def module(self, k: int, like: nn.Module | None = None) -> nn.Module:
        """A standalone ``nn.Module`` holding model ``k`` (``like`` gives the architecture)."""
        if self.members is None or like is not None:
            net = copy.deepcopy(like if like is not None else self.template)
            net.load_state_dict(self.state_dict(k))
            return net
        net = copy.deepcopy(self.members[k])  # its buffers are the member's own
        with torch.no_grad():
            for name, value in self.state_dict(k).items():
                net.get_parameter(name).copy_(value)
        return net


def loops_over_models(module: nn.Module) -> bool:
    """True when ``module`` declares ``_genlab_no_vmap = True``: its forward cannot run under vmap."""
    return bool(getattr(module, "_genlab_no_vmap", False))


def stack_modules(modules: list[nn.Module], device: str | torch.device = "cpu") -> StackedModels:
    """Stack ``modules`` (same parameter names, possibly different sizes) with zero padding."""
    names = [n for n, _ in modules[0].named_parameters()]
    for m in modules[1:]:
        if [n for n, _ in m.named_parameters()] != names:
            raise ValueError("all stacked models must have the same parameter names")
    shapes = [{n: p.shape for n, p in m.named_parameters()} for m in modules]
    own = [dict(m.named_parameters()) for m in modules]
    params = {n: zero_padded([p[n].detach() for p in own], device, torch.get_default_dtype()) for n in names}
    masks = {n: zero_padded([torch.ones(s[n], dtype=torch.bool) for s in shapes], device) for n in names}
    if any(loops_over_models(m) for m in modules):
        members = [m.to(device) for m in modules]  # used in place: some (sparse) cannot be deep-copied
        return StackedModels(members[0], params, {}, masks, shapes, members)
    buffers, buffer_shapes = stack_buffers(modules, device)
    template = copy.deepcopy(modules[0]).to(device)
    return StackedModels(template, params, buffers, masks, shapes, buffer_shapes=buffer_shapes)


def stack_buffers(modules: list[nn.Module], device: str | torch.device = "cpu"
                  ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Size]] | None]:
    """The modules' buffers (BatchNorm statistics) stacked ``[K, *max_shape]``, and each model's own
    shapes when they differ (None when all are equal). Padding entries are zero; they belong to
    padded channels, whose weights and inputs are zero, and are never read back."""
    own = [dict(m.named_buffers()) for m in modules]
    names = list(own[0])
    if any(list(b) != names for b in own[1:]):
        raise ValueError("all stacked models must have the same buffer names")
    shapes = [{n: b[n].shape for n in names} for b in own]
    if all(s == shapes[0] for s in shapes[1:]):
        return {n: torch.stack([b[n].detach() for b in own]).to(device) for n in names}, None
    return {n: zero_padded([b[n].detach() for b in own], device) for n in names}, shapes


def own_region(k: int, shape: torch.Size) -> tuple:
    """Where model ``k``'s tensor of ``shape`` sits in a zero-padded stack ``[K, *max_shape]``."""
    return (k, *(slice(0, s) for s in shape))


def zero_padded(tensors: list[torch.Tensor], device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensors`` (same number of dimensions, any sizes) stacked ``[K, *max_shape]``, each in its
    :func:`own_region`, zeros elsewhere; ``dtype``: the stack's (default: the first tensor's)."""
    max_shape = torch.Size(max(t.shape[i] for t in tensors) for i in range(tensors[0].dim()))
    stacked = torch.zeros(len(tensors), *max_shape, dtype=dtype or tensors[0].dtype, device=device)
    for k, t in enumerate(tensors):
        stacked[own_region(k, t.shape)] = t.to(device)
    return stacked


def stacked_forward(stack: StackedModels, params: dict[str, torch.Tensor], x: torch.Tensor,
                    shared_input: bool = False, models: torch.Tensor | None = None,
                    buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Outputs ``[K, B, ...]`` of the K models on inputs ``x`` (``[K, B, ...]``, or ``[B, ...]``
    when ``shared_input``: every model sees the same batch).

    ``models`` lists (in increasing order) which of the stack's models ``params`` holds, when it
    holds only some of them (e.g. the still active ones); default: all of them. ``buffers``: the
    stacked buffers of those models, updated in place in train mode (BatchNorm statistics); default:
    the stack's own (a copy of the selected rows when ``models`` is a subset).
    """
    if stack.members is not None:
        return _looped_forward(stack, params, x, shared_input, models)
    template = stack.template
    if buffers is None:
        buffers = stack.buffers
        if models is not None and len(models) != stack.num_models:
            buffers = {n: b[models] for n, b in buffers.items()}

    def one(p, b, xb):
        return functional_call(template, (p, b), (xb,))

    return vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="different")(
        params, buffers, x)


def _looped_forward(stack: StackedModels, params: dict[str, torch.Tensor], x: torch.Tensor,
                    shared_input: bool, models: torch.Tensor | None) -> torch.Tensor:
    """The stacked forward of ``_genlab_no_vmap`` modules: one ``functional_call`` per model.

    Model k sees its parameters cut back to its own shapes (padding never enters its forward)
    and its own buffers; every member follows the template's train/eval mode.
    """
    ids = range(stack.num_models) if models is None else [int(k) for k in models.tolist()]
    outputs = []
    for pos, k in enumerate(ids):
        member = stack.members[k]
        if member.training != stack.template.training:
            member.train(stack.template.training)
        own = {n: p[own_region(pos, stack.shapes[k][n])] for n, p in params.items()}
        outputs.append(functional_call(member, own, (x if shared_input else x[pos],)))
    return torch.stack(outputs)
