"""Random-subspace training of any ``torch.nn.Module`` (Li et al. 2018).

Li, Farkhoor, Liu & Yosinski, "Measuring the Intrinsic Dimension of Objective Landscapes"
(ICLR 2018) train a network with D parameters only inside a random d-dimensional affine
subspace of its parameter space::

    theta = theta_0 + P theta_d,      theta_0 in R^D and P in R^{D x d} frozen,

where theta_d in R^d starts at zero and is the only trained tensor. The intrinsic dimension
d_int90 is the smallest d that reaches 90% of the directly trained baseline.

This module provides :class:`SubspaceModel`, which wraps a user module without rewriting any
of its layers: its forward pass builds theta and calls ``torch.func.functional_call`` on the
untouched module. The projections P (dense Gaussian, sparse, Fastfood, identity) are in
:mod:`genlab.probes.projections` and the fast Walsh-Hadamard transform Fastfood uses in
:mod:`genlab.probes.hadamard`; both are importable from here too.

Example::

    net = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))
    model = SubspaceModel(net, d=750, projection="fastfood", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)   # only theta_d is trained
    loss = torch.nn.functional.cross_entropy(model(x), y)
    trained_net = model.materialize()                          # plain module for evaluation
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
from torch import nn

from genlab.errors import UserError
from genlab.probes.hadamard import fwht
from genlab.probes.projections import (
    PROJECTION_NAMES,
    DenseProjection,
    FastfoodProjection,
    IdentityProjection,
    Projection,
    SparseProjection,
    make_projection,
)

__all__ = [
    "Projection",
    "DenseProjection",
    "SparseProjection",
    "FastfoodProjection",
    "IdentityProjection",
    "PROJECTION_NAMES",
    "make_projection",
    "fwht",
    "SubspaceModel",
]


# --------------------------------------------------------------------------------------
# Fast Walsh-Hadamard transform
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Projections R^d -> R^D
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# The subspace-wrapped model
# --------------------------------------------------------------------------------------


class SubspaceModel(nn.Module):
    """Train any module in the random affine subspace theta = theta_0 + P theta_d (Li et al. 2018).

    At construction the module's trainable parameters (those with ``requires_grad``) are
    flattened, in ``named_parameters()`` order, into theta_0 in R^D (a frozen buffer copy).
    The only trainable tensor is ``theta_d`` in R^d, initialised to zero, so training starts
    exactly at the module's initial weights. ``forward(*args, **kwargs)`` computes theta,
    splits it back into the parameter shapes and calls
    ``torch.func.functional_call(module, params, args, kwargs)``; the module's layers are not
    rewritten, its buffers (e.g. BatchNorm running statistics) and frozen parameters are used
    and updated exactly as in a direct forward pass, and ``train()`` / ``eval()`` reach it.

    ``projection`` is a name accepted by :func:`make_projection` or a ready
    :class:`Projection` whose sizes match (e.g. ``IdentityProjection(D)``). The projection is
    built on the device and dtype of the module's parameters.

    ``parameters()`` yields only theta_d, so ``torch.optim.SGD(model.parameters(), ...)``
    trains the subspace coordinates. :meth:`materialize` returns an independent copy of the
    module holding theta, for evaluation or for measures that need a plain network.
    """

    def __init__(
        self, module: nn.Module, d: int, projection: str | Projection = "dense", seed: int = 0
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise UserError(f"SubspaceModel wraps a torch.nn.Module, got {type(module).__name__}")
        trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not trainable:
            raise UserError(
                "SubspaceModel: the module has no trainable parameters (none with requires_grad=True)"
            )
        dtypes = sorted({str(p.dtype) for _, p in trainable})
        devices = sorted({str(p.device) for _, p in trainable})
        if len(dtypes) > 1 or len(devices) > 1:
            raise UserError(
                "SubspaceModel needs all trainable parameters on one dtype and device, "
                f"got dtypes={dtypes}, devices={devices}"
            )
        self.module = module
        self._names = [name for name, _ in trainable]
        self._shapes = [tuple(p.shape) for _, p in trainable]
        self._numels = [p.numel() for _, p in trainable]
        theta_0 = torch.cat([p.detach().reshape(-1) for _, p in trainable]).clone()
        self.register_buffer("theta_0", theta_0)
        self.projection = self._build_projection(projection, theta_0.numel(), d, seed, theta_0)
        self.theta_d = nn.Parameter(torch.zeros(d, dtype=theta_0.dtype, device=theta_0.device))

    @staticmethod
    def _build_projection(
        projection: str | Projection, D: int, d: int, seed: int, theta_0: torch.Tensor
    ) -> Projection:
        if isinstance(projection, Projection):
            if (projection.D, projection.d) != (D, d):
                raise UserError(
                    f"projection maps R^{projection.d} -> R^{projection.D} but the model needs d={d}, D={D}"
                )
            return projection
        if not isinstance(projection, str):
            names = ", ".join(PROJECTION_NAMES)
            raise UserError(f"projection must be a name ({names}) or a Projection, got {projection!r}")
        return make_projection(projection, D, d, seed=seed, device=theta_0.device, dtype=theta_0.dtype)

    @property
    def D(self) -> int:
        """Number of trainable parameters of the wrapped module."""
        return int(self.theta_0.numel())

    @property
    def d(self) -> int:
        """Dimension of the trained subspace."""
        return int(self.theta_d.numel())

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """Only theta_d: the wrapped module's own parameters are replaced by theta in forward."""
        yield (f"{prefix}.theta_d" if prefix else "theta_d"), self.theta_d

    def theta(self) -> torch.Tensor:
        """Current full parameter vector theta_0 + P theta_d (shape [D], differentiable in theta_d)."""
        return self.projection.affine(self.theta_d, self.theta_0)

    def parameter_dict(self) -> dict[str, torch.Tensor]:
        """theta split into the wrapped module's trainable parameters, keyed by their names."""
        chunks = torch.split(self.theta(), self._numels)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self._names, chunks, self._shapes)}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped module with its trainable parameters set to theta_0 + P theta_d."""
        return torch.func.functional_call(self.module, self.parameter_dict(), args, kwargs)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """An independent deep copy of the wrapped module with theta loaded into its parameters.

        Buffers (e.g. BatchNorm statistics) and the train/eval mode are copied as they are now.
        """
        copied = copy.deepcopy(self.module)
        for name, value in self.parameter_dict().items():
            copied.get_parameter(name).copy_(value)
        return copied

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}"
