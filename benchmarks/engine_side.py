#!/usr/bin/env python3
"""genlab's side of each benchmark workload: the same models (built from the same seeds, so the
same initial weights), data, loss, optimizer, batch size and epochs as :mod:`plain_loops`, trained
together by ``genlab.engine.train_models``, which chooses its execution strategy itself.

    python benchmarks/engine_side.py lenet-seeds --epochs 2 [--precision bf16] [--strategy lockstep]

Prints one JSON object like the plain loop's, plus the strategies the engine chose (and its
calibration timings, when it calibrated in this process).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_loops import WORKLOADS, workload, workload_flops  # noqa: E402


def model_jobs(w, y_train: torch.Tensor, copies: int = 1) -> list:
    """The workload's models as engine jobs: copy c of model i built from seed ``i + 1000 c`` (copy 0
    is :func:`plain_loops.build`'s model), with its own data order unless the workload shares one."""
    from genlab.engine import ModelJob

    jobs = []
    for c in range(copies):
        for i, (model_name, make) in enumerate(w.models):
            seed = i + 1000 * c
            torch.manual_seed(seed)
            jobs.append(ModelJob(model_name if copies == 1 else f"{model_name} copy={c}", make(),
                                 seed=c if w.shared_order else seed, y_train=y_train))
    return jobs


def train_config(w, epochs: int, precision: str = "fp32", strategy: str = "auto"):
    """The workload's training settings, evaluated once at the end."""
    from genlab.engine import TrainConfig

    return TrainConfig(loss=w.loss, optimizer=w.optimizer, lr=w.lr, momentum=w.momentum, batch_size=w.batch,
                       epochs=epochs, eval_every=epochs, eval_initial=False, precision=precision, strategy=strategy)


def run(name: str, epochs: int | None = None, precision: str = "fp32", strategy: str = "auto") -> dict:
    from genlab.engine import InputGroup, train_models

    w = workload(name)
    epochs = w.epochs if epochs is None else epochs
    xtr, ytr, xte, yte = w.data()
    start = time.perf_counter()
    jobs = model_jobs(w, ytr)
    config = train_config(w, epochs, precision, strategy)
    out = train_models(jobs, [InputGroup(xtr, xte, yte)], config)
    wall = time.perf_counter() - start
    flops = workload_flops(w, len(ytr), epochs, xtr)
    return {"wall_s": wall, "model_flops": flops, "gflops": flops / wall / 1e9, "precision": precision,
            "models": [{"model": o.key, "train_acc": o.train_acc, "test_acc": o.test_acc, "steps": o.steps}
                       for o in out.outcomes],
            "strategies": out.strategies, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--strategy", default="auto")
    a = p.parse_args()
    print(json.dumps(run(a.workload, a.epochs, a.precision, a.strategy)))


if __name__ == "__main__":
    main()
