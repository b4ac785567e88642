#!/usr/bin/env python3
"""Benchmark measurements that have no plain-loop twin to race: the layer-robustness evaluation
against its plain loop in-process, the RFF sweep's time, one randomization epoch at growing n
(time and memory scaling), and a Fastfood subspace epoch against a direct one.

    python benchmarks/points.py scaling-point 100000
    python benchmarks/points.py fastfood
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def robustness_eval_workload(param_sets: int = 120, repeats: int = 3) -> dict:
    """Layer-robustness evaluation: test accuracy on mnist5k's 1000 test images of ``param_sets``
    variants of MLP 784-256-256-256-10, each with one of its 4 layers reset (as the
    layers x checkpoints x draws table of :func:`genlab.probes.layer_robustness.robustness_table` has).
    Plain loop (``load_state_dict`` + forward, one network at a time) vs
    :func:`genlab.probes.layer_robustness.evaluate_param_sets` (many networks per pass, unchanged layers shared)."""
    from genlab.data import load_dataset
    from genlab.models import build_model
    from genlab.probes.layer_robustness import evaluate_param_sets

    data = load_dataset("mnist5k")
    x, y = data.x_test, data.y_test

    def params(seed: int) -> dict[str, torch.Tensor]:
        net = build_model("mlp", data.input_shape, 10, widths=[256] * 3, seed=seed)
        return {n: p.detach() for n, p in net.named_parameters()}

    template = build_model("mlp", data.input_shape, 10, widths=[256] * 3, seed=0).eval()
    final = params(0)
    layers = sorted({n.rsplit(".", 1)[0] for n in final})
    sets = [{**final, **{n: t for n, t in params(1 + i).items() if n.rsplit(".", 1)[0] == layers[i % len(layers)]}}
            for i in range(param_sets)]

    def plain() -> list[float]:
        accs = []
        with torch.no_grad():
            for ps in sets:
                template.load_state_dict(ps)
                correct = sum(int((template(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                              for i in range(0, len(y), 1000))
                accs.append(correct / len(y))
        return accs

    times: dict[str, list[float]] = {"naive": [], "genlab": []}
    for _ in range(repeats):
        start = time.perf_counter()
        naive_acc = plain()
        times["naive"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _, genlab_acc = evaluate_param_sets(template, {}, sets, x, y, batch_size=1000, reference=final)
        times["genlab"].append(time.perf_counter() - start)
    naive_s, genlab_s = float(np.median(times["naive"])), float(np.median(times["genlab"]))
    return {"param_sets": param_sets, "naive_s": naive_s, "genlab_s": genlab_s, "speedup": naive_s / genlab_s,
            "max_acc_difference": float(np.max(np.abs(np.array(naive_acc) - genlab_acc)))}


def rff_workload(n: int = 4000, count: int = 32) -> dict:
    from genlab.data import load_dataset
    from genlab.probes.random_features import default_sigma, log_grid_dense_near, rff_sweep

    data = load_dataset("mnist5k", n_train=n)
    x = data.x_train.flatten(1).double().numpy()
    xt = data.x_test.flatten(1).double().numpy()
    y = np.eye(10)[data.y_train.numpy()]
    grid = log_grid_dense_near(n, count=count)
    start = time.perf_counter()
    rows = rff_sweep(x, y, xt, data.y_test.numpy(), grid, default_sigma(x), seed=0)
    wall = time.perf_counter() - start
    peak = max(rows, key=lambda r: r["test_mse"])
    return {"wall_s": wall, "values_of_N": len(grid), "n": n, "test_mse_peak_at": peak["features"]}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scaling_point(n: int) -> dict:
    """One randomization-study epoch (9 variants, MLP 40-512-10, Adam) on mnist1d with n examples.

    A warm-up of 400 steps pays the process's one-time costs (kernel selection, the allocator
    growing its pools) - in a fresh process they last beyond the first short epoch. Then, of a
    new run, the first epoch and the last (it carries the evaluation) are not timed; the median
    of the epochs between is (five up to n = 30,000, where an epoch is short, one beyond).
    Peak memory covers everything."""
    from genlab.data import load_dataset
    from genlab.engine import BatchTrainer, InputGroup, ModelJob, TrainConfig
    from genlab.models import build_model

    data = load_dataset("mnist1d", n_train=n, n_test=1000)
    base = peak_rss_mb()
    groups = [InputGroup(data.x_train + 0.0 * i, data.x_test, data.y_test) for i in range(4)]
    def jobs() -> list[ModelJob]:
        return [ModelJob(f"v{k}", build_model("mlp", data.input_shape, 10, widths=[512], seed=k), seed=k,
                         y_train=data.y_train, inputs=k % 4) for k in range(9)]

    BatchTrainer(jobs(), groups, TrainConfig(optimizer="adam", lr=2e-3, batch_size=128, epochs=10 ** 6, max_steps=400,
                                             eval_every=10 ** 6, eval_initial=False, eval_train=False)).run()
    timed = 5 if n <= 30_000 else 1
    config = TrainConfig(optimizer="adam", lr=2e-3, batch_size=128, epochs=timed + 2, eval_every=timed + 2,
                         eval_initial=False, eval_train=False)
    stamps: list[float] = []  # after epoch 0 (start), 1, 2, ...
    BatchTrainer(jobs(), groups, config).run(on_epoch=lambda trainer: stamps.append(time.perf_counter()))
    epochs = [stamps[e + 1] - stamps[e] for e in range(1, timed + 1)]
    dataset_mb = sum(g.x_train.numel() * 4 for g in groups) / 2 ** 20
    return {"n": n, "epoch_s": float(np.median(epochs)), "peak_rss_mb": peak_rss_mb(), "rss_before_training_mb": base,
            "dataset_mb": dataset_mb}


def last_json_line(proc: subprocess.CompletedProcess, what: str) -> dict:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict], key: str) -> dict:
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[len(ordered) // 2], f"{key}_runs": [r[key] for r in runs]}


def scaling_workload(sizes: list[int], repeats: int = 1) -> dict:
    """:func:`scaling_point` for every n, each in a fresh process, ``repeats`` rounds over all n
    (so that a slow spell of the machine does not land on one n); the median run per n."""
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            runs[n].append(last_json_line(
                subprocess.run([sys.executable, __file__, "scaling-point", str(n)],
                               capture_output=True, text=True), f"scaling point n={n}"))
    points = [median_run(runs[n], "epoch_s") for n in sizes]
    ns = np.array([p["n"] for p in points], dtype=float)
    times = np.array([p["epoch_s"] for p in points])
    exponent = float(np.polyfit(np.log(ns), np.log(times), 1)[0])
    extra = [p["peak_rss_mb"] - p["dataset_mb"] for p in points]
    return {"points": points, "time_exponent": exponent,
            "memory_ratio_largest_vs_smallest_excluding_data": extra[-1] / extra[0]}


def fastfood_workload(repeats: int = 1) -> dict:
    """:func:`bench_fastfood_epoch` in ``repeats`` fresh processes; the median run by ratio."""
    runs = [last_json_line(subprocess.run([sys.executable, __file__, "fastfood"],
                                           capture_output=True, text=True), "Fastfood epoch")
            for _ in range(repeats)]
    return median_run(runs, "ratio")


def _median_epoch_seconds(job, inputs, config) -> float:
    """Median wall time of the training epochs, leaving out the first (one-time costs of a fresh
    process) when there are three or more, and the last (it carries the only evaluation)."""
    from genlab.engine import train_models

    stamps: list[float] = []
    train_models([job], [inputs], config, on_epoch=lambda trainer: stamps.append(time.perf_counter()))
    # stamps[0]: after the epoch-0 evaluation; stamps[i]: after epoch i (the last includes its evaluation)
    durations = [b - a for a, b in zip(stamps[:-2], stamps[1:-1])] or [stamps[-1] - stamps[0]]
    return statistics.median(durations[1:] if len(durations) >= 2 else durations)


def bench_fastfood_epoch(d: int = 1000, epochs: int = 8, batch_size: int = 128, seed: int = 0,
                         device: str = "cpu") -> dict[str, float]:
    """Time one training epoch of MLP 784-200-200-10 (D = 199,210) on mnist5k: direct vs Fastfood subspace.

    Both go through the engine with Adam and ``batch_size``; each time is the median over the
    epochs after the first and before the last (which carries the only evaluation). Returns ``direct_epoch_s``,
    ``fastfood_epoch_s``, ``ratio`` (fastfood / direct) and ``extra_memory_bytes`` (what subspace
    training holds beyond the network: the theta_0 copy, the projection's buffers and scratch,
    and theta_d), plus ``D`` and ``d``.
    """
    import copy
    import dataclasses

    from genlab.data import load_dataset
    from genlab.engine import InputGroup, ModelJob, TrainConfig
    from genlab.models import build_model
    from genlab.probes.intrinsic_dim import subspace_model
    from genlab.seeding import derive_seed

    if epochs < 2:
        raise ValueError(f"epochs={epochs} must be at least 2 to time an epoch without evaluation")
    data = load_dataset("mnist5k")
    inputs = InputGroup(data.x_train, data.x_test, data.y_test)
    config = TrainConfig(optimizer="adam", lr=1e-3, batch_size=batch_size, epochs=epochs, eval_every=epochs,
                         eval_train=False, device=device)
    net = build_model("mlp", data.input_shape, data.num_classes, seed=seed, widths=[200, 200]).to(device)
    direct = _median_epoch_seconds(ModelJob("direct", copy.deepcopy(net), seed, data.y_train), inputs, config)
    model = subspace_model(net, d, "fastfood", seed=derive_seed(seed, "projection", "fastfood", d))
    fastfood = _median_epoch_seconds(ModelJob("fastfood", model, seed, data.y_train), inputs,
                                     dataclasses.replace(config, lr=0.1))
    extra = model.projection.extra_memory_bytes() + sum(
        t.numel() * t.element_size() for t in (model.theta_0, model.theta_d))
    return {"direct_epoch_s": direct, "fastfood_epoch_s": fastfood, "ratio": fastfood / direct,
            "extra_memory_bytes": int(extra), "D": model.D, "d": d}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "scaling-point":
        print(json.dumps(scaling_point(int(sys.argv[2]))))
    elif len(sys.argv) == 2 and sys.argv[1] == "fastfood":
        print(json.dumps(bench_fastfood_epoch()))
    else:
        sys.exit(__doc__)
