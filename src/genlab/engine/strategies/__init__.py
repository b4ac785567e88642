"""Execution strategies: how a group of models is laid out and run (see :mod:`.base`).

* ``packed``: plain MLPs as a few large matrix products, in width buckets (:mod:`.packed`), or
  ``packed-threads``: the buckets spread over worker threads, or ``packed-procs``: over forked
  worker processes (:mod:`.packed_procs`);
* ``stacked``: ``torch.func.vmap`` over stacked parameters and buffers (:mod:`.stacked`);
* ``lockstep``: each model's own ``nn.Module`` forward/backward, one after another (:mod:`.lockstep`),
  optionally in ``channels_last`` memory format (``lockstep-cl``);
* ``threads``: lockstep models over worker threads with one intra-op thread each (:mod:`.threads`).

:func:`candidates` says which apply to some models; :func:`open_session` opens one. Which one runs
is decided by :mod:`genlab.engine.choose`.
"""
from __future__ import annotations

import torch
from torch import nn

from genlab.engine.config import STRATEGIES
from genlab.engine.strategies.base import Session, StepBatch
from genlab.engine.strategies.lockstep import LockstepSession, has_dropout
from genlab.engine.strategies.packed import PackedSession, PackedThreadsSession, packed_plan
from genlab.engine.strategies.packed_procs import PackedProcsSession
from genlab.engine.strategies.packed_procs import available as processes_available
from genlab.engine.strategies.stacked import StackedSession
from genlab.engine.strategies.threads import ThreadsSession

ORDER = STRATEGIES[1:]
"""Every strategy, in order of preference when they are about as fast."""


PROCESS_WORKERS_FROM = 4
"""Intra-op threads from which ``packed-procs`` is timed by ``auto``. On two cores it brought nothing
measurable (AMD EPYC, label-noise sweep of 48 MLPs: median 8.0 ms a step against packed's 8.5 and
packed-threads' 8.2 over five alternating runs, within the machine's noise; the 8-MLP width sweep:
0.52-0.58 s against packed's 0.45-0.49 s), and a noisy calibration once chose it for the width sweep
(3.7x the plain loop instead of ~4.3x). With more cores, more worker threads contend for the GIL and
small products scale worse over threads: there it is a candidate. ``--strategy packed-procs`` works
anywhere it is available."""


def _has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def candidates(trainer, idx: torch.Tensor, worth_trying: bool = True) -> list[str]:
    """The strategies that can run the models ``idx`` of ``trainer``, in :data:`ORDER`; with
    ``worth_trying``, not ``threads`` where it cannot gain (one model, one thread, a GPU)."""
    stack, cfg = trainer.stack, trainer.config
    if stack.members is not None:
        return ["stacked"]
    modules = [trainer.jobs[k].module for k in idx.tolist()]
    dropout = any(has_dropout(m) for m in modules)
    images = all(g.x_train.dim() == 4 for g in trainer.inputs) and _has_conv2d(modules[0])
    names = []
    gains = trainer.device.type == "cpu" and torch.get_num_threads() > 1 and len(idx) > 1
    if cfg.packed and packed_plan(stack, idx, trainer.batch_groups(idx), cfg.batch_size) is not None:
        names.append("packed")
        if gains or not worth_trying:
            names.append("packed-threads")
            if processes_available(trainer.device) and (
                    not worth_trying or torch.get_num_threads() >= PROCESS_WORKERS_FROM):
                names.append("packed-procs")
    # vmap turns convolutions into grouped convolutions, several times slower on CPUs: not worth timing there
    low_precision_buffers = cfg.precision != "fp32" and bool(stack.buffers)  # see strategies.stacked
    if not dropout and not low_precision_buffers and (
            not worth_trying or trainer.device.type != "cpu" or not _has_conv(modules[0])):
        names.append("stacked")
    names.append("lockstep")
    if images:
        names.append("lockstep-cl")
    if not dropout and (gains or not worth_trying):
        names.append("threads")
        if images:
            names.append("threads-cl")
    return names


def open_session(name: str, trainer, idx: torch.Tensor) -> Session:
    """A session of strategy ``name`` for the models ``idx`` (their state is copied in)."""
    group_of = trainer.batch_groups(idx)
    if name == "packed":
        return PackedSession(trainer, idx, group_of)
    if name == "packed-threads":
        return PackedThreadsSession(trainer, idx, group_of, workers=torch.get_num_threads())
    if name == "packed-procs":
        return PackedProcsSession(trainer, idx, group_of, workers=torch.get_num_threads())
    if name == "stacked":
        if trainer.stack.members is None and any(has_dropout(trainer.jobs[k].module) for k in idx.tolist()):
            raise ValueError("the stacked strategy cannot draw dropout masks per model; use lockstep")
        return StackedSession(trainer, idx, group_of)
    if name in ("lockstep", "lockstep-cl"):
        return LockstepSession(trainer, idx, group_of, channels_last=name.endswith("-cl"))
    if name in ("threads", "threads-cl"):
        return ThreadsSession(trainer, idx, group_of, workers=torch.get_num_threads(),
                              channels_last=name.endswith("-cl"))
    raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(ORDER)}")


__all__ = ["ORDER", "PROCESS_WORKERS_FROM", "Session", "StepBatch", "candidates", "open_session", "packed_plan"]
