"""Prequential (online) code length of labels under a network (Blier & Ollivier 2018, "The
description length of deep learning models", NeurIPS): the accounting, and the step that codes a
block with the checkpoint a model chose on its validation split.

Labels y_1..y_n are sent block by block: the first block [0, t_1) with the uniform code
(log2 K bits per label), each later block [t_s, t_{s+1}) with the predictive distribution of a
network trained on everything sent so far, -log2 p(y | x) bits per label (arithmetic coding
achieves this to within 2 bits overall). Baselines: the uniform code n log2 K and the naive
two-part code that sends the parameters as 32-bit floats.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from genlab.engine import TrainOutcome, stacked_forward
from genlab.errors import UserError

BITS_PER_PARAMETER = 32


def code_length_bits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example code length -log2 p(y | x) in bits, p = softmax(logits), in float64.

    ``logits`` is ``[..., N, K]`` and ``labels`` ``[..., N]`` (integer classes); returns ``[..., N]``.
    A model predicting uniformly costs exactly log2 K bits per label.
    """
    log_p = F.log_softmax(logits.to(torch.float64), dim=-1)
    return -log_p.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1) / math.log(2.0)


def uniform_code_bits(n: int, num_classes: int) -> float:
    """n log2 K: the labels of n examples sent with the uniform code."""
    return n * math.log2(num_classes)


def parameter_code_bits(params: int, bits_per_parameter: int = BITS_PER_PARAMETER) -> float:
    """The naive model cost: every parameter sent as a ``bits_per_parameter``-bit float."""
    return float(params * bits_per_parameter)


def block_boundaries(n: int, first_block: int, growth: float = 2.0) -> list[int]:
    """Block ends t_1 < t_2 < ... < t_S = n with t_1 = ``first_block`` and t_{s+1} = round(growth t_s).

    Blier & Ollivier's timesteps roughly double; the last block ends at n (it may be shorter).
    """
    if first_block >= n:
        raise UserError(f"first_block={first_block} must be smaller than the number of training examples {n}")
    if growth <= 1.0:
        raise UserError(f"growth={growth} must be > 1")
    ends = [first_block]
    while ends[-1] < n:
        ends.append(min(n, max(ends[-1] + 1, round(ends[-1] * growth))))
    return ends


def prequential_bits(first_block: int, num_classes: int, block_bits: list[float]) -> float:
    """Total prequential code length: the first block uniformly, then the blocks' model bits."""
    return uniform_code_bits(first_block, num_classes) + float(sum(block_bits))


def epoch_budget(epochs: int, min_steps: int, n_fit: int, batch_size: int) -> int:
    """Epochs a block's network trains: ``epochs``, or more when a small block would otherwise take
    fewer than ``min_steps`` optimizer steps."""
    return max(epochs, math.ceil(min_steps / math.ceil(n_fit / batch_size)))


def checkpoint_epochs(budget: int) -> tuple[int, ...]:
    """Candidate stopping epochs 0, 1, 2, 4, ... (powers of two) and the last epoch."""
    epochs = {0, budget}
    e = 1
    while e < budget:
        epochs.add(e)
        e *= 2
    return tuple(sorted(epochs))


def validation_split(t: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, validation) of the first t examples; a seeded random ``fraction`` is held out."""
    n_val = min(t - 1, max(1, round(fraction * t)))
    order = np.random.default_rng(seed).permutation(t)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def best_checkpoints(curves: list[dict], keys: list[str], candidates: tuple[int, ...]) -> list[int]:
    """Per model, the candidate epoch with the lowest validation loss (ties: the earliest)."""
    chosen = []
    for key in keys:
        losses = {c["epoch"]: c["test_loss"] for c in curves if c["key"] == key and c["epoch"] in candidates}
        finite = {e: v for e, v in losses.items() if math.isfinite(v)}
        chosen.append(min(finite, key=lambda e: (finite[e], e)) if finite else 0)
    return chosen


def code_block(outcome: TrainOutcome, keys: list[str], candidates: tuple[int, ...], x_next: torch.Tensor,
               y_next: torch.Tensor, device: str = "cpu") -> tuple[torch.Tensor, list[int]]:
    """Bits to send the next block with each model of ``outcome`` at its chosen checkpoint.

    Model i (``keys[i]``, trained with ``checkpoint_epochs=candidates`` and evaluated on its
    validation split) codes ``y_next[i]`` given ``x_next[i]`` ([models, block, ...]) with the
    candidate checkpoint of lowest validation loss (:func:`best_checkpoints`): the receiver can
    make the same choice. Returns the summed code lengths [models] and the chosen epochs.
    """
    chosen = best_checkpoints(outcome.curves, keys, candidates)

    def at_chosen(checkpoints: dict[int, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        first = checkpoints[chosen[0]]
        return {name: torch.stack([checkpoints[e][name][i] for i, e in enumerate(chosen)]).to(device)
                for name in first}

    params = at_chosen(outcome.checkpoints)
    # a model with BatchNorm codes with the running statistics of its chosen epoch, not the last epoch's
    buffers = at_chosen(outcome.checkpoint_buffers) if outcome.stack.buffers else None
    outcome.stack.template.eval()
    with torch.no_grad():
        logits = stacked_forward(outcome.stack, params, x_next.to(device), buffers=buffers)
    return code_length_bits(logits, y_next.to(device)).sum(dim=1), chosen
