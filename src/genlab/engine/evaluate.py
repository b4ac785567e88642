"""Evaluation of stacked models: mean loss and accuracy of K models on a data set, in eval mode."""
from __future__ import annotations

from typing import Callable

import torch

from genlab.engine.losses import loss_gradient_correct
from genlab.engine.stack import StackedModels, stacked_forward

PACKED_EVAL_BYTES = 8 << 20
"""Packed models are evaluated in chunks whose widest activation (all models' units side by side)
takes about this many bytes: large enough for efficient matrix products, small enough for the
processor's last-level cache."""


def eval_rows(batch_size: int, models: int) -> int:
    """Rows per evaluation chunk: K models' activations of a chunk stay in cache."""
    return max(64, min(batch_size, 8192 // max(models, 1)))


def packed_eval_rows(batch_size: int, units: int) -> int:
    """Rows per evaluation chunk of packed models with ``units`` hidden units in all (see
    :data:`PACKED_EVAL_BYTES`)."""
    return max(64, min(batch_size, PACKED_EVAL_BYTES // (4 * max(units, 1))))


@torch.no_grad()
def evaluate_stacked(stack: StackedModels, params: dict[str, torch.Tensor], x: torch.Tensor,
                     y: torch.Tensor, loss: str = "ce", batch_size: int = 2000,
                     shared_input: bool = True, models: torch.Tensor | None = None, packed: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy ``([K], [K])`` of stacked models, in eval mode (dropout off,
    BatchNorm on its running statistics).

    ``x`` is ``[N, ...]`` when ``shared_input`` else ``[K, N, ...]``; ``y`` is ``[N]`` or ``[K, N]``.
    ``models``: which of the stack's models ``params`` holds (see :func:`stacked_forward`).
    Plain MLPs run in the packed layout (:mod:`genlab.engine.strategies.packed`) unless ``packed`` is False.
    """
    from genlab.engine.strategies.packed import packed_plan

    was_training = stack.template.training
    stack.template.eval()
    k = next(iter(params.values())).shape[0]
    plan = packed_plan(stack, models if models is not None else range(k)) if shared_input and packed else None
    packed_params = plan.pack(params) if plan is not None else None
    rows = eval_rows(batch_size, k) if plan is None else packed_eval_rows(batch_size, plan.widest_units)

    def forward(xb: torch.Tensor) -> torch.Tensor:
        if plan is not None:
            return plan.forward(packed_params, [xb])
        return stacked_forward(stack, params, xb, shared_input=shared_input, models=models)

    try:
        return chunked_loss_and_accuracy(forward, x, y, loss, rows, k, shared_input)
    finally:
        stack.template.train(was_training)


def chunked_loss_and_accuracy(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                              loss: str, rows: int, models: int, shared_input: bool = True
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy ``([K], [K])`` of ``forward`` (inputs ``[R, ...]``, or ``[K, R, ...]``
    without ``shared_input``, to the outputs ``[K, R, C]`` of ``models`` = K models) on ``x`` with
    labels ``y`` (``[N]`` or ``[K, N]``), ``rows`` examples at a time."""
    n = x.shape[0] if shared_input else x.shape[1]
    loss_sum = torch.zeros(models, dtype=torch.float64, device=y.device)
    correct = torch.zeros(models, dtype=torch.float64, device=y.device)
    for start in range(0, n, rows):
        xb = x[start:start + rows] if shared_input else x[:, start:start + rows]
        yb = y[..., start:start + rows].expand(models, -1)
        losses, _, right = loss_gradient_correct(forward(xb).float(), yb, loss, gradient=False)
        loss_sum += losses.double() * yb.shape[1]
        correct += right.double()
    return loss_sum / n, correct / n
