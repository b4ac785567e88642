"""The batched trainer: K models trained together in one computation.

Every model has its own initialization, data order (a permutation drawn from its seed and the
epoch), labels, learning rate and weight decay; all take one optimizer step at the same time
through a single vmapped forward and backward pass. Per-model stop rules (train accuracy, train
loss, a step budget) and divergence detection freeze individual models while the rest go on;
frozen models are dropped from the computation at the next epoch boundary.

Because the total loss is the sum of the per-model mean losses, the gradient with respect to
model k's parameters is exactly model k's own gradient: training K models together is the same
as training each alone, up to floating-point reassociation.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genlab.engine.optim import OptimizerSettings, StackedOptimizer
from genlab.engine.packed import PackedMLP, loss_and_gradient, packed_plan
from genlab.engine.schedules import lr_multiplier
from genlab.engine.stack import StackedModels, stack_modules, stacked_forward

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A training-batch transform ``(x [B, ...], generator) -> x' [B, ...]`` (same shape), drawing all
its randomness from the CPU ``generator`` it is given (e.g. :class:`genlab.augment.RandomShift`)."""


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
    checkpoint_epochs: tuple[int, ...] = ()
    snapshot_every: int = 5               # epochs between resume snapshots (when a path is given)
    eval_initial: bool = True             # evaluate (and record curves) before the first step
    packed: bool = True                   # plain MLPs train in the packed layout (engine.packed); False: vmap
    device: str = "cpu"


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

    def module(self, k: int) -> nn.Module:
        return self.stack.module(k)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (model seed, epoch): data order is a pure function of both."""
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augment_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for a model's augmentation draws in one epoch, independent of its data order."""
    digest = hashlib.sha256(f"augment:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _augmented(x: torch.Tensor, augmenters: list[tuple[int, Augment, torch.Generator]]) -> torch.Tensor:
    """``x [K, B, ...]`` with model ``pos``'s slice replaced by ``augment(x[pos], generator)``."""
    out = x.clone()
    for pos, augment, generator in augmenters:
        moved = augment(x[pos], generator)
        if moved.shape != x[pos].shape:
            raise ValueError(f"augment must keep the batch shape {tuple(x[pos].shape)}, got {tuple(moved.shape)}")
        out[pos] = moved
    return out


def _losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-model mean loss ``[K]``; ``mse`` averages the squared error over examples and classes."""
    k, b, c = out.shape
    if loss == "ce":
        return F.cross_entropy(out.reshape(k * b, c), y.reshape(k * b), reduction="none").view(k, b).mean(1)
    target = F.one_hot(y, c).to(out.dtype)
    return ((out - target) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def evaluate_stacked(stack: StackedModels, params: dict[str, torch.Tensor], x: torch.Tensor,
                     y: torch.Tensor, loss: str = "ce", batch_size: int = 2000,
                     shared_input: bool = True, models: torch.Tensor | None = None, packed: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy ``([K], [K])`` of stacked models, in eval mode (dropout off).

    ``x`` is ``[N, ...]`` when ``shared_input`` else ``[K, N, ...]``; ``y`` is ``[N]`` or ``[K, N]``.
    ``models``: which of the stack's models ``params`` holds (see :func:`stacked_forward`).
    Plain MLPs run in the packed layout (:mod:`genlab.engine.packed`) unless ``packed`` is False.
    """
    stack.template.eval()
    k = next(iter(params.values())).shape[0]
    n = x.shape[0] if shared_input else x.shape[1]
    plan = packed_plan(stack, models if models is not None else range(k)) if shared_input and packed else None
    packed_params = plan.pack(params) if plan is not None else None
    y = y.expand(k, n) if y.dim() == 1 else y
    loss_sum = torch.zeros(k, dtype=torch.float64, device=y.device)
    correct = torch.zeros(k, dtype=torch.float64, device=y.device)
    rows = max(64, min(batch_size, 8192 // k))  # K models' activations of a chunk stay in cache
    for start in range(0, n, rows):
        xb = x[start:start + rows] if shared_input else x[:, start:start + rows]
        yb = y[:, start:start + rows]
        if plan is not None:
            out = plan.forward(packed_params, [xb])
        else:
            out = stacked_forward(stack, params, xb, shared_input=shared_input, models=models)
        loss_sum += _losses(out, yb, loss).double() * yb.shape[1]
        correct += (out.argmax(-1) == yb).double().sum(1)
    stack.template.train()
    return loss_sum / n, correct / n


class _EpochBatches:
    """Training inputs of one epoch: which models share a batch, and each step's input tensors."""

    def __init__(self, trainer: "BatchTrainer", idx: torch.Tensor, augmenters: list):
        self.trainer = trainer
        self.groups = trainer.group[idx]
        self.input_of = [int(g) for g in self.groups.tolist()]
        self.augmenters = augmenters
        self.augment_of = {pos: (augment, generator) for pos, augment, generator in augmenters}
        self.first_of_group = trainer._input_groups(idx)[1]
        self.shared_order = len(self.first_of_group) == 1 and not augmenters

    def _x(self, pos: int, rows: torch.Tensor) -> torch.Tensor:
        return self.trainer.inputs[self.input_of[pos]].x_train.index_select(0, rows)

    def grouped(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """One input ``[B, ...]`` per group of models that see the same batch (augmented if theirs is)."""
        xs = []
        for pos in self.first_of_group:
            x = self._x(pos, batch[pos])
            if pos in self.augment_of:
                x = _augmented(x.unsqueeze(0), [(0, *self.augment_of[pos])])[0]
            xs.append(x)
        return xs

    def stacked(self, batch: torch.Tensor) -> torch.Tensor:
        """The input of the vmapped forward: ``[B, ...]`` when every model sees the same batch, else ``[K, B, ...]``."""
        if self.shared_order:
            return self._x(0, batch[0])
        x = self.trainer._batch_inputs(self.groups, batch)
        return _augmented(x, self.augmenters) if self.augmenters else x


class BatchTrainer:
    """Trains a list of :class:`ModelJob` together. See the module docstring."""

    def __init__(self, jobs: Sequence[ModelJob], inputs: Sequence[InputGroup], config: TrainConfig):
        if not jobs:
            raise ValueError("no models to train")
        self.jobs = list(jobs)
        self.config = config
        dev = torch.device(config.device)
        self.device = dev
        self.inputs = [g.to(dev) for g in inputs]
        self.has_val = any(g.x_val is not None for g in self.inputs)
        self.n_train = self.inputs[0].x_train.shape[0]
        if any(g.x_train.shape[0] != self.n_train for g in self.inputs):
            raise ValueError("all input groups of a batch must have the same number of examples")
        self.stack = stack_modules([j.module for j in self.jobs], device=dev)
        for k, job in enumerate(self.jobs):
            for name, m in (job.mask or {}).items():
                region = (k, *(slice(0, s) for s in m.shape))
                self.stack.masks[name][region] &= m.to(dev).bool()
                self.stack.params[name][k] *= self.stack.masks[name][k]
        self.masks = {n: m for n, m in self.stack.masks.items() if not bool(m.all())}
        k = len(self.jobs)
        self.group = torch.tensor([j.inputs for j in self.jobs], device=dev)
        self.y_train = torch.stack([j.y_train.to(dev) for j in self.jobs])
        self.y_test = [j.y_test.to(dev) if j.y_test is not None else None for j in self.jobs]
        self.lr = torch.tensor([config.lr if j.lr is None else j.lr for j in self.jobs], device=dev)
        self.wd = torch.tensor([config.weight_decay if j.weight_decay is None else j.weight_decay
                                for j in self.jobs], device=dev)
        self.settings = OptimizerSettings(config.optimizer, config.momentum, config.nesterov)
        self.opt_state = StackedOptimizer(self.stack.params, self.settings, self.masks).state_dict()
        self.active = torch.ones(k, dtype=torch.bool)
        self.outcomes = [ModelOutcome(j.key) for j in self.jobs]
        self.curves: list[dict] = []
        self.checkpoints: dict[int, dict[str, torch.Tensor]] = {}
        self.epoch = 0
        self.step = 0
        self.seconds = 0.0

    # ----- state for resume -------------------------------------------------------------
    def state(self) -> dict:
        return {"keys": [j.key for j in self.jobs], "params": self.stack.params,
                "buffers": self.stack.buffers, "opt": self.opt_state, "active": self.active,
                "outcomes": [asdict(o) for o in self.outcomes], "curves": self.curves,
                "checkpoints": self.checkpoints, "epoch": self.epoch, "step": self.step,
                "seconds": self.seconds}

    def load_state(self, state: dict) -> None:
        if state["keys"] != [j.key for j in self.jobs]:
            raise ValueError("snapshot belongs to a different set of models")
        self.stack.params = {n: t.to(self.device) for n, t in state["params"].items()}
        self.stack.buffers = {n: t.to(self.device) for n, t in state["buffers"].items()}
        self.opt_state = state["opt"]
        self.active = state["active"]
        self.outcomes = [ModelOutcome(**o) for o in state["outcomes"]]
        self.curves = state["curves"]
        self.checkpoints = state["checkpoints"]
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]

    def save_snapshot(self, path: Path) -> None:
        """Write the resume snapshot atomically; a full disk leaves the previous snapshot intact."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            torch.save(self.state(), tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            from genlab.errors import UserError

            raise UserError(f"cannot write the resume snapshot {path}: {exc}") from None

    # ----- evaluation ------------------------------------------------------------------
    def _eval_models(self, idx: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        groups = self.group[idx]
        names = ("train_loss", "train_acc", "test_loss", "test_acc") + (("val_loss", "val_acc") if self.has_val else ())
        results = {m: torch.full((len(idx),), float("nan"), dtype=torch.float64) for m in names}
        for g in torch.unique(groups).tolist():
            sel = (groups == g).nonzero().flatten()
            sub = {n: p[sel] for n, p in params.items()}
            data = self.inputs[g]
            if cfg.eval_train:
                loss, acc = evaluate_stacked(self.stack, sub, data.x_train, self.y_train[idx[sel]],
                                             cfg.loss, cfg.eval_batch_size, models=idx[sel], packed=cfg.packed)
                results["train_loss"][sel], results["train_acc"][sel] = loss.cpu(), acc.cpu()
            y_test = torch.stack([self.y_test[i] if self.y_test[i] is not None else data.y_test
                                  for i in idx[sel].tolist()])
            loss, acc = evaluate_stacked(self.stack, sub, data.x_test, y_test, cfg.loss, cfg.eval_batch_size,
                                         models=idx[sel], packed=cfg.packed)
            results["test_loss"][sel], results["test_acc"][sel] = loss.cpu(), acc.cpu()
            if data.x_val is not None:
                loss, acc = evaluate_stacked(self.stack, sub, data.x_val, data.y_val, cfg.loss, cfg.eval_batch_size,
                                             models=idx[sel], packed=cfg.packed)
                results["val_loss"][sel], results["val_acc"][sel] = loss.cpu(), acc.cpu()
        return results

    def _record_eval(self, idx: torch.Tensor, params, running_loss: torch.Tensor | None) -> None:
        cfg = self.config
        metrics = self._eval_models(idx, params)
        mult = lr_multiplier(cfg.schedule, self.epoch, cfg.epochs, cfg.milestones, cfg.gamma, cfg.warmup_epochs)
        for pos, k in enumerate(idx.tolist()):
            o = self.outcomes[k]
            if o.diverged:
                continue
            for m, values in metrics.items():
                setattr(o, m, float(values[pos]))
            o.epochs, o.steps = self.epoch, self.step
            self.curves.append({"key": o.key, "epoch": self.epoch, "step": self.step,
                                "batch_loss": float(running_loss[pos]) if running_loss is not None else float("nan"),
                                "lr": float(self.lr[k]) * mult,
                                **{m: float(v[pos]) for m, v in metrics.items()}})
            if self.epoch == 0:
                continue
            reached = ((cfg.stop_train_acc is not None and o.train_acc >= cfg.stop_train_acc - 1e-9) or
                       (cfg.stop_train_loss is not None and o.train_loss <= cfg.stop_train_loss))
            if reached and not o.fit:
                o.fit, o.steps_to_fit, o.epochs_to_fit = True, self.step, self.epoch
                self.active[k] = False
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.active[k] = False

    # ----- training --------------------------------------------------------------------
    def _batch_inputs(self, groups: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if len(self.inputs) == 1:
            return self.inputs[0].x_train[idx]
        return torch.stack([self.inputs[g].x_train[rows] for g, rows in zip(groups.tolist(), idx)])

    def _input_groups(self, idx: torch.Tensor) -> tuple[list[int], list[int]]:
        """Which models see the same training batches: ``(group of each position, first position of
        each group)``. Models share a batch when they share data order (seed) and inputs and have no
        augmentation (an augmented model's batch is its own)."""
        keys, group_of, first = {}, [], []
        for pos, i in enumerate(idx.tolist()):
            job = self.jobs[i]
            key = ("augment", pos) if job.augment is not None else (job.seed, job.inputs)
            if key not in keys:
                keys[key] = len(first)
                first.append(pos)
            group_of.append(keys[key])
        return group_of, first

    def _train_epoch(self, idx: torch.Tensor, params, opt: StackedOptimizer, plan: PackedMLP | None):
        """One epoch of the models ``idx``; returns their mean batch losses and the (possibly
        re-laid-out) ``(params, opt, plan)`` to scatter back."""
        cfg = self.config
        k = len(idx)
        seeds = [self.jobs[i].seed for i in idx.tolist()]
        perms = torch.stack([torch.randperm(self.n_train, generator=torch.Generator().manual_seed(
            epoch_seed(s, self.epoch))) for s in seeds]).to(self.device)
        torch.manual_seed(epoch_seed(sum(seeds) + 7919 * k, self.epoch))  # dropout draws
        augmenters = [(pos, self.jobs[i].augment,
                       torch.Generator().manual_seed(augment_seed(self.jobs[i].seed, self.epoch)))
                      for pos, i in enumerate(idx.tolist()) if self.jobs[i].augment is not None]
        batches = _EpochBatches(self, idx, augmenters)
        y_train = self.y_train[idx]
        lr, wd = self.lr[idx], self.wd[idx]
        working = torch.ones(k, dtype=torch.bool, device=self.device)
        all_working = True
        same_settings = bool((lr == lr[0]).all()) and bool((wd == wd[0]).all())
        loss_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        steps_per_epoch = math.ceil(self.n_train / cfg.batch_size)
        for b in range(steps_per_epoch):
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            batch = perms[:, b * cfg.batch_size:(b + 1) * cfg.batch_size]
            y = y_train.gather(1, batch)
            for p in params.values():
                p.grad = None
            done = False
            if plan is not None:
                done = self._packed_step(plan, params, batches.grouped(batch), y, loss_sum)
                if not done:
                    # A model blew up. In the packed layout its non-finite values can leak into the
                    # other models' outputs through the zero blocks of a block-diagonal layer: finish
                    # this epoch in the stacked layout, where every model is computed on its own.
                    self._scatter(idx, params, opt, plan)
                    params, opt, plan = self._gather(idx, packed=False)
            if not done:
                out = stacked_forward(self.stack, params, batches.stacked(batch), shared_input=batches.shared_order,
                                      models=idx)
                losses = _losses(out, y, cfg.loss)
                finite = torch.isfinite(losses)
                torch.where(working & finite, losses, torch.zeros_like(losses)).sum().backward()
                bad = working & ~finite
                if bool(bad.any()):
                    for pos in bad.nonzero().flatten().tolist():
                        o = self.outcomes[int(idx[pos])]
                        o.diverged, o.diverged_step = True, self.step
                        self.active[int(idx[pos])] = False
                    working &= ~bad
                    all_working = False
                loss_sum += torch.where(finite, losses.detach(), torch.zeros_like(losses))
            mult = lr_multiplier(cfg.schedule, self.epoch + b / steps_per_epoch, cfg.epochs,
                                 cfg.milestones, cfg.gamma, cfg.warmup_epochs)
            opt.step(lr * mult, wd, working, uniform=same_settings and all_working)
            self.step += 1
        return (loss_sum / steps_per_epoch).cpu(), (params, opt, plan)

    def _packed_step(self, plan: PackedMLP, params, xs: list[torch.Tensor], y: torch.Tensor,
                     loss_sum: torch.Tensor) -> bool:
        """Forward and backward of one batch in the packed layout (hand-written backward for ReLU
        MLPs, autograd otherwise). False, with no gradient set, when a loss is not finite."""
        loss = self.config.loss
        if plan.manual_backward:
            tape: list = []
            with torch.no_grad():
                out = plan.forward(params, xs, tape)
                losses, d_out = loss_and_gradient(out, y, loss)
            if not bool(torch.isfinite(losses).all()):
                return False
            plan.backward(params, tape, d_out)
        else:
            losses = _losses(plan.forward(params, xs), y, loss)
            if not bool(torch.isfinite(losses).all()):
                return False
            losses.sum().backward()
        loss_sum += losses.detach()
        return True

    def _gather(self, idx: torch.Tensor, packed: bool = True):
        """The active models' parameters and optimizer, stacked, or packed when the models are plain MLPs."""
        plan = packed_plan(self.stack, idx, self._input_groups(idx)[0]) if packed and self.config.packed else None
        stacked = {n: p[idx] for n, p in self.stack.params.items()}
        state = {n: {s: t[idx] for s, t in st.items()} for n, st in self.opt_state["state"].items()}
        if plan is None:  # indexing with idx has already copied
            params = {n: p.detach().requires_grad_(True) for n, p in stacked.items()}
            masks = {n: m[idx] for n, m in self.masks.items()}
            opt = StackedOptimizer(params, self.settings, masks)
            opt.state = state
        else:
            params = {n: p.requires_grad_(True) for n, p in plan.pack(stacked).items()}
            masks = plan.pack({n: m[idx] for n, m in self.stack.masks.items()})
            masks = {n: m for n, m in masks.items() if not bool(m.all())}
            opt = StackedOptimizer(params, self.settings, masks, owners=plan.owners, num_models=len(idx))
            opt.state = {n: {s: plan.pack_one(n, t) for s, t in st.items()} for n, st in state.items()}
        opt.steps = self.opt_state["steps"][idx.cpu()].clone()
        return params, opt, plan

    def _scatter(self, idx: torch.Tensor, params, opt: StackedOptimizer, plan: PackedMLP | None) -> None:
        unpack = (lambda n, t: t.detach()) if plan is None else \
            (lambda n, t: plan.unpack(n, t, self.stack.params[n][idx]))
        with torch.no_grad():
            for n, p in params.items():
                self.stack.params[n][idx] = unpack(n, p)
        self.opt_state["steps"][idx.cpu()] = opt.steps
        for n, st in opt.state.items():
            full = self.opt_state["state"][n]
            for s, t in st.items():
                if s not in full:
                    full[s] = torch.zeros_like(self.stack.params[n])
                full[s][idx] = unpack(n, t)

    def _save_checkpoint(self) -> None:
        if self.epoch in self.config.checkpoint_epochs:
            self.checkpoints[self.epoch] = {n: p.detach().cpu().clone() for n, p in self.stack.params.items()}

    def run(self, on_epoch: Callable[["BatchTrainer"], None] | None = None,
            snapshot: Path | None = None) -> TrainOutcome:
        """Train until every model has stopped or the epoch budget is spent."""
        cfg = self.config
        if snapshot is not None and snapshot.exists():
            self.load_state(torch.load(snapshot, weights_only=False))
        with torch.random.fork_rng(devices=[]):
            if self.epoch == 0 and not self.curves:
                idx = torch.arange(len(self.jobs), device=self.device)
                if cfg.eval_initial:
                    self._record_eval(idx, self.stack.params, None)
                self._save_checkpoint()
                if on_epoch:
                    on_epoch(self)
            # The models in training, (idx, params, opt, plan), run ahead of self.stack between syncs:
            # it is written back before anything reads it (evaluation, checkpoint, snapshot, the end).
            live, synced = None, True
            while self.epoch < cfg.epochs and bool(self.active.any()):
                started = time.perf_counter()
                idx = self.active.nonzero().flatten().to(self.device)
                if live is None or not torch.equal(live[0], idx):
                    if not synced:
                        self._scatter(*live)
                    live = (idx, *self._gather(idx))
                self.epoch += 1
                running, parts = self._train_epoch(*live)
                live, synced = (idx, *parts), False
                evaluate = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs or \
                    (cfg.max_steps is not None and self.step >= cfg.max_steps)
                due_snapshot = snapshot is not None and self.epoch % cfg.snapshot_every == 0
                if evaluate or due_snapshot or self.epoch in cfg.checkpoint_epochs:
                    self._scatter(*live)
                    synced = True
                if evaluate:
                    healthy = [not self.outcomes[int(i)].diverged for i in idx.tolist()]
                    evaluated = idx[healthy]
                    if len(evaluated):
                        self._record_eval(evaluated, {n: p[evaluated] for n, p in self.stack.params.items()},
                                          running[healthy])
                self._save_checkpoint()
                self.seconds += time.perf_counter() - started
                if on_epoch:
                    on_epoch(self)
                if due_snapshot:
                    self.save_snapshot(snapshot)
            if not synced:
                self._scatter(*live)
        for o in self.outcomes:
            if o.diverged:
                o.train_loss = o.train_acc = o.test_loss = o.test_acc = o.val_loss = o.val_acc = float("nan")
        return TrainOutcome(self.stack, self.outcomes, self.curves, self.checkpoints, self.seconds)


def train_models(jobs: Sequence[ModelJob], inputs: Sequence[InputGroup], config: TrainConfig,
                 on_epoch=None, snapshot: Path | None = None) -> TrainOutcome:
    """Train ``jobs`` together; see :class:`BatchTrainer`."""
    return BatchTrainer(jobs, inputs, config).run(on_epoch=on_epoch, snapshot=snapshot)
