"""The interface every execution strategy implements: a :class:`Session` trains some models of a
:class:`~genlab.engine.trainer.BatchTrainer` between two synchronizations.

The trainer keeps the canonical state of all K models - stacked, zero-padded parameters and
buffers (:class:`~genlab.engine.stack.StackedModels`) and stacked optimizer state - and does all
the bookkeeping (data order, stop rules, divergence, evaluation schedule, checkpoints, snapshots).
A session takes the models ``idx`` (the active ones) into its own layout when it opens, runs
their forward/backward passes and optimizer steps, and writes its state back on :meth:`Session.sync`.
Every strategy computes the same thing - model k's own loss, gradient and update - and differs
only in how the arithmetic is laid out, so the strategies agree up to floating-point reassociation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from genlab.engine.evaluate import evaluate_stacked

if TYPE_CHECKING:  # pragma: no cover
    from genlab.engine.trainer import BatchTrainer


@dataclass
class StepBatch:
    """One training step's inputs: ``xs[g]`` is the batch ``[B, ...]`` that the models of batch
    group ``g`` see (models share a group when they share data order and inputs and have no
    augmentation of their own); ``group_of[pos]`` is the group of session position ``pos``;
    ``y [k, B]`` are each model's labels; ``stacked``, when given, holds ``xs`` as one tensor."""

    xs: list[torch.Tensor]
    group_of: list[int]
    y: torch.Tensor
    epoch: int
    step: int
    stacked: torch.Tensor | None = None   # xs as one tensor [G, B, ...] when they were gathered at once
    loss_scale: torch.Tensor | None = None  # [k]: gradients of loss * scale (float16 training)


class Session:
    """Models ``idx`` (stack indices, increasing) of ``trainer`` in one strategy's layout."""

    name: ClassVar[str]
    exact_per_model: ClassVar[bool] = True
    """False when one model's non-finite values can reach another's outputs (the packed layout's
    zero blocks): on divergence the trainer redoes the step in an exact strategy."""

    def __init__(self, trainer: "BatchTrainer", idx: torch.Tensor, group_of: list[int]):
        self.trainer = trainer
        self.idx = idx
        self.group_of = group_of

    @property
    def num_models(self) -> int:
        return len(self.idx)

    def forward_backward(self, batch: StepBatch, working: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of one batch for the ``working`` models: sets their gradients and
        returns ``(losses [k], correct [k])`` (the batch loss and number of correct predictions).
        A model whose loss is not finite gets no gradient. A non-exact session that meets a
        non-finite loss sets no gradient at all (the trainer redoes the step elsewhere)."""
        raise NotImplementedError

    def unscale(self, scale: torch.Tensor) -> torch.Tensor:
        """Divide every model's gradients by its loss scale ``[k]``; which models' gradients are
        all finite ``[k]`` (the others skip this update)."""
        raise NotImplementedError

    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, working: torch.Tensor, uniform: bool) -> None:
        """One optimizer update of the ``working`` models (``lr``, ``weight_decay``: ``[k]``);
        ``uniform``: every model works and all share one learning rate and weight decay."""
        raise NotImplementedError

    def sync(self) -> None:
        """Write the session's parameters, buffers and optimizer state back to the trainer."""
        raise NotImplementedError

    def all_models(self, positions: torch.Tensor) -> bool:
        """Whether ``positions`` are every model of the session, in order."""
        return len(positions) == self.num_models and torch.equal(positions.cpu(), torch.arange(self.num_models))

    @torch.no_grad()
    def evaluate(self, positions: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy ``([n], [n])`` of the session's models at ``positions`` on the
        shared inputs ``x [N, ...]`` with labels ``y [n, N]``, in eval mode. The default reads the
        trainer's canonical state, brought up to date first (a :meth:`sync`, when the session has
        stepped since the last); sessions that evaluate their own copies need none."""
        trainer = self.trainer
        trainer._sync()
        models = self.idx[positions]
        params = {n: p[models] for n, p in trainer.stack.params.items()}
        cfg = trainer.config
        return evaluate_stacked(trainer.stack, params, x, y, cfg.loss, cfg.eval_batch_size, models=models,
                                packed=cfg.packed and cfg.strategy in ("auto", "packed"))

    def close(self) -> None:
        """Release what the session holds beyond tensors (worker threads)."""

    def describe(self) -> dict:
        """What the manifest records of this session."""
        return {"strategy": self.name, "models": len(self.idx)}


def unscale_owned(grads: list[tuple[torch.Tensor, torch.Tensor | None]], scale: torch.Tensor, models: int
                  ) -> torch.Tensor:
    """Unscale gradients in place and find the models with non-finite ones: ``grads`` lists
    ``(gradient, owner)``, ``owner`` a long tensor broadcastable to the gradient naming the model of
    each entry, or ``None`` for a stacked ``[k, ...]`` gradient (model k owns row k)."""
    finite = torch.ones(models, dtype=torch.bool, device=scale.device)
    inverse = 1.0 / scale
    for grad, owner in grads:
        if owner is None:
            grad.mul_(inverse.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype))
            bad = ~torch.isfinite(grad).flatten(1).all(1)
            finite &= ~bad
        else:
            grad.mul_(inverse[owner].to(grad.dtype))
            bad = ~torch.isfinite(grad)
            if bool(bad.any()):
                finite[owner.expand_as(grad)[bad].unique()] = False
    return finite

