"""The training losses of K models at once, and their gradients with respect to the outputs.

``ce``: cross-entropy of the logits; ``mse``: squared error on one-hot targets, averaged over
examples and classes (the convention of Belkin et al. 2019's squared-loss networks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def per_model_losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-model mean loss ``[K]`` of outputs ``out [K, B, C]`` with labels ``y [K, B]``."""
    k, b, c = out.shape
    if loss == "ce":
        return F.cross_entropy(out.reshape(k * b, c), y.reshape(k * b), reduction="none").view(k, b).mean(1)
    target = F.one_hot(y, c).to(out.dtype)
    return ((out - target) ** 2).mean(dim=(1, 2))


def model_loss(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The mean loss of one model's outputs ``out [B, C]`` with labels ``y [B]`` (a scalar)."""
    if loss == "ce":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, F.one_hot(y, out.shape[-1]).to(out.dtype))


def loss_and_gradient(out: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model mean losses ``[K]`` of outputs ``out [K, B, C]`` with labels ``y [K, B]``, and
    the gradient of their sum with respect to ``out`` (see :func:`loss_gradient_correct`)."""
    losses, grad, _ = loss_gradient_correct(out, y, loss)
    return losses, grad


def loss_gradient_correct(out: torch.Tensor, y: torch.Tensor, loss: str, gradient: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-model mean losses ``[K]``, the gradient of their sum with respect to ``out [K, B, C]``
    (``None`` without ``gradient``), and each model's number of correct predictions ``[K]``.

    Cross-entropy: with ``m = max_c out``, ``z = out - m``, ``s = sum_c exp(z)``, the loss of an
    example is ``log s - z_y`` and its gradient ``(exp(z) / s - onehot(y)) / B``; the maximum that
    makes the exponentials safe also gives the prediction. Written out, this is ~3x faster than
    ``F.cross_entropy`` for the few classes of these studies (a reduction over a dimension of 10
    is what PyTorch's log-softmax kernel is slowest at). Squared error on one-hot targets:
    ``mean (out - onehot)^2``, gradient ``2 (out - onehot) / (B C)``."""
    k, b, c = out.shape
    top, predicted = out.max(-1)
    correct = (predicted == y).sum(1)
    if loss == "ce":
        z = out - top.unsqueeze(-1)
        e = z.exp()
        total = e.sum(-1)
        losses = (total.log() - z.gather(-1, y.unsqueeze(-1)).squeeze(-1)).mean(1)
        if not gradient:
            return losses, None, correct
        grad = e.div_(total.unsqueeze(-1))
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
        return losses, grad.div_(b), correct
    diff = out - F.one_hot(y, c).to(out.dtype)
    losses = diff.pow(2).mean(dim=(1, 2))
    return losses, diff.mul_(2.0 / (b * c)) if gradient else None, correct
