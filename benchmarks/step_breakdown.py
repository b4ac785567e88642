#!/usr/bin/env python3
"""Where a training step of genlab's side of a bench workload spends its time.

Trains the workload's models (as :mod:`engine_side`, optionally ``--copies`` seeds of each, like a
study's seeds) and times, per step: the whole step (from one step's forward to the next), the
session's forward and backward, its optimizer step, and the rest (batches, loss checks,
bookkeeping). One step's matrix products and convolutions (the ATen ``mm``, ``addmm``, ``bmm``,
``baddbmm`` and ``convolution`` calls issued on the training thread, whatever strategy issued them;
none for the strategies that train in worker threads or processes) are recorded and replayed alone
on the same tensors: their time is the step's arithmetic at the speed these shapes reach, and the
rest of the step is what the engine spends around it (elementwise work, copies, issuing operations).

    python benchmarks/step_breakdown.py deep-widths --copies 3 --strategy packed

Prints one JSON object (times in milliseconds, medians over steps or replays). Time it alone on
the machine: anything else running makes the numbers worthless.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_side import model_jobs, train_config  # noqa: E402
from plain_loops import WORKLOADS, workload  # noqa: E402

from genlab.engine.config import STRATEGIES  # noqa: E402

aten = torch.ops.aten
PRODUCTS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.convolution, aten.convolution_backward}
"""The operations recorded and replayed (every overload, e.g. ``mm.out`` too)."""
REPLAYS = 30


class RecordProducts(TorchDispatchMode):
    """Records ``(op, args, kwargs)`` of every product dispatched while active, and their FLOPs
    (PyTorch's own formulas, :data:`torch.utils.flop_counter.flop_registry`)."""

    def __init__(self):
        super().__init__()
        self.calls: list = []
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket in PRODUCTS:
            self.calls.append((func, args, kwargs))
            self.flops += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        return out


@torch.no_grad()
def replay_ms(calls: list) -> float:
    """Median milliseconds of running ``calls`` back to back (after a warm-up)."""
    def once():
        for func, args, kwargs in calls:
            func(*args, **kwargs)

    for _ in range(3):
        once()
    times = []
    for _ in range(REPLAYS):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def breakdown(name: str, epochs: int | None = None, copies: int = 1, strategy: str = "auto",
              record_step: int = 5) -> dict:
    """Per-step times of genlab's side of workload ``name`` (see the module docstring)."""
    from genlab.engine import BatchTrainer, InputGroup

    w = workload(name)
    xtr, ytr, xte, yte = w.data()
    jobs = model_jobs(w, ytr, copies)
    trainer = BatchTrainer(jobs, [InputGroup(xtr, xte, yte)],
                           train_config(w, w.epochs if epochs is None else epochs, strategy=strategy))
    timed = {"forward_backward": [], "optimizer": [], "starts": []}
    recorder = RecordProducts()
    open_session = trainer._open

    def open_timed(*args, **kwargs):
        session = open_session(*args, **kwargs)
        forward_backward, step = session.forward_backward, session.step

        def timed_forward_backward(*a, **k):
            recording = len(timed["forward_backward"]) == record_step
            start = time.perf_counter()
            timed["starts"].append(start)
            if recording:
                with recorder:
                    out = forward_backward(*a, **k)
            else:
                out = forward_backward(*a, **k)
            # the recorded step is slowed by the recording: not timed
            timed["forward_backward"].append(float("nan") if recording else time.perf_counter() - start)
            return out

        def timed_step(*a, **k):
            start = time.perf_counter()
            out = step(*a, **k)
            timed["optimizer"].append(time.perf_counter() - start)
            return out

        session.forward_backward, session.step = timed_forward_backward, timed_step
        return session

    trainer._open = open_timed
    outcome = trainer.run()
    steps = len(timed["optimizer"])
    fb = statistics.median(t for t in timed["forward_backward"] if t == t) * 1e3
    optimizer = statistics.median(timed["optimizer"]) * 1e3
    # a step's period: from one forward to the next (the median leaves out the recorded step and the
    # epochs' ends, which evaluate)
    step_ms = statistics.median(b - a for a, b in zip(timed["starts"], timed["starts"][1:])) * 1e3
    products = replay_ms(recorder.calls) if recorder.calls else None
    return {
        "workload": name, "models": len(jobs), "strategy": [d.get("strategy") for d in outcome.strategies],
        "steps": steps, "threads": torch.get_num_threads(),
        "step_ms": step_ms,
        "forward_backward_ms": fb, "optimizer_ms": optimizer, "rest_ms": step_ms - fb - optimizer,
        "products": len(recorder.calls), "products_ms": products,
        "product_gflop": recorder.flops / 1e9,
        "product_gflops_per_s": recorder.flops / products / 1e6 if products else None,
        "products_fraction_of_step": products / step_ms if products else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--copies", type=int, default=1, help="seeds of each model (the study sweeps 3)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES)
    a = p.parse_args()
    for option, value in (("--copies", a.copies), ("--epochs", a.epochs)):
        if value is not None and value < 1:
            p.error(f"{option} must be at least 1, got {value}")
    print(json.dumps(breakdown(a.workload, a.epochs, a.copies, a.strategy)))


if __name__ == "__main__":
    main()
