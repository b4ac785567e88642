"""The batched trainer: K models trained together.

Every model has its own initialization, data order (a permutation drawn from its seed and the
epoch), labels, learning rate and weight decay; all take one optimizer step at the same time.
Per-model stop rules (train accuracy, train loss, a step budget) and divergence detection freeze
individual models while the rest go on; frozen models leave the computation at the next epoch.

How the active models are computed is an execution *strategy* (:mod:`genlab.engine.strategies`:
packed MLPs, vmap over stacked parameters, each model's own forward in lockstep, lockstep over
threads), chosen per group of models by :mod:`genlab.engine.choose`. The trainer keeps the
canonical state (stacked parameters, buffers and optimizer state) and all bookkeeping; a session
of the chosen strategy runs the steps and writes its state back before anything reads it
(evaluation, checkpoints, snapshots, the end). Each model's update depends on its own loss only
(the total loss is the sum of the models' losses), so training K models together is training each
alone, up to floating-point reassociation.

One epoch, as the loop below runs it::

    for each batch b:  forward/backward of the working models   (session.forward_backward)
                       models with a non-finite loss diverge: frozen, the others go on
                       optimizer step at lr * schedule(epoch - 1 + b / steps)   (session.step)
    evaluate (every eval_every epochs), apply stop rules, checkpoint, snapshot
"""
from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from genlab.engine.choose import choose
from genlab.engine.config import Augment, InputGroup, ModelJob, ModelOutcome, TrainConfig, TrainOutcome  # noqa: F401
from genlab.engine.memory import check_training_fits
from genlab.engine.optim import OptimizerSettings, StackedOptimizer
from genlab.engine.precision import LossScaler
from genlab.engine.schedules import lr_multiplier
from genlab.engine.snapshot import RESUME_RECOVERY, load_snapshot, save_snapshot
from genlab.engine.stack import own_region, stack_modules
from genlab.engine.strategies import Session, StepBatch, open_session
from genlab.engine.strategies.lockstep import has_dropout
from genlab.errors import UserError

_DECISION_LOG: ContextVar[list | None] = ContextVar("genlab_engine_decisions", default=None)


@contextmanager
def recording_decisions():
    """Collect, as a list, what every ``train_models`` call inside the block ran (each call's models
    and its strategy decisions with their reasons and calibration timings), e.g. for a manifest."""
    log: list = []
    token = _DECISION_LOG.set(log)
    try:
        yield log
    finally:
        _DECISION_LOG.reset(token)


GATHER_BYTES = 32 << 20
"""The training inputs of a chunk of steps are gathered at once, up to this many bytes."""


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (model seed, epoch): data order is a pure function of both."""
    digest = hashlib.sha256(f"{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augment_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for a model's augmentation draws in one epoch, independent of its data order."""
    digest = hashlib.sha256(f"augment:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
                self.stack.masks[name][own_region(k, m.shape)] &= m.to(dev).bool()
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
        self.checkpoint_buffers: dict[int, dict[str, torch.Tensor]] = {}  # BatchNorm statistics at each checkpoint
        self.epoch = 0            # epochs completed
        self.step = 0             # optimizer steps taken (by the models still training)
        self.seconds = 0.0
        self.choices: dict[str, str] = {}   # workload signature -> strategy, for the whole run (and its resume)
        self.decisions: list[dict] = []     # what ran when, and why
        self.batch_acc = torch.full((k,), float("nan"), dtype=torch.float64)  # last epoch's training batches
        self.scaler = LossScaler(k) if config.precision == "fp16" else None
        self.session: Session | None = None
        self.synced = True

    # ----- which models see the same batches ----------------------------------------------------
    def batch_groups(self, idx: torch.Tensor) -> list[int]:
        """For each position of ``idx``, the group of models that see the same training batches:
        the same data order (seed) and inputs, and no augmentation (an augmented model's batch is
        its own). Groups are numbered by first appearance."""
        keys: dict = {}
        out = []
        for pos, i in enumerate(idx.tolist()):
            job = self.jobs[i]
            key = ("augment", pos) if job.augment is not None else (job.seed, job.inputs)
            out.append(keys.setdefault(key, len(keys)))
        return out

    def _epoch_order(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Each model's permutation of the training set in (1-based) ``epoch``: ``[k, n]``."""
        seeds = [self.jobs[i].seed for i in idx.tolist()]
        return torch.stack([torch.randperm(self.n_train, generator=torch.Generator().manual_seed(
            epoch_seed(s, epoch))) for s in seeds]).to(self.device)

    def _batches(self, idx: torch.Tensor, epoch: int, count: int | None = None) -> Iterator[StepBatch]:
        """The training batches of the models ``idx`` in (1-based) ``epoch``, one per step, in order
        (``count``: that many, from the start of the epoch's order and round again when it has
        fewer). Each model's rows are its own permutation of the training set; the inputs of the
        models' batch groups are gathered a chunk of steps at a time (at most
        :data:`GATHER_BYTES`), in one ``index_select`` when they come from one input set, so a step
        of many small models does no gathering of its own. An augmented model's batch is its own,
        transformed by its own generator step by step."""
        size, n = self.config.batch_size, self.n_train
        per_epoch = math.ceil(n / size)
        order = self._epoch_order(idx, epoch)
        augmenters = self._augmenters(idx, epoch)
        group_of = self.batch_groups(idx)
        leaders: dict[int, int] = {}
        for pos, g in enumerate(group_of):
            leaders.setdefault(g, pos)
        groups = len(leaders)
        sources = [int(self.jobs[int(idx[leaders[g]])].inputs) for g in range(groups)]
        lead_rows = order.index_select(0, torch.tensor([leaders[g] for g in range(groups)], device=order.device))
        labels = self.y_train[idx].gather(1, order)
        one_source = len(set(sources)) == 1
        stacked_input = one_source and not augmenters and groups > 1
        row_bytes = max(self.inputs[s].x_train[0].numel() * self.inputs[s].x_train.element_size() for s in sources)
        chunk = max(1, min(per_epoch, GATHER_BYTES // max(1, groups * size * row_bytes)))
        gathered, chunk_start = None, None
        for b in range(per_epoch if count is None else count):
            b %= per_epoch
            if chunk_start is None or not chunk_start <= b < chunk_start + chunk:
                chunk_start = b - b % chunk
                lo, hi = chunk_start * size, min(n, (chunk_start + chunk) * size)
                rows = lead_rows[:, lo:hi]
                if one_source:
                    x = self.inputs[sources[0]].x_train
                    gathered = x.index_select(0, rows.flatten()).view(groups, hi - lo, *x.shape[1:])
                else:
                    gathered = [self.inputs[s].x_train.index_select(0, r) for s, r in zip(sources, rows.unbind(0))]
            start = b * size - chunk_start * size
            stop = min(n, (b + 1) * size) - chunk_start * size
            y = labels[:, b * size:(b + 1) * size]
            if stacked_input:
                stacked = gathered[:, start:stop]
                yield StepBatch(list(stacked.unbind(0)), group_of, y, epoch, self.step, stacked)
                continue
            xs = []
            for g in range(groups):
                x = gathered[g][start:stop]
                if leaders[g] in augmenters:
                    augment, generator = augmenters[leaders[g]]
                    moved = augment(x, generator)
                    if moved.shape != x.shape:
                        raise ValueError(f"augment must keep the batch shape {tuple(x.shape)}, "
                                         f"got {tuple(moved.shape)}")
                    x = moved
                xs.append(x)
            yield StepBatch(xs, group_of, y, epoch, self.step)

    def _augmenters(self, idx: torch.Tensor, epoch: int) -> dict[int, tuple[Augment, torch.Generator]]:
        return {pos: (self.jobs[i].augment, torch.Generator().manual_seed(augment_seed(self.jobs[i].seed, epoch)))
                for pos, i in enumerate(idx.tolist()) if self.jobs[i].augment is not None}

    def _calibration_batches(self, idx: torch.Tensor) -> list[StepBatch]:
        """A few real batches (the first of the next epoch's order) for timing strategies."""
        from genlab.engine.choose import TIMED_STEPS, WARMUP_STEPS

        return list(self._batches(idx, self.epoch + 1, count=WARMUP_STEPS + TIMED_STEPS))

    # ----- sessions ----------------------------------------------------------------------------
    def _open(self, idx: torch.Tensor, exact: bool = False) -> Session:
        """Close the current session (after writing it back) and open one for the models ``idx``."""
        self._close()
        if exact:  # the redo of a diverged step: a strategy in which every model is computed on its own
            name = "stacked" if self.stack.members is not None or not any(
                has_dropout(self.jobs[k].module) for k in idx.tolist()) else "lockstep"
            info = {"reason": "a model diverged in a layout that mixes models; the epoch finishes per model"}
        else:
            name, info = choose(self, idx, lambda: self._calibration_batches(idx))
            if "signature" in info:
                self.choices[info["signature"]] = name
        self.session = open_session(name, self, idx)
        self.decisions.append({"epoch": self.epoch, **self.session.describe(), **info})
        return self.session

    def _sync(self) -> None:
        if self.session is not None and not self.synced:
            self.session.sync()
        self.synced = True

    def _close(self) -> None:
        self._sync()
        if self.session is not None:
            self.session.close()
        self.session = None

    # ----- state for resume -------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resumed run needs, as tensors and plain Python values only. Parameters,
        optimizer state and checkpoints hold each model's own entries, not the stack's zero padding
        (:meth:`StackedModels.own_entries`), unless some padding is not zero."""
        self._sync()
        opt = {"steps": self.opt_state["steps"],
               "state": {n: {slot: self._own(n, t) if t.shape == self.stack.params[n].shape else {"as_is": t}
                             for slot, t in st.items()} for n, st in self.opt_state["state"].items()}}
        return {"keys": [j.key for j in self.jobs], "params": self._own_all(self.stack.params),
                "buffers": self.stack.buffers, "opt": opt, "active": self.active,
                "outcomes": [asdict(o) for o in self.outcomes], "curves": self.curves,
                "checkpoints": {epoch: self._own_all(c) for epoch, c in self.checkpoints.items()},
                "checkpoint_buffers": self.checkpoint_buffers,
                "epoch": self.epoch, "step": self.step,
                "seconds": self.seconds, "choices": self.choices, "decisions": self.decisions,
                "batch_acc": self.batch_acc, "loss_scale": self.scaler.state() if self.scaler else None}

    def _own(self, name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """A tensor shaped like the stacked parameter ``name``, for :meth:`state`."""
        own = self.stack.own_entries({name: tensor})
        return {"as_is": tensor} if own is None else {"own": own[name]}

    def _own_all(self, tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        return {name: self._own(name, tensor) for name, tensor in tensors.items()}

    def _padded(self, name: str, saved: dict[str, torch.Tensor]) -> torch.Tensor:
        """A tensor of :meth:`state` back in the stacked layout of parameter ``name``."""
        if "own" in saved:
            return self.stack.from_own_entries({name: saved["own"]})[name]
        return saved["as_is"]

    def _padded_all(self, saved: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {name: self._padded(name, tensor) for name, tensor in saved.items()}

    def load_state(self, state: dict) -> None:
        if state["keys"] != [j.key for j in self.jobs]:
            raise ValueError("snapshot belongs to a different set of models")
        self._close()
        self.stack.params = {n: t.to(self.device) for n, t in self._padded_all(state["params"]).items()}
        self.stack.buffers = {n: t.to(self.device) for n, t in state["buffers"].items()}
        self.opt_state = {"steps": state["opt"]["steps"],
                          "state": {n: {s: self._padded(n, t).to(self.device) for s, t in st.items()}
                                    for n, st in state["opt"]["state"].items()}}
        self.active = state["active"]
        self.outcomes = [ModelOutcome(**o) for o in state["outcomes"]]
        self.curves = state["curves"]
        self.checkpoints = {epoch: self._padded_all(c) for epoch, c in state["checkpoints"].items()}
        self.checkpoint_buffers = state.get("checkpoint_buffers", {})
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.choices = dict(state["choices"])
        self.decisions = list(state["decisions"])
        self.batch_acc = state["batch_acc"]
        if self.scaler is not None and state["loss_scale"] is not None:
            self.scaler.load(state["loss_scale"])

    def save_snapshot(self, path: Path) -> None:
        """Write the resume snapshot atomically; a full disk leaves the previous snapshot intact."""
        save_snapshot(self.state(), path)

    # ----- evaluation -------------------------------------------------------------------------
    def _evaluate(self, session: Session, positions: torch.Tensor, train: bool = True,
                  test: bool = True) -> dict[str, torch.Tensor]:
        """Train (optional), test (optional) and validation loss and accuracy of the session's models
        at ``positions``, per input group (each model on its own labels); NaN for what is skipped."""
        cfg = self.config
        idx = session.idx[positions]
        groups = self.group[idx]
        names = ("train_loss", "train_acc", "test_loss", "test_acc") + (("val_loss", "val_acc") if self.has_val else ())
        results = {m: torch.full((len(idx),), float("nan"), dtype=torch.float64) for m in names}
        for g in torch.unique(groups).tolist():
            sel = (groups == g).nonzero().flatten()
            at = positions[sel]
            data = self.inputs[g]
            sets = []
            if train and cfg.eval_train:
                sets.append(("train", data.x_train, self.y_train[idx[sel]]))
            if test:
                sets.append(("test", data.x_test, torch.stack([self.y_test[i] if self.y_test[i] is not None
                                                               else data.y_test for i in idx[sel].tolist()])))
                if data.x_val is not None:
                    sets.append(("val", data.x_val, data.y_val.expand(len(sel), -1)))
            for name, x, y in sets:
                loss, acc = session.evaluate(at, x, y)
                results[f"{name}_loss"][sel], results[f"{name}_acc"][sel] = loss.cpu().double(), acc.cpu().double()
        return results

    def _reached(self, train_acc: float, train_loss: float) -> bool:
        """Whether an evaluation with these training numbers meets a stop rule (never before a step)."""
        cfg = self.config
        return self.epoch > 0 and ((cfg.stop_train_acc is not None and train_acc >= cfg.stop_train_acc - 1e-9) or
                                   (cfg.stop_train_loss is not None and train_loss <= cfg.stop_train_loss))

    def _record_eval(self, session: Session, positions: torch.Tensor, batch_loss: torch.Tensor | None,
                     lr_mult: float) -> None:
        """Evaluate, record curves and apply the stop rules to the session's models at ``positions``.
        With ``eval_test="final"`` the test (and validation) sets are evaluated only for the models
        whose training ends here; their numbers do not depend on when they are evaluated."""
        cfg = self.config
        every = (cfg.eval_test == "every" or self.epoch == cfg.epochs or
                 (cfg.max_steps is not None and self.step >= cfg.max_steps))
        metrics = self._evaluate(session, positions, test=every)
        if not every:  # the models whose training ends here get their test numbers now
            ending = [pos for pos in range(len(positions))
                      if self._reached(float(metrics["train_acc"][pos]), float(metrics["train_loss"][pos]))]
            if ending:
                late = self._evaluate(session, positions[torch.tensor(ending, device=positions.device)], train=False)
                for m, values in late.items():
                    if not m.startswith("train_"):
                        metrics[m][ending] = values
        for pos, k in enumerate(session.idx[positions].tolist()):
            o = self.outcomes[k]
            for m, values in metrics.items():
                setattr(o, m, float(values[pos]))
            o.epochs, o.steps = self.epoch, self.step
            self.curves.append({"key": o.key, "epoch": self.epoch, "step": self.step,
                                "batch_loss": float(batch_loss[pos]) if batch_loss is not None else float("nan"),
                                "lr": float(self.lr[k]) * lr_mult,
                                **{m: float(v[pos]) for m, v in metrics.items()}})
            if self.epoch == 0:
                continue
            if self._reached(o.train_acc, o.train_loss) and not o.fit:
                o.fit, o.steps_to_fit, o.epochs_to_fit = True, self.step, self.epoch
                self.active[k] = False
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                self.active[k] = False

    def _lr_multiplier(self, epochs_done: float) -> float:
        cfg = self.config
        return lr_multiplier(cfg.schedule, epochs_done, cfg.epochs, cfg.milestones, cfg.gamma, cfg.warmup_epochs,
                             math.ceil(self.n_train / cfg.batch_size))

    # ----- training ---------------------------------------------------------------------------
    def _train_epoch(self, idx: torch.Tensor) -> torch.Tensor:
        """One epoch (number ``self.epoch + 1``) of the models ``idx``; their mean batch losses."""
        cfg = self.config
        epoch = self.epoch + 1
        k = len(idx)
        batches = self._batches(idx, epoch)
        lr, wd = self.lr[idx], self.wd[idx]
        working = torch.ones(k, dtype=torch.bool, device=self.device)
        uniform = bool((lr == lr[0]).all()) and bool((wd == wd[0]).all())
        loss_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        correct = torch.zeros(k, dtype=torch.float64, device=self.device)
        seen = 0
        steps_per_epoch = math.ceil(self.n_train / cfg.batch_size)
        session = self.session
        everyone_works = True    # working.all(), kept on the host: no device sync for it in the common case
        step_lr, step_mult = lr, 1.0
        for b in range(steps_per_epoch):
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            batch = next(batches)
            if self.scaler is not None:
                batch.loss_scale = self.scaler.scale[idx.cpu()].to(self.device)
            losses, right = session.forward_backward(batch, working)
            finite = torch.isfinite(losses)
            if not bool(finite.all()):  # a model diverged (or had already): one check per step when none did
                bad = working & ~finite
                if bool(bad.any()) and not session.exact_per_model:
                    session = self._open(idx, exact=True)
                    losses, right = session.forward_backward(batch, working)
                    finite = torch.isfinite(losses)
                    bad = working & ~finite
                if bool(bad.any()):
                    for pos in bad.nonzero().flatten().tolist():
                        o = self.outcomes[int(idx[pos])]
                        o.diverged, o.diverged_step = True, self.step
                        self.active[int(idx[pos])] = False
                    working &= ~bad
                    uniform = False
                everyone_works = bool(working.all())
                loss_sum += torch.where(finite, losses.detach().double(), torch.zeros((), dtype=torch.float64))
            else:
                loss_sum += losses.detach()
            correct += right
            seen += batch.y.shape[1]
            stepping, all_step = working, everyone_works
            if self.scaler is not None:  # a model whose scaled gradients overflowed skips this update
                finite = session.unscale(batch.loss_scale)
                self.scaler.update(idx[working], finite[working])
                stepping = working & finite
                all_step = bool(stepping.all())
            mult = self._lr_multiplier(self.epoch + b / steps_per_epoch)
            if mult != step_mult:
                step_lr, step_mult = lr * mult, mult
            session.step(step_lr, wd, stepping, uniform and all_step)
            self.synced = False
            self.step += 1
        self.batch_acc[idx.cpu()] = (correct / max(seen, 1)).cpu()
        return (loss_sum / steps_per_epoch).cpu()

    def _save_checkpoint(self) -> None:
        if self.epoch in self.config.checkpoint_epochs:
            self._sync()
            self.checkpoints[self.epoch] = {n: p.detach().cpu().clone() for n, p in self.stack.params.items()}
            if self.stack.buffers:
                self.checkpoint_buffers[self.epoch] = {n: b.detach().cpu().clone()
                                                       for n, b in self.stack.buffers.items()}

    def run(self, on_epoch: Callable[["BatchTrainer"], None] | None = None,
            snapshot: Path | None = None) -> TrainOutcome:
        """Train until every model has stopped or the epoch budget is spent."""
        cfg = self.config
        if snapshot is not None and snapshot.exists():
            state = load_snapshot(snapshot)
            try:
                self.load_state(state)
            except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
                raise UserError(f"the resume snapshot {snapshot} does not fit this run's models ({exc}); "
                                f"{RESUME_RECOVERY}") from None
        try:
            with torch.random.fork_rng(devices=[]):
                self._run(on_epoch, snapshot)
        finally:
            self._close()
        for o in self.outcomes:
            if o.diverged:
                o.train_loss = o.train_acc = o.test_loss = o.test_acc = o.val_loss = o.val_acc = float("nan")
        log = _DECISION_LOG.get()
        if log is not None:
            log.append({"models": len(self.jobs), "precision": cfg.precision, "decisions": self.decisions})
        return TrainOutcome(self.stack, self.outcomes, self.curves, self.checkpoints, self.seconds, self.decisions,
                            self.checkpoint_buffers)

    def _run(self, on_epoch, snapshot: Path | None) -> None:
        cfg = self.config
        if self.epoch == 0 and not self.curves:
            if cfg.eval_initial:
                everyone = torch.arange(len(self.jobs), device=self.device)
                session = self._open(everyone)
                self._record_eval(session, torch.arange(len(everyone)), None, self._lr_multiplier(0))
            self._save_checkpoint()
            if on_epoch:
                on_epoch(self)
        last_snapshot = time.perf_counter()
        while self.epoch < cfg.epochs and bool(self.active.any()):
            started = time.perf_counter()
            idx = self.active.nonzero().flatten().to(self.device)
            if self.session is None or not torch.equal(self.session.idx, idx):
                self._open(idx)
            steps_per_epoch = math.ceil(self.n_train / cfg.batch_size)
            last_mult = self._lr_multiplier(self.epoch + (steps_per_epoch - 1) / steps_per_epoch)
            running = self._train_epoch(idx)
            self.epoch += 1
            evaluate = self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs or \
                (cfg.max_steps is not None and self.step >= cfg.max_steps)
            due_snapshot = (snapshot is not None and self.epoch % cfg.snapshot_every == 0
                            and time.perf_counter() - last_snapshot >= cfg.snapshot_seconds)
            if evaluate:
                healthy = torch.tensor([not self.outcomes[int(i)].diverged for i in idx.tolist()])
                positions = healthy.nonzero().flatten()
                if len(positions):
                    self._record_eval(self.session, positions.to(self.device), running[positions], last_mult)
            self._save_checkpoint()
            self.seconds += time.perf_counter() - started
            if on_epoch:
                on_epoch(self)
            if due_snapshot:
                self.save_snapshot(snapshot)
                last_snapshot = time.perf_counter()


def train_models(jobs: Sequence[ModelJob], inputs: Sequence[InputGroup], config: TrainConfig,
                 on_epoch=None, snapshot: Path | None = None) -> TrainOutcome:
    """Train ``jobs`` together; see :class:`BatchTrainer`."""
    check_training_fits(jobs, inputs, config)
    return BatchTrainer(jobs, inputs, config).run(on_epoch=on_epoch, snapshot=snapshot)
