"""Mixed precision: matrix products in bfloat16 or float16, everything else in float32.

``fp32`` (the default) computes everything in float32 and is bitwise reproducible. ``bf16`` and
``fp16`` run the forward and backward products in the low precision (``torch.autocast`` for modules,
explicit casts in the packed layout's hand-written backward) while master weights, optimizer state,
losses and evaluation stay in float32, as in Micikevicius et al. (2018), "Mixed precision training".
float16 has a narrow exponent range, so its gradients are computed on a loss multiplied by a
per-model scale that backs off when a gradient overflows and grows after a run of good steps
(:class:`LossScaler`, the rule of ``torch.amp.GradScaler``); bfloat16 has float32's range and
needs no scaling.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(precision: str) -> torch.dtype | None:
    """The dtype of the products (``None``: float32 throughout)."""
    return DTYPES[precision]


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for the products of a forward pass, or nothing at fp32."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def slow_precision_note(precision: str, device: str | torch.device) -> str | None:
    """One line when ``precision`` has no fast path on ``device`` (it then runs, but slower than
    fp32), else ``None``."""
    if precision == "fp32":
        return None
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        needs = 8 if precision == "bf16" else 7
        if major < needs:
            return (f"note: {torch.cuda.get_device_name(device)} has no tensor cores for {precision} "
                    f"(compute capability {major}.x < {needs}.0): it will run slower than fp32")
        return None
    flags = _cpu_flags()
    fast = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"amx_fp16", "avx512_fp16"}}[precision]
    if not flags & fast:
        return (f"note: this CPU has no {precision} matrix unit ({' or '.join(sorted(fast))}): "
                f"{precision} will run slower than fp32")
    if precision == "fp16" and "amx_fp16" not in flags:
        return "note: this CPU computes fp16 products without AMX-FP16: bf16 is faster here"
    return None


class LossScaler:
    """Dynamic loss scales, one per model (float16 only): gradients are computed on ``loss * scale``
    and divided by it before the update; a model whose gradients overflow skips that update and
    halves its scale, and a model with ``growth_interval`` good steps in a row doubles it."""

    def __init__(self, models: int, init: float = 2.0 ** 16, growth_interval: int = 2000):
        self.scale = torch.full((models,), init, dtype=torch.float32)
        self.good_steps = torch.zeros(models, dtype=torch.int64)
        self.growth_interval = growth_interval

    def update(self, idx: torch.Tensor, finite: torch.Tensor) -> None:
        """After a step of the models ``idx``: back off where a gradient was not finite, grow after
        a run of good steps."""
        idx, finite = idx.cpu(), finite.cpu()
        good = self.good_steps[idx] + 1
        grow = finite & (good >= self.growth_interval)
        scale = self.scale[idx]
        scale = torch.where(finite, torch.where(grow, scale * 2.0, scale), scale * 0.5)
        self.scale[idx] = scale
        self.good_steps[idx] = torch.where(finite & ~grow, good, torch.zeros_like(good))

    def state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load(self, state: dict) -> None:
        self.scale, self.good_steps = state["scale"], state["good_steps"]
