"""``genlab reproduce``: every registered study in turn into DIR/<study>, then DIR/report.html."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from genlab.errors import UserError
from genlab.progress import make_progress
from genlab.report import build_report
from genlab.run.precision import at_precision, slow_precision_notes
from genlab.run.runner import run_study
from genlab.run.store import RunStore
from genlab.run.study_pool import PoolPlan, pool_plan, run_studies_in_pool
from genlab.spec import resolve_spec
from genlab.studies import STUDIES
from genlab.threads import intra_op_threads

# rough quick-preset minutes on a 2-core CPU, for the time-left estimate before a study has run
QUICK_SECONDS_GUESS = 60.0


def plan_spec(study, preset: str, dataset: str | None = None, device: str | None = None,
              data_root: Path | str | None = None, precision: str | None = None):
    """The spec ``study`` runs with under ``genlab reproduce``: its preset, then the device, the data
    folder (every ``*data_root`` setting), the dataset and the training precision asked for every
    study (a study that trains no network keeps its precision); an error names the study."""
    try:
        spec = resolve_spec(study.Spec, preset, None, {"device": device})
        if data_root is not None:
            roots = {name: str(data_root) for name in spec.flat_fields() if name.endswith("data_root")}
            spec = spec.replace(**roots) if roots else spec
        spec = spec.on_dataset(dataset) if dataset is not None else spec
        return at_precision(spec, precision) if precision is not None else spec
    except UserError as exc:
        raise UserError(f"{study.name}: {exc}") from None


def spec_datasets(spec) -> set[str]:
    """Every dataset a spec names (its ``dataset`` settings and lists of ``datasets``)."""
    found: set[str] = set()
    for name, value in spec.flat().items():
        if name.endswith("dataset") and isinstance(value, str):
            found.add(value)
        elif name.endswith("datasets") and isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def check_cifar_files(data_root: Path | str | None) -> None:
    """One line (exit 2) unless ``data_root`` holds CIFAR-10's python batches or their archive."""
    from genlab.data.sources.cifar10 import CIFAR10_ARCHIVE, CIFAR10_FOLDER, _cifar10_batches_present

    if data_root is None:
        raise UserError("--preset cifar needs --data-root DIR, a folder holding cifar-10-batches-py/ or "
                        "cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar.html)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise UserError(f"--data-root {root}: no such folder (it should hold {CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE})")
    if not _cifar10_batches_present(root) and not (root / CIFAR10_ARCHIVE).is_file():
        raise UserError(f"--data-root {root} holds neither {CIFAR10_FOLDER}/ (data_batch_1..5, test_batch) nor "
                        f"{CIFAR10_ARCHIVE}; put CIFAR-10's python version there "
                        "(https://www.cs.toronto.edu/~kriz/cifar.html)")


def cifar_estimates(plan, device: str, measure: bool = True) -> tuple[list[float | None], str]:
    """Seconds per study of a cifar plan (None where a study's work is not training) and a line saying
    what the estimate rests on: FLOPs counted on the meta device over a throughput measured by a few
    steps of VGG-11 on a CUDA device, or the assumed rate of :mod:`genlab.estimate`."""
    from genlab.estimate import CPU_FLOPS, gpu_flops, measured_flops_per_second, study_work

    kind = torch.device(device).type
    if kind == "cuda" and measure:
        rate = measured_flops_per_second("vgg11", "cifar10", device)
        basis = f"{rate / 1e12:.1f} TFLOP/s measured on {device} (3 SGD steps of VGG-11, batch 128)"
    elif kind == "cuda":
        rate = gpu_flops()
        basis = f"an assumed {rate / 1e12:.0f} TFLOP/s GPU (GENLAB_GPU_TFLOPS)"
    else:
        rate = CPU_FLOPS
        basis = f"an assumed {rate / 1e9:.0f} GFLOP/s on {device} (a CPU: use --device cuda)"
    seconds = []
    for study, spec in plan:
        work = study_work(study.name, spec)
        seconds.append(None if work is None else work.seconds(rate))
    return seconds, (f"training FLOPs of every model's full epoch budget (counted on the meta device) at {basis}, "
                     "plus 1 ms per model step; early stopping makes it shorter")


def reproduce(out: Path | str, preset: str = "quick", only: list[str] | None = None, dataset: str | None = None,
              device: str | None = None, quiet: bool = False, data_root: Path | str | None = None,
              precision: str | None = None, jobs: int | None = None) -> Path:
    """Run the chosen studies (all by default) with ``preset`` and build the report.

    ``preset="cifar"`` (the papers' CIFAR-10 experiments) first checks that ``data_root`` holds
    CIFAR-10, then prints each study's estimated time (:func:`cifar_estimates`); re-running the same
    command continues where it stopped (complete studies are skipped, the others resume).
    ``precision`` sets the training precision of every study that trains networks. ``jobs`` studies
    run at once, each in its own process (:mod:`genlab.run.study_pool`; default: one per core on a
    CPU, at most four), longest first."""
    out = Path(out)
    names = list(STUDIES) if not only else only
    for name in names:
        if name not in STUDIES:
            raise UserError(f"unknown study {name!r} in --only; choose from: {', '.join(STUDIES)}")
    plan, without = [], []
    for name in names:
        study = STUDIES[name]
        if preset not in study.Spec.presets:
            without.append(name)
            continue
        plan.append((study, plan_spec(study, preset, dataset, device, data_root, precision)))
    if not plan:
        raise UserError(f"no chosen study has a {preset!r} preset ({', '.join(without)})")
    console = Console(stderr=True, quiet=quiet)
    if without:
        console.print(f"genlab reproduce --preset {preset}: {', '.join(without)} "
                      f"{'has' if len(without) == 1 else 'have'} no {preset} preset yet and "
                      f"{'is' if len(without) == 1 else 'are'} skipped")
    if precision is not None:
        for note in slow_precision_notes([spec for _, spec in plan]):
            Console(stderr=True).print(note)
    if any("cifar10" in spec_datasets(spec) for _, spec in plan):
        check_cifar_files(data_root)
    if preset == "cifar":
        gpu, basis = cifar_estimates(plan, plan[0][1].device if plan else "cpu")
        estimates = [g if g is not None else (s.estimate_seconds(spec) or QUICK_SECONDS_GUESS)
                     for g, (s, spec) in zip(gpu, plan)]
        console.print(f"[bold]genlab reproduce --preset cifar[/]: {len(plan)} studies, expected about "
                      f"{sum(estimates) / 3600:.1f} hours ({basis}):")
        for (study, _), seconds in zip(plan, estimates):
            console.print(f"  {study.name}: {seconds / 3600:.1f} h")
        console.print("re-run the same command to continue after an interruption.")
    else:
        estimates = [s.estimate_seconds(spec) or QUICK_SECONDS_GUESS for s, spec in plan]
    total_estimate = sum(estimates)
    if preset == "paper":
        console.print(f"[bold]genlab reproduce --preset paper[/]: {len(plan)} studies, expected about "
                      f"{total_estimate / 3600:.1f} hours on a 2-core CPU (re-run the same command to continue).")
    started = time.perf_counter()
    todo = []
    for (study, spec), estimate in zip(plan, estimates):
        folder = out / study.name
        manifest = RunStore(folder).read_manifest() if (folder / "manifest.json").exists() else None
        if manifest and manifest.get("status") == "complete" and manifest.get("spec") == spec.flat():
            console.print(f"{study.name}: already complete in {folder}, skipped")
            continue
        todo.append((study, spec, folder, estimate))
    pool = pool_plan(jobs, len(plan), plan[0][1].device)
    if pool.jobs > 1 and len(todo) > 1:
        run_in_pool(todo, pool, console, started, quiet)
    else:
        for i, (study, spec, folder, _) in enumerate(todo):
            console.rule(f"[{i + 1}/{len(todo)}] {study.name}  |  {i} done, {len(todo) - i} left  |  elapsed "
                         f"{time.perf_counter() - started:.0f} s, about {sum(e for *_, e in todo[i:]):.0f} s to go")
            with make_progress(study.name, len(study.units(spec)), quiet=quiet) as progress, \
                    intra_op_threads(pool.threads):
                run_study(study, spec, folder, progress=progress)
    report = build_report(out, redraw=False)
    console.print(f"[bold]report:[/] {report}  ({time.perf_counter() - started:.0f} s)")
    return report


def run_in_pool(todo: list, pool: PoolPlan, console: Console, started: float, quiet: bool) -> None:
    """The studies of ``todo`` (study, spec, folder, estimated seconds) in worker processes, the
    longest first so that the last to finish are short; a line as each one finishes."""
    order = sorted(todo, key=lambda item: -item[3])
    left = {study.name: seconds for study, _, _, seconds in order}
    console.rule(f"{len(order)} studies, {pool.describe()}  |  about {sum(left.values()) / pool.jobs:.0f} s to go")

    def done(name: str, seconds: float) -> None:
        left.pop(name)
        finished = len(order) - len(left)
        console.rule(f"[{finished}/{len(order)}] {name} done in {seconds:.0f} s  |  elapsed "
                     f"{time.perf_counter() - started:.0f} s, {len(left)} left")

    run_studies_in_pool([(study, spec, folder) for study, spec, folder, _ in order], pool, done, quiet=quiet)
