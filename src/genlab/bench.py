"""``genlab bench``: genlab's engine against the plain one-model-at-a-time PyTorch loop.

Each workload runs twice in the same session on the same machine: through
``../shared/bench/naive_sweep.py`` (a subprocess, the baseline the speed targets are defined
against) and through genlab's batched engine with the same models, data, optimizer, batch size and
epochs. Reported: wall time, the ratio naive / genlab, achieved GFLOP/s (the naive script's
convention: 2 x multiply-adds x 3 for forward + backward) and its fraction of the float32 matmul
peak measured in the same run, peak memory, and both sides' final accuracies.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genlab.errors import UserError


def naive_script() -> Path:
    """Locate ``shared/bench/naive_sweep.py`` (``$GENLAB_NAIVE_SWEEP`` overrides)."""
    if os.environ.get("GENLAB_NAIVE_SWEEP"):
        return Path(os.environ["GENLAB_NAIVE_SWEEP"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "bench" / "naive_sweep.py"
        if candidate.exists():
            return candidate
    raise UserError("cannot find shared/bench/naive_sweep.py beside the repository; set GENLAB_NAIVE_SWEEP")


_NAIVE_WRAPPER = """
import contextlib, io, json, runpy, sys
script, *args = sys.argv[1:]
sys.argv = [script, *args]
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    runpy.run_path(script, run_name="__main__")
result = json.loads(printed.getvalue().strip().splitlines()[-1])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        result["peak_rss_mb"] = int(line.split()[1]) / 1024
print(json.dumps(result))
"""


def _last_json_line(proc: subprocess.CompletedProcess, what: str) -> dict:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_naive(args: list[str]) -> dict:
    """``naive_sweep.py ARGS`` unchanged, in a fresh process; its JSON plus its peak memory."""
    proc = subprocess.run([sys.executable, "-c", _NAIVE_WRAPPER, str(naive_script()), *args],
                          capture_output=True, text=True)
    return _last_json_line(proc, f"naive_sweep.py {' '.join(args)}")


def run_engine(workload: str, epochs: int) -> dict:
    """genlab's side of ``workload`` in a fresh process, like the naive side; with its peak memory."""
    proc = subprocess.run([sys.executable, "-m", "genlab.bench", "engine", workload, str(epochs)],
                          capture_output=True, text=True)
    return _last_json_line(proc, f"genlab engine {workload}")


def matmul_peak() -> float:
    """Best float32 GEMM GFLOP/s over n = 1024, 2048 (the naive script's own ``peak``, in-process)."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 2 * n ** 3 * 10 / (time.perf_counter() - start) / 1e9)
    return best


def mlp_flops(sizes: list[int], samples: int) -> int:
    return 2 * 3 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * samples


def _engine_sweep(model_sizes: list[list[int]], epochs: int, batch: int, loss: str, optimizer: str, lr: float,
                  momentum: float = 0.0) -> dict:
    from genlab.data import load_dataset
    from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
    from genlab.models import build_model

    data = load_dataset("mnist5k")
    jobs = [ModelJob(f"m{i}", build_model("mlp", data.input_shape, 10, widths=sizes[1:-1], seed=i), seed=0,
                     y_train=data.y_train) for i, sizes in enumerate(model_sizes)]
    config = TrainConfig(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum, batch_size=batch, epochs=epochs,
                         eval_every=epochs, eval_initial=False)  # like the naive loop: evaluate once, at the end
    start = time.perf_counter()
    out = train_models(jobs, [InputGroup(data.x_train, data.x_test, data.y_test)], config)
    wall = time.perf_counter() - start
    flops = sum(mlp_flops(s, epochs * len(data.y_train)) for s in model_sizes)
    return {"wall_s": wall, "model_flops": flops, "gflops": flops / wall / 1e9,
            "models": [{"model": o.key, "train_acc": o.train_acc, "test_acc": o.test_acc} for o in out.outcomes]}


WIDTHS = [5, 10, 20, 40, 50, 60, 100, 200]
ENSEMBLE = {"models": 8, "hidden": 256, "depth": 3}


def engine_workload(workload: str, epochs: int) -> dict:
    """The naive script's ``widths`` / ``ensemble`` workload through genlab's engine (same models,
    data, data order, loss, optimizer, batch size and epochs)."""
    if workload == "widths":
        result = _engine_sweep([[784, h, 10] for h in WIDTHS], epochs, 128, "mse", "adam", 1e-3)
    else:
        sizes = [784] + [ENSEMBLE["hidden"]] * ENSEMBLE["depth"] + [10]
        result = _engine_sweep([sizes] * ENSEMBLE["models"], epochs, 128, "ce", "sgd", 0.05, momentum=0.9)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def compare_workload(workload: str, epochs: int, repeats: int) -> dict:
    """Both sides ``repeats`` times, alternating, each in a fresh process; the median run of each side
    is reported (``wall_s_runs`` lists all)."""
    if workload == "widths":
        naive_args = ["widths", "--widths", ",".join(map(str, WIDTHS)), "--epochs", str(epochs)]
    else:
        naive_args = ["ensemble", *(f"--{k}={v}" for k, v in ENSEMBLE.items()), "--epochs", str(epochs)]
    runs: dict[str, list[dict]] = {"naive": [], "genlab": []}
    for _ in range(repeats):
        runs["naive"].append(run_naive(naive_args))
        runs["genlab"].append(run_engine(workload, epochs))
    return {side: _median_run(results, "wall_s") for side, results in runs.items()}


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


def _median_run(runs: list[dict], key: str) -> dict:
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[len(ordered) // 2], f"{key}_runs": [r[key] for r in runs]}


def scaling_workload(sizes: list[int], repeats: int = 1) -> dict:
    """:func:`scaling_point` for every n, each in a fresh process, ``repeats`` rounds over all n
    (so that a slow spell of the machine does not land on one n); the median run per n."""
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            runs[n].append(_last_json_line(
                subprocess.run([sys.executable, "-m", "genlab.bench", "scaling-point", str(n)],
                               capture_output=True, text=True), f"scaling point n={n}"))
    points = [_median_run(runs[n], "epoch_s") for n in sizes]
    ns = np.array([p["n"] for p in points], dtype=float)
    times = np.array([p["epoch_s"] for p in points])
    exponent = float(np.polyfit(np.log(ns), np.log(times), 1)[0])
    extra = [p["peak_rss_mb"] - p["dataset_mb"] for p in points]
    return {"points": points, "time_exponent": exponent,
            "memory_ratio_largest_vs_smallest_excluding_data": extra[-1] / extra[0]}


def fastfood_workload(repeats: int = 1) -> dict:
    """:func:`bench_fastfood_epoch` in ``repeats`` fresh processes; the median run by ratio."""
    runs = [_last_json_line(subprocess.run([sys.executable, "-m", "genlab.bench", "fastfood"],
                                           capture_output=True, text=True), "Fastfood epoch")
            for _ in range(repeats)]
    return _median_run(runs, "ratio")


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
        raise UserError(f"epochs={epochs} must be at least 2 to time an epoch without evaluation")
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


def _acc_gap(result: dict) -> float:
    a = [m["test_acc"] for m in result["naive"]["models"]]
    b = [m["test_acc"] for m in result["genlab"]["models"]]
    return float(np.max(np.abs(np.array(a) - np.array(b))))


def run_bench(quick: bool = False, out: Path | None = None) -> dict:
    """Run every workload and write ``out`` (JSON) and ``out`` with ``.md`` (a table)."""
    torch.manual_seed(0)
    report: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "torch": torch.__version__, "platform": sys.platform}}
    peak = matmul_peak()
    report["sgemm_peak_gflops"] = peak
    epochs = 2 if quick else 5
    repeats = 1 if quick else 3
    report["repeats"] = repeats
    for name in ("widths", "ensemble"):
        w = report[name] = compare_workload(name, epochs, repeats)
        w["speedup"] = w["naive"]["wall_s"] / w["genlab"]["wall_s"]
        w["genlab_fraction_of_peak"] = w["genlab"]["gflops"] / peak
        w["naive_fraction_of_peak"] = w["naive"]["gflops"] / peak
        w["max_test_acc_difference"] = _acc_gap(w)
    report["robustness_eval"] = robustness_eval_workload(40 if quick else 120, repeats)
    report["rff"] = rff_workload(n=1000 if quick else 4000, count=32)
    report["fastfood"] = fastfood_workload(repeats)
    report["scaling"] = scaling_workload([10_000, 30_000] if quick else [10_000, 30_000, 100_000, 300_000], repeats)
    if not quick:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "genlab.cli", "reproduce", "--preset", "quick", "--out", tmp,
                                   "--quiet"], capture_output=True, text=True)
            report["reproduce_quick"] = {"wall_s": time.perf_counter() - start, "exit_code": proc.returncode}
    report["peak_rss_mb"] = peak_rss_mb()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown_table(report, command=f"genlab bench{' --quick' if quick else ''} --out {out}"))
    return report


def markdown_table(r: dict, command: str) -> str:
    peak = r["sgemm_peak_gflops"]
    lines = [f"Measured with `{command}` on {r['machine']['cpus']} CPUs, torch {r['machine']['torch']} "
             f"({r['machine']['torch_threads']} threads); float32 matmul peak {peak:.0f} GFLOP/s.", "",
             f"Each timed workload ran {r.get('repeats', 1)} time(s) in a fresh process (naive and genlab alternating); "
             "the median run is shown.", "",
             "| workload | naive (s) | genlab (s) | speedup | GFLOP/s naive / genlab (% of peak) "
             "| peak memory naive / genlab (MB) | max test-acc difference |",
             "|---|---|---|---|---|---|---|"]
    for name in ("widths", "ensemble"):
        w = r[name]
        mem = f"{w['naive'].get('peak_rss_mb', float('nan')):.0f} / {w['genlab'].get('peak_rss_mb', float('nan')):.0f}"
        lines.append(f"| {name} | {w['naive']['wall_s']:.2f} | {w['genlab']['wall_s']:.2f} | {w['speedup']:.1f}x | "
                     f"{w['naive']['gflops']:.0f} ({w['naive_fraction_of_peak']:.0%}) / "
                     f"{w['genlab']['gflops']:.0f} ({w['genlab_fraction_of_peak']:.0%}) | {mem} | "
                     f"{w['max_test_acc_difference']:.3f} |")
    rb = r.get("robustness_eval")
    if rb:
        lines.append(f"| layer-robustness evaluation, {rb['param_sets']} parameter sets | {rb['naive_s']:.2f} | "
                     f"{rb['genlab_s']:.2f} | {rb['speedup']:.1f}x | | | {rb['max_acc_difference']:.3f} |")
    lines += ["", "| other workload | result |", "|---|---|",
              f"| RFF sweep, n={r['rff']['n']}, {r['rff']['values_of_N']} values of N | {r['rff']['wall_s']:.1f} s "
              f"(test-MSE peak at N={r['rff']['test_mse_peak_at']}) |"]
    ff = r.get("fastfood", {})
    if "ratio" in ff:
        lines.append(f"| Fastfood subspace epoch vs direct epoch (D~200k) | {ff['ratio']:.2f}x |")
    sc = r["scaling"]
    pts = ", ".join(f"n={p['n']}: {p['epoch_s']:.2f} s / {p['peak_rss_mb']:.0f} MB" for p in sc["points"])
    lines.append(f"| randomization epoch on mnist1d vs n | exponent {sc['time_exponent']:.2f}; {pts} |")
    if "reproduce_quick" in r:
        lines.append(f"| `genlab reproduce --preset quick` | {r['reproduce_quick']['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "scaling-point":
        print(json.dumps(scaling_point(int(sys.argv[2]))))
    elif len(sys.argv) == 2 and sys.argv[1] == "fastfood":
        print(json.dumps(bench_fastfood_epoch()))
    elif len(sys.argv) == 4 and sys.argv[1] == "engine":
        print(json.dumps(engine_workload(sys.argv[2], int(sys.argv[3]))))
