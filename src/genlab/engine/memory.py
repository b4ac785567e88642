"""Will the K models of a unit fit in memory? An estimate made before anything is allocated.

A batched training of K models with P parameters each (padded to the largest of them, as the
stack holds them) keeps, in 4-byte floats unless the parameters say otherwise:

* the stacked parameters, the live copy the optimizer steps and their gradients: 3 K P values,
  plus a boolean mask per parameter (K P bytes) and one template module (P values);
* the optimizer state, stored and live: 2 m K P values, with m = 0 for plain SGD, 1 for SGD with
  momentum, 2 for Adam/AdamW (first and second moments);
* the activations of one batch: K B A values kept for the backward pass and as many gradients,
  where A is the number of values the layers of one model output for one example (found by running
  the largest model once on one training example, in eval mode without gradients); evaluation holds
  K B_eval A values without gradients, and the larger of the two counts.

Models are counted without building them for real: a module is constructed under
``torch.device("meta")`` or its existing parameters' shapes are read. The estimate is compared
with the memory available now (``MemAvailable`` and the cgroup limit on CPU,
``torch.cuda.mem_get_info`` on CUDA) and a unit that cannot fit is refused with one line, instead
of the allocator's error after minutes of work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from genlab.errors import UserError

OPTIMIZER_STATES = {"adam": 2, "adamw": 2}
"""Optimizer state tensors per parameter (SGD: 1 with momentum, 0 without)."""


@dataclass
class MemoryEstimate:
    models: int
    parameters: int          # bytes of stacked parameters, live copy, template and masks
    gradients: int
    optimizer: int
    activations: int
    batch_size: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        return (f"about {gigabytes(self.total)} (parameters {gigabytes(self.parameters)}, gradients "
                f"{gigabytes(self.gradients)}, optimizer state {gigabytes(self.optimizer)}, activations of a "
                f"batch of {self.batch_size} {gigabytes(self.activations)})")


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _padded_parameters(modules: Sequence[nn.Module]) -> tuple[int, int]:
    """(values, bytes per value) of one model padded to the largest shape of each parameter."""
    shapes: dict[str, list[int]] = {}
    size = 4
    for module in modules:
        for name, p in module.named_parameters():
            size = p.element_size()
            old = shapes.setdefault(name, list(p.shape))
            shapes[name] = [max(a, b) for a, b in zip(old, p.shape)]
    return sum(math.prod(s) for s in shapes.values()), size


def activation_values(module: nn.Module, input_shape: Sequence[int], example: torch.Tensor | None = None) -> int:
    """Values the leaf layers of ``module`` output for one example (0 when it cannot run).

    The module runs once on one example (``example``, else zeros of ``input_shape``) in eval mode
    without gradients, with the random state restored afterwards, so that training is unchanged:
    a forward on one example costs microseconds, where tracing on the meta device first pays ~2 s
    of PyTorch imports."""
    total = 0

    def count(_, __, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = example[:1] if example is not None else torch.zeros(1, *input_shape, device=device)
    modes = {m: m.training for m in module.modules()}
    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            module.eval()
            module(x.to(device))
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
        return 0
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    return total


def estimate_training(modules: Sequence[nn.Module], input_shape: Sequence[int], batch_size: int,
                      eval_batch_size: int, optimizer: str, momentum: float,
                      example: torch.Tensor | None = None) -> MemoryEstimate:
    """What training ``modules`` together needs (see the module docstring)."""
    k = len(modules)
    values, size = _padded_parameters(modules)
    states = OPTIMIZER_STATES.get(optimizer, 1 if momentum > 0 else 0)
    largest = max(modules, key=lambda m: sum(p.numel() for p in m.parameters()))
    per_example = activation_values(largest, input_shape, example)
    activations = max(2 * k * batch_size * per_example, k * eval_batch_size * per_example) * size
    return MemoryEstimate(models=k, parameters=(2 * k + 1) * values * size + k * values,
                          gradients=k * values * size, optimizer=2 * states * k * values * size,
                          activations=activations, batch_size=batch_size)


def _cgroup_free() -> int | None:
    limit, current = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        text = limit.read_text().strip()
        if text == "max":
            return None
        return int(text) - int(current.read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory that can be allocated now on ``device`` (None when it cannot be told)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type != "cpu":
        return None
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_free()
    known = [v for v in (free, cgroup) if v is not None]
    return min(known) if known else None


def check_training_fits(jobs: Sequence, inputs: Sequence, config) -> None:
    """Refuse (UserError) a batched training whose estimate exceeds the memory available on its device."""
    modules = [j.module for j in jobs]
    free = available_bytes(config.device)
    if not modules or free is None:
        return
    n_train = inputs[0].x_train.shape[0]
    n_eval = max(max(g.x_test.shape[0], n_train if config.eval_train else 0) for g in inputs)
    need = estimate_training(modules, tuple(inputs[0].x_train.shape[1:]), min(config.batch_size, n_train),
                             min(config.eval_batch_size, n_eval), config.optimizer, config.momentum,
                             example=inputs[0].x_train[:1])
    if need.total > free:
        raise UserError(f"the {need.models} models trained together here need {need.describe()}, but "
                        f"{gigabytes(free)} is available on {config.device}; use a smaller --batch-size, or "
                        f"fewer or smaller models per pass (e.g. narrower --widths)")


TRAINING_COPIES = 4
"""A model that trains is held at least four times: the module, its stacked copy, the live copy
the optimizer steps, and the gradient."""


def check_model_fits(build: Callable[[], nn.Module], what: str, device: str = "cpu") -> None:
    """Refuse (UserError) building a model that could not be trained in the memory available now:
    its parameters held :data:`TRAINING_COPIES` times (before any optimizer state or activation).

    ``build`` is called under ``torch.device("meta")``, so nothing is allocated; a builder that
    cannot run there is not checked. Models built before it (the others of a unit) have already
    taken their share of the available memory.
    """
    try:
        with torch.device("meta"):
            model = build()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    free = available_bytes(device)
    if free is not None and TRAINING_COPIES * size > free:
        count = sum(p.numel() for p in model.parameters())
        raise UserError(f"{what} has {count:,} parameters ({gigabytes(size)}); training it needs at least "
                        f"{gigabytes(TRAINING_COPIES * size)} (module, stacked and live copies, gradient), but "
                        f"{gigabytes(free)} is available now on {device}; use narrower --widths, a smaller model "
                        f"or fewer models per pass")
