"""``genlab reproduce``: every registered study in turn into DIR/<study>, then DIR/report.html."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from genlab.errors import UserError
from genlab.progress import make_progress
from genlab.report import build_report
from genlab.run.precision import at_precision, slow_precision_notes
from genlab.run.runner import run_study
from genlab.run.store import RunStore
from genlab.spec import resolve_spec
from genlab.studies import STUDIES

# rough quick-preset minutes on a 2-core CPU, for the time-left estimate before a study has run
QUICK_SECONDS_GUESS = 60.0


def plan_spec(study, preset: str, dataset: str | None = None, device: str | None = None,
              precision: str | None = None):
    """The spec ``study`` runs with under ``genlab reproduce``: its preset, then the device, the
    dataset and the training precision asked for every study (a study that trains no network keeps
    its spec); an error names the study."""
    try:
        spec = resolve_spec(study.Spec, preset, None, {"device": device})
        spec = spec.on_dataset(dataset) if dataset is not None else spec
        return at_precision(spec, precision) if precision is not None else spec
    except UserError as exc:
        raise UserError(f"{study.name}: {exc}") from None


def reproduce(out: Path | str, preset: str = "quick", only: list[str] | None = None, dataset: str | None = None,
              device: str | None = None, quiet: bool = False, precision: str | None = None) -> Path:
    """Run the chosen studies (all by default) with ``preset`` and build the report."""
    out = Path(out)
    names = list(STUDIES) if not only else only
    for name in names:
        if name not in STUDIES:
            raise UserError(f"unknown study {name!r} in --only; choose from: {', '.join(STUDIES)}")
    plan = []
    for name in names:
        study = STUDIES[name]
        plan.append((study, plan_spec(study, preset, dataset, device, precision)))
    console = Console(stderr=True, quiet=quiet)
    if precision is not None:
        for note in slow_precision_notes([spec for _, spec in plan]):
            Console(stderr=True).print(note)
    estimates = [s.estimate_seconds(spec) or QUICK_SECONDS_GUESS for s, spec in plan]
    total_estimate = sum(estimates)
    if preset == "paper":
        console.print(f"[bold]genlab reproduce --preset paper[/]: {len(plan)} studies, expected about "
                      f"{total_estimate / 3600:.1f} hours on a 2-core CPU (re-run the same command to continue).")
    started = time.perf_counter()
    for i, (study, spec) in enumerate(plan):
        elapsed = time.perf_counter() - started
        left = sum(estimates[i:])
        console.rule(f"[{i + 1}/{len(plan)}] {study.name}  |  {i} done, {len(plan) - i} left  |  "
                     f"elapsed {elapsed:.0f} s, about {left:.0f} s to go")
        folder = out / study.name
        manifest = RunStore(folder).read_manifest() if (folder / "manifest.json").exists() else None
        if manifest and manifest.get("status") == "complete" and manifest.get("spec") == spec.flat():
            console.print(f"{study.name}: already complete in {folder}, skipped")
            continue
        with make_progress(study.name, len(study.units(spec)), quiet=quiet) as progress:
            run_study(study, spec, folder, progress=progress)
    report = build_report(out)
    console.print(f"[bold]report:[/] {report}  ({time.perf_counter() - started:.0f} s)")
    return report
