"""Learning-rate schedules as multipliers of the base rate, a function of progress through training."""
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
                  warmup_epochs: float = 0.0) -> float:
    """Multiplier of the base learning rate at fractional epoch ``epoch_float`` (0-based).

    An optional linear warm-up over ``warmup_epochs`` multiplies any schedule.
    """
    warm = min(1.0, (epoch_float + 1e-12) / warmup_epochs) if warmup_epochs > 0 else 1.0
    frac = min(1.0, epoch_float / max(total_epochs, 1))
    if schedule == "constant":
        m = 1.0
    elif schedule == "cosine":
        m = 0.5 * (1.0 + math.cos(math.pi * frac))
    elif schedule == "linear":
        m = 1.0 - frac
    elif schedule == "step":
        m = gamma ** sum(1 for e in milestones if epoch_float >= e)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return warm * m
