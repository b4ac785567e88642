"""Run a study into a run folder: units of work, resume, tables, figures, manifest."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from genlab.errors import UserError
from genlab.progress import NullProgress
from genlab.spec import StudySpec
from genlab.run.store import RunStore
from genlab.studies.base import Context, Study, get_study


def make_figures(study: Study, store: RunStore, spec: StudySpec) -> list[Path]:
    """(Re)draw the study's figures from the stored CSV tables only."""
    store.figures_dir.mkdir(parents=True, exist_ok=True)
    return study.plot(store.results(), store.curves(), spec, store.figures_dir)


def _record_end(store: RunStore, status: str, **fields) -> None:
    """Mark the run as ended; when even that cannot be written (a full disk), the error that ended
    the run is the one reported, and the manifest keeps its last state (never "complete")."""
    try:
        store.set_status(status, **fields)
    except UserError:
        pass


def run_study(study: Study | str, spec: StudySpec, out: Path | str, progress=None,
              force_new: bool = False, executor: str = "local", address: str | None = None) -> RunStore:
    """Run every unfinished unit of ``study`` into ``out`` and draw its figures.

    Finished units are skipped, an interrupted unit resumes from its snapshot. The manifest's
    status is ``complete`` only when every unit finished and the figures were drawn.
    """
    study = get_study(study) if isinstance(study, str) else study
    progress = progress or NullProgress()
    store = RunStore(out)
    spec_dict = spec.flat()
    store.open(study.name, spec_dict, force_new=force_new)
    store.write_spec_toml(spec_dict)
    started = time.perf_counter()
    try:
        units = study.units(spec)
        todo = [u for u in units if not store.unit_done(u)]
        for unit in units:
            if unit not in todo:
                progress.end_unit(unit, skipped=True)
        if executor == "ray":
            from genlab.run.executors import run_units_ray

            run_units_ray(study, spec, todo, store, progress, address)
        else:
            for unit in todo:
                unit_started = time.perf_counter()
                ctx = Context(unit_dir=store.unit_dir(unit), progress=progress, device=spec.device)
                if any(not p.name.startswith(".") for p in ctx.unit_dir.iterdir()):
                    progress.log(f"[{study.name}] unit {unit}: resuming from its snapshot")
                result = study.run_unit(spec, unit, ctx)
                store.save_unit(unit, result.rows, result.curves, time.perf_counter() - unit_started)
                store.rebuild_tables(units)
                progress.end_unit(unit)
        store.rebuild_tables(units)
        figures = make_figures(study, store, spec)
        manifest = store.read_manifest() or {}
        store.set_status("complete", finished=datetime.now(timezone.utc).isoformat(),
                         seconds=round(sum(manifest.get("unit_seconds", {}).values()), 3),
                         wall_seconds_last_attempt=round(time.perf_counter() - started, 3),
                         figures=[str(p.relative_to(store.path)) for p in figures], tables=store.table_digests())
    except KeyboardInterrupt:
        _record_end(store, "interrupted")
        raise
    except UserError:
        _record_end(store, "failed")
        raise
    except BaseException as exc:
        _record_end(store, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.release()
    return store
