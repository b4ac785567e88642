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
    the gradient of their sum with respect to ``out``: cross-entropy ``(softmax - onehot) / B``,
    squared error on one-hot targets ``2 (out - onehot) / (B C)``."""
    k, b, c = out.shape
    if loss == "ce":
        logp = torch.log_softmax(out, -1)
        losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
        grad = logp.exp_()
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
        return losses, grad.div_(b)
    diff = out - F.one_hot(y, c).to(out.dtype)
    return diff.pow(2).mean(dim=(1, 2)), diff.mul_(2.0 / (b * c))
