"""The packed-procs strategy: the packed buckets of :class:`~.packed.PackedThreadsSession`, with each
worker but the first in a forked process of its own.

Why processes: a packed step of small models is ~120 short PyTorch calls per worker, and each call
releases and retakes Python's GIL, so worker *threads* wait for each other (one label-noise session
on a 2-core AMD EPYC: 6.5-6.8 ms a step in two processes, ~7.5 ms in two threads). On two cores
plain ``packed`` on two intra-op threads is as fast, so ``auto`` times this strategy only from
:data:`~genlab.engine.strategies.PROCESS_WORKERS_FROM` threads.

How: worker 0 is the parent itself. Each other worker's packed parameters, optimizer state and step
counts are moved into one anonymous shared mapping before ``os.fork``, so the child updates them in
place and the parent reads them without copies (to write them back to the trainer, evaluate or
snapshot) whenever the child is idle - every exchange is synchronous. Each step the parent writes the
batch rows and labels a worker needs into the worker's shared input buffers and sends it a short
command over a pipe. Every worker, the parent included, computes with one intra-op thread, so the
numbers are those of ``packed-threads`` with the same split, bit for bit.

Linux and CPU only (``fork``); a child exits when the parent closes the session or dies (its pipe
ends), and ignores Ctrl-C (the parent handles it).
"""
from __future__ import annotations

import mmap
import os
import signal
import sys
import traceback
import warnings
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import numpy as np
import torch

from genlab.engine.strategies.base import StepBatch
from genlab.engine.strategies.packed import PackedPartsSession, PackedSession

ALIGN = 64


def available(device: torch.device) -> bool:
    """Whether worker processes can be forked here: Linux, CPU tensors."""
    return sys.platform.startswith("linux") and device.type == "cpu" and hasattr(os, "fork")


def shared_like(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of ``tensors`` (same shapes, dtypes, ``requires_grad``) in one anonymous shared mapping,
    which a forked child shares with its parent (``MAP_SHARED | MAP_ANONYMOUS``: not limited by the
    size of ``/dev/shm``). The mapping lives as long as any of the copies."""
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    region = mmap.mmap(-1, max(total, ALIGN))
    out = []
    for t, offset in zip(tensors, offsets):
        if t.numel() == 0:
            out.append(torch.empty_like(t))
            continue
        copy = torch.frombuffer(region, dtype=t.dtype, count=t.numel(), offset=offset).view(t.shape)
        copy.copy_(t.detach())
        out.append(copy.requires_grad_(t.requires_grad))
    return out


def share_session(part: PackedSession) -> None:
    """Move ``part``'s parameters, optimizer state and step counts into shared memory, in place of
    its own (the optimizer's state is created first, as zeros, so that none is created later)."""
    part.opt.create_state()
    names = list(part.params)
    slots = [(n, s) for n in names for s in part.opt.state[n]]
    tensors = ([part.params[n] for n in names] + [part.opt.state[n][s] for n, s in slots] + [part.opt.steps])
    copies = shared_like(tensors)
    for n, t in zip(names, copies):
        part.params[n] = t   # the optimizer holds the same dict
    for (n, s), t in zip(slots, copies[len(names):]):
        part.opt.state[n][s] = t
    part.opt.steps = copies[-1]


class Worker:
    """The parent's handle on one worker process and its shared input and output buffers."""

    def __init__(self, part: PackedSession, x_row: torch.Size, x_dtype: torch.dtype, groups: int, batch: int,
                 others: list[Connection]):
        share_session(part)
        k = part.num_models
        self.part = part
        self.needed = torch.tensor(sorted(set(part.group_of)))
        self.x, self.y, self.working, self.lr, self.wd, self.scale = shared_like([
            torch.zeros(groups, batch, *x_row, dtype=x_dtype), torch.zeros(k, batch, dtype=torch.long),
            torch.zeros(k, dtype=torch.bool), torch.zeros(k, dtype=part.trainer.lr.dtype),
            torch.zeros(k, dtype=part.trainer.wd.dtype), torch.zeros(k)])
        self.conn, child = Pipe()
        with warnings.catch_warnings():  # Python >= 3.12 warns of fork in a process with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: serve until the parent closes the pipe, never return
            code = 0
            try:
                self.conn.close()
                for conn in others:
                    conn.close()
                self._serve(child)
            except BaseException:  # noqa: BLE001 - the child must reach os._exit
                code = 1
            finally:
                os._exit(code)
        child.close()
        self.pid = pid

    # ----- in the child ------------------------------------------------------------------------
    def _serve(self, conn: Connection) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        torch.set_num_threads(1)
        part = self.part
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                return
            if command == "close":
                return
            try:
                reply = getattr(self, f"_do_{command}")(part, *args)
            except Exception:  # noqa: BLE001 - reported to the parent, which raises it
                conn.send(("error", traceback.format_exc()))
                continue
            conn.send(("ok", reply))

    def _do_forward_backward(self, part, rows: int, epoch: int, step: int, stacked: bool, scaled: bool):
        x = self.x[:, :rows]
        batch = StepBatch(list(x.unbind(0)), part.group_of, self.y[:, :rows], epoch, step,
                          x if stacked else None, self.scale.clone() if scaled else None)
        losses, correct = part.forward_backward(batch, self.working.clone())
        return losses.numpy(), correct.numpy()

    def _do_unscale(self, part):
        return part.unscale(self.scale.clone()).numpy()

    def _do_step(self, part, uniform: bool):
        part.step(self.lr.clone(), self.wd.clone(), self.working.clone(), uniform)

    def _do_evaluate(self, part, source: int, field: str, y: np.ndarray):
        x = getattr(part.trainer.inputs[source], field)
        loss, acc = part.evaluate(torch.arange(part.num_models), x, torch.from_numpy(y))
        return loss.numpy(), acc.numpy()

    # ----- in the parent -----------------------------------------------------------------------
    def send(self, command: str, *args) -> None:
        try:
            self.conn.send((command, *args))
        except OSError:
            raise self._died() from None

    def receive(self):
        try:
            status, reply = self.conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if status == "error":
            raise RuntimeError(f"a packed-procs worker failed:\n{reply}")
        return reply

    def _died(self) -> RuntimeError:
        return RuntimeError(f"a packed-procs worker (process {self.pid}) has died")

    def put_batch(self, batch: StepBatch, share: torch.Tensor, working: torch.Tensor) -> None:
        rows = batch.y.shape[1]
        if batch.stacked is not None:
            self.x[:, :rows].index_copy_(0, self.needed, batch.stacked.index_select(0, self.needed))
        else:
            for g in self.needed.tolist():
                self.x[g, :rows].copy_(batch.xs[g])
        self.y[:, :rows].copy_(batch.y[share])
        self.working.copy_(working[share])
        if batch.loss_scale is not None:
            self.scale.copy_(batch.loss_scale[share])
        self.send("forward_backward", rows, batch.epoch, batch.step, batch.stacked is not None,
                  batch.loss_scale is not None)

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        self.conn.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class PackedProcsSession(PackedPartsSession):
    """Packed buckets over worker processes (see the module docstring); worker 0 is this process."""

    name = "packed-procs"

    def __init__(self, trainer, idx, group_of, workers: int):
        if not available(trainer.device):
            raise ValueError("the packed-procs strategy needs Linux and a CPU device")
        sources = {int(trainer.jobs[k].inputs) for k in idx.tolist()}
        rows = {(tuple(trainer.inputs[s].x_train.shape[1:]), trainer.inputs[s].x_train.dtype) for s in sources}
        if len(rows) != 1:
            raise ValueError("the packed-procs strategy needs input sets of one shape and dtype")
        (x_row, x_dtype), = rows
        super().__init__(trainer, idx, group_of, workers)
        self.workers: list[Worker] = []
        self.threads_before = torch.get_num_threads()
        try:
            for part in self.parts[1:]:
                self.workers.append(Worker(part, torch.Size(x_row), x_dtype, max(group_of) + 1,
                                           trainer.config.batch_size, [w.conn for w in self.workers]))
        except BaseException:
            self.close()
            raise
        # One intra-op thread here too while the session is open: a second one, woken for any
        # operation between steps, would spin on the core a worker computes on.
        torch.set_num_threads(1)

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        for worker, share in zip(self.workers, self.shares[1:]):
            worker.put_batch(batch, share, working)
        results = [self.parts[0].forward_backward(self.part_batch(batch, 0), working[self.shares[0]])]
        results += [tuple(map(torch.from_numpy, worker.receive())) for worker in self.workers]
        return self.merge_step(results, batch.y.device)

    def unscale(self, scale):
        for worker in self.workers:
            worker.send("unscale")
        finite = torch.ones(self.num_models, dtype=torch.bool, device=scale.device)
        finite[self.shares[0]] = self.parts[0].unscale(scale[self.shares[0]])
        for worker, share in zip(self.workers, self.shares[1:]):
            finite[share] = torch.from_numpy(worker.receive())
        return finite

    def step(self, lr, weight_decay, working, uniform):
        for worker, share in zip(self.workers, self.shares[1:]):
            worker.lr.copy_(lr[share])
            worker.wd.copy_(weight_decay[share])
            worker.working.copy_(working[share])
            worker.send("step", uniform)
        self.parts[0].step(lr[self.shares[0]], weight_decay[self.shares[0]], working[self.shares[0]], uniform)
        for worker in self.workers:
            worker.receive()

    def _source_of(self, x: torch.Tensor) -> tuple[int, str] | None:
        for source, group in enumerate(self.trainer.inputs):
            for field in ("x_train", "x_test", "x_val"):
                if getattr(group, field) is x:
                    return source, field
        return None

    @torch.no_grad()
    def evaluate(self, positions, x, y):
        """Every model evaluated by its worker, from the worker's own parameters (see
        :meth:`PackedSession.evaluate`), when ``x`` is one of the trainer's input sets (the child
        has it already); otherwise, or for a subset of the models, here (the workers are idle and
        their state is in shared memory, which :meth:`sync` reads)."""
        where = self._source_of(x)
        if not self.all_models(positions) or where is None:
            return super().evaluate(positions, x, y)
        for worker, share in zip(self.workers, self.shares[1:]):
            worker.send("evaluate", *where, y[share].cpu().numpy())
        results = [self.parts[0].evaluate(torch.arange(len(self.shares[0])), x, y[self.shares[0]])]
        results += [tuple(map(torch.from_numpy, worker.receive())) for worker in self.workers]
        return self.merge_evaluation(results)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []
        torch.set_num_threads(self.threads_before)
