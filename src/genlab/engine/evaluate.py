"""Evaluation of stacked models: mean loss and accuracy of K models on a data set, in eval mode."""
from __future__ import annotations

import torch

from genlab.engine.losses import per_model_losses
from genlab.engine.stack import StackedModels, stacked_forward


def eval_rows(batch_size: int, models: int) -> int:
    """Rows per evaluation chunk: K models' activations of a chunk stay in cache."""
    return max(64, min(batch_size, 8192 // max(models, 1)))


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
    n = x.shape[0] if shared_input else x.shape[1]
    plan = packed_plan(stack, models if models is not None else range(k)) if shared_input and packed else None
    packed_params = plan.pack(params) if plan is not None else None
    y = y.expand(k, n) if y.dim() == 1 else y
    loss_sum = torch.zeros(k, dtype=torch.float64, device=y.device)
    correct = torch.zeros(k, dtype=torch.float64, device=y.device)
    rows = eval_rows(batch_size, k)
    for start in range(0, n, rows):
        xb = x[start:start + rows] if shared_input else x[:, start:start + rows]
        yb = y[:, start:start + rows]
        if plan is not None:
            out = plan.forward(packed_params, [xb])
        else:
            out = stacked_forward(stack, params, xb, shared_input=shared_input, models=models)
        loss_sum += per_model_losses(out.float(), yb, loss).double() * yb.shape[1]
        correct += (out.argmax(-1) == yb).double().sum(1)
    stack.template.train(was_training)
    return loss_sum / n, correct / n
