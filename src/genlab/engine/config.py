"""What the engine is asked to do (:class:`TrainConfig`, :class:`ModelJob`, :class:`InputGroup`) and
what it returns (:class:`ModelOutcome`, :class:`TrainOutcome`)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from genlab.engine.stack import StackedModels

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A training-batch transform ``(x [B, ...], generator) -> x' [B, ...]`` (same shape), drawing all
its randomness from the CPU ``generator`` it is given (e.g. :class:`genlab.augment.RandomShift`)."""

STRATEGIES = ("auto", "packed", "packed-threads", "packed-procs", "stacked", "lockstep", "lockstep-cl", "threads",
              "threads-cl")
"""How a group of models is executed (see :mod:`genlab.engine.strategies`), in order of preference
when they are about as fast; ``auto`` chooses."""

PRECISIONS = ("fp32", "bf16", "fp16")

SNAPSHOT_SECONDS = 10.0
"""Default least training time between two resume snapshots: a kill loses at most this much work
(plus up to ``snapshot_every`` epochs), and a run of many short epochs does not spend its time
writing snapshots (200 snapshots were a third of the nn double-descent quick run)."""


def default_snapshot_seconds() -> float:
    """``$GENLAB_SNAPSHOT_SECONDS`` (seconds, >= 0; 0 writes a snapshot every ``snapshot_every``
    epochs), else :data:`SNAPSHOT_SECONDS`."""
    from genlab.errors import UserError

    value = os.environ.get("GENLAB_SNAPSHOT_SECONDS", "").strip()
    if not value:
        return SNAPSHOT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(f"GENLAB_SNAPSHOT_SECONDS must be a number of seconds >= 0, got {value!r}")
    return seconds


@dataclass
class TrainConfig:
    """How to train. Every field applies to all models of a batch unless a job overrides it."""

    loss: str = "ce"                      # ce (cross-entropy) | mse (squared error on one-hot)
    optimizer: str = "sgd"                # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 20
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    stop_train_acc: float | None = None   # freeze a model once its train accuracy reaches this
    stop_train_loss: float | None = None  # ... or its train loss falls to this
    max_steps: int | None = None          # ... or it has taken this many steps
    eval_every: int = 1                   # epochs between full evaluations
    eval_batch_size: int = 2000
    eval_train: bool = True
    eval_test: str = "every"              # every: the test set at every evaluation; final: only at a model's
                                          # last one (when it stops or the budget ends; NaN in the curves before)
    checkpoint_epochs: tuple[int, ...] = ()
    snapshot_every: int = 5               # epochs between resume snapshots (when a path is given) ...
    snapshot_seconds: float = field(default_factory=default_snapshot_seconds)  # ... and at least this many
                                          # seconds of training since the last one (or the start)
    eval_initial: bool = True             # evaluate (and record curves) before the first step
    strategy: str = "auto"                # one of STRATEGIES; auto: the fastest eligible one
    packed: bool = True                   # False: never the packed layout (kept for callers of genlab 0.1)
    precision: str = "fp32"               # fp32 | bf16 | fp16 (autocast products, float32 master weights)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.snapshot_every < 1:
            raise ValueError(f"TrainConfig.snapshot_every must be at least 1, got {self.snapshot_every}")
        if not (math.isfinite(self.snapshot_seconds) and self.snapshot_seconds >= 0):
            raise ValueError(f"TrainConfig.snapshot_seconds must be >= 0, got {self.snapshot_seconds}")
        if self.eval_test not in ("every", "final"):
            raise ValueError(f"TrainConfig.eval_test must be 'every' or 'final', got {self.eval_test!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "warmup_epochs"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"TrainConfig.{name} must be finite, got {getattr(self, name)}")


@dataclass
class ModelJob:
    """One model of a batch: its initialized module, seed, labels and optional overrides."""

    key: str
    module: nn.Module
    seed: int
    y_train: torch.Tensor
    y_test: torch.Tensor | None = None    # defaults to the input group's test labels
    inputs: int = 0                       # index of the InputGroup it trains on
    lr: float | None = None
    weight_decay: float | None = None
    mask: dict[str, torch.Tensor] | None = None  # pruning mask (True = kept), per parameter name
    augment: Augment | None = None        # applied to this model's training batches only (not to evaluation)


@dataclass
class InputGroup:
    """Inputs shared by some jobs (e.g. clean images, or images with shuffled pixels).

    ``x_val``/``y_val`` (optional, given together) is a held-out validation set evaluated with the
    test set at every evaluation and recorded as ``val_loss``/``val_acc``: a stopping point or a
    hyperparameter can then be selected on it without looking at the test set.
    """

    x_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError("x_val and y_val must be given together")
        if self.x_val is not None and self.x_val.shape[0] != self.y_val.shape[0]:
            raise ValueError(f"x_val has {self.x_val.shape[0]} examples but y_val has {self.y_val.shape[0]}")

    def to(self, device: torch.device) -> "InputGroup":
        move = (lambda t: None if t is None else t.to(device))
        return InputGroup(self.x_train.to(device), self.x_test.to(device), self.y_test.to(device),
                          move(self.x_val), move(self.y_val))


@dataclass
class ModelOutcome:
    key: str
    epochs: int = 0
    steps: int = 0
    fit: bool = False
    steps_to_fit: int | None = None
    epochs_to_fit: int | None = None
    diverged: bool = False
    diverged_step: int | None = None
    train_loss: float = float("nan")
    train_acc: float = float("nan")
    test_loss: float = float("nan")
    test_acc: float = float("nan")
    val_loss: float = float("nan")        # only when the input group has a validation set
    val_acc: float = float("nan")


@dataclass
class TrainOutcome:
    stack: StackedModels
    outcomes: list[ModelOutcome]
    curves: list[dict]
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0
    strategies: list[dict] = field(default_factory=list)  # which strategy ran which models, and why
    checkpoint_buffers: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    """The stacked buffers (BatchNorm running statistics) at each checkpoint epoch, for models that have any."""

    def module(self, k: int) -> nn.Module:
        return self.stack.module(k)
