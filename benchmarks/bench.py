#!/usr/bin/env python3
"""``genlab bench``: genlab's engine against the plain one-model-at-a-time PyTorch loop.

Every training workload of :mod:`plain_loops` runs on both sides - the plain loop
(``plain_loops.py``) and genlab's engine (``engine_side.py``) with the same models, initial weights,
data, optimizer, batch size and epochs - each ``repeats`` times in a fresh process, the two sides
alternating; the median run of each side is reported, with every run's time in the JSON, and the
*paired* speedup: the median over repeats of plain / genlab within one round, whose two runs are
minutes apart at most, so that the machine's slow and fast spells (+-30% on a shared 2-core host)
cancel out of each ratio. The float32 matmul peak is measured once at the start and again just
before each genlab run; each run's fraction of the peak is taken against the peak beside it. The
engine's strategy choices go to a cache of the bench's own (empty at its start), and before timing,
one untimed engine run per row fills it (the calibration a first run on a machine pays once,
reported as ``calibration_s``): the choices are timed under the bench's conditions. Reported per
workload: wall times, the ratio plain / genlab, achieved GFLOP/s (forward FLOPs counted by
``FlopCounterMode`` x 3) and their fraction of the float32 matmul peak measured in the same run,
both sides' test accuracies, and the strategy the engine chose; with ``--precision bf16`` (where
the CPU has a bfloat16 matrix unit) also genlab at bf16 against the plain loop at fp32 and under
the same autocast.

    python benchmarks/bench.py --out bench/bench.json [--quick] [--only lenet-seeds,deep-widths] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from plain_loops import WORKLOADS  # noqa: E402
from points import (  # noqa: E402
    fastfood_workload,
    last_json_line,
    median_run,
    peak_rss_mb,
    rff_workload,
    robustness_eval_workload,
    scaling_workload,
)

PEAK_RSS = """
import json, runpy, sys, io, contextlib
script, *args = sys.argv[1:]
sys.argv = [script, *args]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    runpy.run_path(script, run_name="__main__")
result = json.loads(out.getvalue().strip().splitlines()[-1])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        result["peak_rss_mb"] = int(line.split()[1]) / 1024
print(json.dumps(result))
"""


def side(script: str, args: list[str]) -> dict:
    """One side of a workload in a fresh process: its JSON, with its peak memory."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(HERE / script), *args], capture_output=True, text=True)
    return last_json_line(proc, f"{script} {' '.join(args)}")


def cpu_description() -> dict:
    """The CPU's model name and whether it has a fast bfloat16 path (AVX512-BF16 or AMX)."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def test_accuracy_gap(a: dict, b: dict) -> float:
    return float(np.max(np.abs(np.array([m["test_acc"] for m in a["models"]]) -
                               np.array([m["test_acc"] for m in b["models"]]))))


def paired(numerators: list[float], denominators: list[float]) -> dict:
    """The ratios ``numerators[i] / denominators[i]`` of runs made side by side: their median, least
    and greatest."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios), "ratios": ratios}


def compare(workload: str, epochs: int | None, repeats: int, precision: str, peak: dict) -> dict:
    """Both sides ``repeats`` times, alternating, each in a fresh process, with the float32 peak
    measured just before each genlab run; medians, and the paired ratios (see the module docstring)."""
    epoch_args = [] if epochs is None else ["--epochs", str(epochs)]
    calibration = side("engine_side.py", [workload, *epoch_args, "--precision", precision])
    runs: dict[str, list[dict]] = {"plain": [], "genlab": []}
    peaks: list[float] = []
    if precision != "fp32":
        runs["plain_autocast"] = []
    for _ in range(repeats):
        runs["plain"].append(side("plain_loops.py", [workload, *epoch_args]))
        peaks.append(side("plain_loops.py", ["peak"])["sgemm_gflops"])
        runs["genlab"].append(side("engine_side.py", [workload, *epoch_args, "--precision", precision]))
        if precision != "fp32":
            runs["plain_autocast"].append(side("plain_loops.py", [workload, *epoch_args, "--autocast", precision]))
    out = {name: median_run(results, "wall_s") for name, results in runs.items()}
    plain, ours = out["plain"], out["genlab"]
    out.update({
        "precision": precision,
        "speedup": plain["wall_s"] / ours["wall_s"],
        "paired_speedup": paired([r["wall_s"] for r in runs["plain"]], [r["wall_s"] for r in runs["genlab"]]),
        "fp32_peaks": peaks,
        "plain_fraction_of_fp32_peak": paired([r["gflops"] for r in runs["plain"]], peaks)["median"],
        "genlab_fraction_of_fp32_peak": paired([r["gflops"] for r in runs["genlab"]], peaks)["median"],
        "genlab_fraction_of_start_peak": ours["gflops"] / peak["sgemm_gflops"],
        "max_test_acc_difference": test_accuracy_gap(plain, ours),
        "strategies": [{k: v for k, v in s.items() if k in ("strategy", "models", "buckets", "workers", "reason",
                                                             "seconds_per_step")} for s in ours["strategies"]],
        "calibration_s": calibration["wall_s"] - ours["wall_s"],
    })
    if precision != "fp32":
        auto = out["plain_autocast"]
        out["speedup_vs_plain_autocast"] = auto["wall_s"] / ours["wall_s"]
        out["paired_speedup_vs_plain_autocast"] = paired([r["wall_s"] for r in runs["plain_autocast"]],
                                                         [r["wall_s"] for r in runs["genlab"]])
        out["max_test_acc_difference_vs_plain_autocast"] = test_accuracy_gap(auto, ours)
    return out


def study_row(repeats: int, epochs: int) -> dict:
    """The whole label-noise double-descent study (paper preset, ``epochs`` epochs) as ``genlab run``,
    against the same sweep in the plain loop; whole processes timed (imports, data, training,
    evaluations every 2 epochs, and for genlab the run folder and its figures)."""
    def genlab_run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "genlab.cli", "run", "double-descent", "--modes",
                                   "label_noise",
                                   "--preset", "paper", "--noise-epochs", str(epochs), "--out", tmp, "--quiet"],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"genlab run double-descent failed: {proc.stderr.strip()[-800:]}")
            return wall

    first_run = genlab_run()  # untimed: fills the strategy cache, as compare() does
    runs: dict[str, list[float]] = {"plain": [], "genlab": []}
    for _ in range(repeats):
        start = time.perf_counter()
        last_json_line(subprocess.run([sys.executable, str(HERE / "plain_loops.py"), "study-label-noise",
                                       "--epochs", str(epochs)], capture_output=True, text=True), "plain study")
        runs["plain"].append(time.perf_counter() - start)
        runs["genlab"].append(genlab_run())
    plain, ours = float(np.median(runs["plain"])), float(np.median(runs["genlab"]))
    return {"epochs": epochs, "plain_s": plain, "genlab_s": ours, "speedup": plain / ours,
            "paired_speedup": paired(runs["plain"], runs["genlab"]), "runs": runs,
            "untimed_first_run_s": first_run}


def run_bench(out: Path | None, quick: bool = False, only: list[str] | None = None,
              precisions: tuple[str, ...] = ("fp32",), repeats: int | None = None) -> dict:
    """Every workload (or ``only`` these) at every precision, ``repeats`` rounds each (default 3, 1
    with ``quick``); writes ``out`` (JSON) and ``out.md``. genlab's side chooses its strategies in a
    strategy cache of this bench's own (``$GENLAB_STRATEGY_CACHE``, unless already set): the choices are
    timed in its first round, under its conditions, not taken from whatever the machine's cache holds
    (a choice timed while something else loaded the machine can be the slower one on a quiet one)."""
    if os.environ.get("GENLAB_STRATEGY_CACHE"):
        return _run_bench(out, quick, only, precisions, repeats, os.environ["GENLAB_STRATEGY_CACHE"])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GENLAB_STRATEGY_CACHE"] = str(Path(tmp) / "engine-strategies.json")
        try:
            return _run_bench(out, quick, only, precisions, repeats, "the bench's own, calibrated in its first round")
        finally:
            del os.environ["GENLAB_STRATEGY_CACHE"]


def _run_bench(out, quick, only, precisions, repeats, strategy_cache: str) -> dict:
    import torch

    peak = side("plain_loops.py", ["peak"])
    cpu = cpu_description()
    report: dict = {"machine": {"cpus": os.cpu_count(), "cpu": cpu["model"], "avx512_bf16": cpu["avx512_bf16"],
                                "amx_bf16": cpu["amx_bf16"], "torch": torch.__version__,
                                "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
                    "peak": peak, "workloads": {}, "quick": quick, "strategy_cache": strategy_cache}
    repeats = repeats or (1 if quick else 3)
    report["repeats"] = repeats
    for name in only or WORKLOADS:
        for precision in precisions:
            if precision == "bf16" and not (cpu["avx512_bf16"] or cpu["amx_bf16"]):
                report["workloads"].setdefault(name, {})[precision] = {"skipped": "no bfloat16 matrix unit on this CPU"}
                continue
            epochs = 1 if quick else None
            report["workloads"].setdefault(name, {})[precision] = compare(name, epochs, repeats, precision, peak)
    if only is None:
        report["study_label_noise"] = study_row(repeats, 3 if quick else 30)
        report["robustness_eval"] = robustness_eval_workload(40 if quick else 120, repeats)
        report["rff"] = rff_workload(n=1000 if quick else 4000, count=32)
        report["fastfood"] = fastfood_workload(repeats)
        report["scaling"] = scaling_workload([10_000, 30_000] if quick else [10_000, 30_000, 100_000, 300_000], repeats)
        if not quick:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "genlab.cli", "reproduce", "--preset", "quick", "--out",
                                       tmp, "--quiet"], capture_output=True, text=True)
                report["reproduce_quick"] = {"wall_s": time.perf_counter() - start, "exit_code": proc.returncode}
    report["peak_rss_mb"] = peak_rss_mb()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        command = "genlab bench" + (" --quick" if quick else "") + (f" --only {','.join(only)}" if only else "") + \
            (f" --precision {','.join(precisions)}" if precisions != ("fp32",) else "") + \
            (f" --repeats {repeats}" if repeats != (1 if quick else 3) else "") + f" --out {out}"
        out.with_suffix(".md").write_text(markdown_table(report, command))
    return report


def paired_text(p: dict | None) -> str:
    if not p:
        return ""
    return f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})"


def markdown_table(r: dict, command: str) -> str:
    m, peak = r["machine"], r["peak"]
    lines = [f"Measured with `{command}` on {m['cpus']} cores ({m['cpu']}), torch {m['torch']} "
             f"({m['torch_threads']} threads); matmul peak in the same run: float32 {peak['sgemm_gflops']:.0f} "
             "GFLOP/s, "
             f"bfloat16 {peak['bf16_gemm_gflops']:.0f} GFLOP/s.", "",
             f"Each side of a workload ran {r.get('repeats', 1)} time(s) in a fresh process, alternating; medians. "
             "Paired: the median (and range) over rounds of plain / genlab within one round. The fraction of the "
             "fp32 peak is each run's against the peak measured just before it (median over runs). The engine's "
             f"strategy cache ({r.get('strategy_cache', 'the default one')}) was filled by one untimed run of each "
             "row first (its calibration cost is the last column).",
             "",
             "| workload | precision | plain (s) | genlab (s) | speedup | paired (range) "
             "| GFLOP/s plain / genlab (% of fp32 peak) "
             "| peak memory plain / genlab (MB) | max test-acc difference | strategy | calibration (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_precision in r["workloads"].items():
        for precision, w in by_precision.items():
            if "skipped" in w:
                lines.append(f"| {name} | {precision} | | | | | | | {w['skipped']} | |")
                continue
            plain, ours = w["plain"], w["genlab"]
            chosen = ", ".join(sorted({s["strategy"] for s in w["strategies"]}))
            extra = ""
            if "plain_autocast" in w:
                extra = (f" (plain under autocast: {w['plain_autocast']['wall_s']:.2f} s, "
                         f"{w['speedup_vs_plain_autocast']:.2f}x)")
            lines.append(
                f"| {name} | {precision} | {plain['wall_s']:.2f} | {ours['wall_s']:.2f} | {w['speedup']:.2f}x{extra} | "
                f"{paired_text(w.get('paired_speedup'))} | "
                f"{plain['gflops']:.0f} ({w['plain_fraction_of_fp32_peak']:.0%}) / {ours['gflops']:.0f} "
                f"({w['genlab_fraction_of_fp32_peak']:.0%}) | {plain.get('peak_rss_mb', float('nan')):.0f} / "
                f"{ours.get('peak_rss_mb', float('nan')):.0f} | {w['max_test_acc_difference']:.3f} | {chosen} | "
                f"{w['calibration_s']:.1f} |")
    if "study_label_noise" in r:
        st = r["study_label_noise"]
        lines += ["", "| whole study | plain (s) | genlab (s) | speedup | paired (range) |", "|---|---|---|---|---|",
                  f"| `genlab run double-descent --modes label_noise --preset paper --noise-epochs {st['epochs']}` "
                  f"| {st['plain_s']:.1f} | {st['genlab_s']:.1f} | {st['speedup']:.2f}x | "
                  f"{paired_text(st.get('paired_speedup'))} |"]
    rb = r.get("robustness_eval")
    lines += ["", "| other workload | result |", "|---|---|"]
    if rb:
        lines.append(f"| layer-robustness evaluation, {rb['param_sets']} parameter sets | plain {rb['naive_s']:.2f} s, "
                     f"genlab {rb['genlab_s']:.2f} s ({rb['speedup']:.1f}x), max accuracy difference "
                     f"{rb['max_acc_difference']:.3f} |")
    if "rff" in r:
        lines.append(f"| RFF sweep, n={r['rff']['n']}, {r['rff']['values_of_N']} values of N | "
                     f"{r['rff']['wall_s']:.1f} s "
                     f"(test-MSE peak at N={r['rff']['test_mse_peak_at']}) |")
    if "ratio" in r.get("fastfood", {}):
        lines.append(f"| Fastfood subspace epoch vs direct epoch (D~200k) | {r['fastfood']['ratio']:.2f}x |")
    if "scaling" in r:
        sc = r["scaling"]
        pts = ", ".join(f"n={p['n']}: {p['epoch_s']:.2f} s / {p['peak_rss_mb']:.0f} MB" for p in sc["points"])
        lines.append(f"| randomization epoch on mnist1d vs n | exponent {sc['time_exponent']:.2f}; {pts} |")
    if "reproduce_quick" in r:
        lines.append(f"| `genlab reproduce --preset quick` | {r['reproduce_quick']['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/bench.json"))
    p.add_argument("--quick", action="store_true", help="one run per side, one epoch: checks the bench, not speed")
    p.add_argument("--only", default=None, help="comma-separated workloads (default: all, plus the other rows)")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16")
    p.add_argument("--repeats", type=int, default=None, help="rounds per workload (default 3, 1 with --quick)")
    a = p.parse_args(argv)
    only = a.only.split(",") if a.only else None
    report = run_bench(a.out, a.quick, only, tuple(a.precision.split(",")), a.repeats)
    print(markdown_table(report, "genlab bench"))


if __name__ == "__main__":
    main()
