"""Learning-rate schedules as multipliers of the base rate, a function of progress through training.

Progress is counted in epochs, 0-based and fractional: the step ``b`` of epoch ``e`` (both from 0)
of an epoch of ``S`` steps is at ``e + b / S``, so the first step of training is at 0 and the last
at ``E - 1/S``. Stepped once per batch, the schedules are those of ``torch.optim.lr_scheduler``:
``cosine`` is CosineAnnealingLR with ``T_max = E S``, ``linear`` is LinearLR from 1 to 0 over ``E S``
steps, ``step`` is MultiStepLR at the milestones' first steps, and the warm-up is LinearLR from
``1 / (W S)`` to 1 over the first ``W S`` steps (the first step is not wasted at lr 0).
"""
from __future__ import annotations

import math

SCHEDULES = {
    "constant": "the base learning rate throughout",
    "cosine": "cosine decay from the base rate to zero over the epoch budget (Loshchilov & Hutter 2017)",
    "step": "multiply by gamma at each milestone epoch",
    "linear": "linear decay from the base rate to zero over the epoch budget",
}


def lr_multiplier(schedule: str, epoch_float: float, total_epochs: int,
                  milestones: tuple[int, ...] = (), gamma: float = 0.1,
                  warmup_epochs: float = 0.0, steps_per_epoch: int = 1) -> float:
    """Multiplier of the base learning rate at fractional epoch ``epoch_float`` (0-based, see the
    module docstring). An optional linear warm-up over ``warmup_epochs`` multiplies any schedule."""
    if warmup_epochs > 0:
        warm_steps = warmup_epochs * steps_per_epoch
        warm = min(1.0, (epoch_float * steps_per_epoch + 1.0) / warm_steps)
    else:
        warm = 1.0
    frac = min(1.0, epoch_float / max(total_epochs, 1))
    if schedule == "constant":
        m = 1.0
    elif schedule == "cosine":
        m = 0.5 * (1.0 + math.cos(math.pi * frac))
    elif schedule == "linear":
        m = 1.0 - frac
    elif schedule == "step":
        m = gamma ** sum(1 for e in milestones if epoch_float >= e - 1e-9)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return warm * m
