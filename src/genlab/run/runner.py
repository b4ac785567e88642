"""Run a study into a run folder: units of work, resume, tables, figures, manifest."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from genlab.engine.choose import pinned_choices
from genlab.errors import UserError
from genlab.progress import NullProgress
from genlab.run.precision import precisions_of
from genlab.run.store import RunStore, recording_unit_decisions, summarize_decisions
from genlab.spec import StudySpec
from genlab.studies.base import Context, Study, Unit, UnitResult, get_study


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


def check_units(study: Study, units: list[Unit]) -> None:
    """Unit keys are unique and every need names an earlier-or-later unit of the list, without cycles."""
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{study.name}: unit keys repeat: {keys}")
    for unit in units:
        missing = [k for k in unit.needs if k not in keys or k == unit.key]
        if missing:
            raise ValueError(f"{study.name}: unit {unit.key!r} needs {missing}, which are not other units")
    execution_order(units)


def execution_order(units: list[Unit]) -> list[Unit]:
    """The units in list order, except that a unit runs after the units it needs."""
    done: set[str] = set()
    order: list[Unit] = []
    waiting = list(units)
    while waiting:
        ready = next((u for u in waiting if set(u.needs) <= done), None)
        if ready is None:
            raise ValueError(f"units {[u.key for u in waiting]} need each other (a cycle)")
        waiting.remove(ready)
        order.append(ready)
        done.add(ready.key)
    return order


def stored_inputs(store: RunStore, unit: Unit) -> dict[str, UnitResult]:
    """The stored results of the units ``unit`` needs."""
    inputs = {}
    for key in unit.needs:
        data = store.load_unit(key)
        inputs[key] = UnitResult(data["rows"], data["curves"])
    return inputs


def run_study(study: Study | str, spec: StudySpec, out: Path | str, progress=None,
              force_new: bool = False, executor: str = "local", address: str | None = None) -> RunStore:
    """Run every unfinished unit of ``study`` into ``out`` and draw its figures.

    Finished units are skipped, an interrupted unit resumes from its snapshot and cache. The
    manifest's status is ``complete`` only when every unit finished and the figures were drawn; a new run
    that a user error (such as missing data) stops before anything is saved leaves no run behind. A
    complete manifest records the training precision and, per unit, what the engine ran
    (:func:`~genlab.run.store.summarize_decisions`).
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
        check_units(study, units)
        keys = [u.key for u in units]
        todo = [u for u in execution_order(units) if not store.unit_done(u.key)]
        for unit in units:
            if store.unit_done(unit.key):
                progress.end_unit(unit.key, skipped=True)
        if executor == "ray":
            from genlab.run.executors import run_units_ray

            run_units_ray(study, spec, todo, store, progress, address)
        else:
            for unit in todo:
                unit_started = time.perf_counter()
                ctx = Context(store.unit_dir(unit.key), progress, stored_inputs(store, unit))
                if any(not p.name.startswith(".") for p in ctx.unit_dir.iterdir()):
                    progress.log(f"[{study.name}] unit {unit.key}: resuming from its snapshot")
                with recording_unit_decisions() as decisions, pinned_choices(store.choices_path):
                    result = study.run_unit(spec, unit, ctx)
                store.save_unit(unit.key, result.rows, result.curves, time.perf_counter() - unit_started,
                                engine=summarize_decisions(decisions))
                store.rebuild_tables(keys)
                progress.end_unit(unit.key)
        store.rebuild_tables(keys)
        figures = make_figures(study, store, spec)
        manifest = store.read_manifest() or {}
        store.set_status("complete", finished=datetime.now(timezone.utc).isoformat(),
                         seconds=round(sum(manifest.get("unit_seconds", {}).values()), 3),
                         wall_seconds_last_attempt=round(time.perf_counter() - started, 3),
                         figures=[str(p.relative_to(store.path)) for p in figures], tables=store.table_digests(),
                         precision=precisions_of(spec), own_precision=study.own_precision,
                         engine=store.engine_records(keys))
    except KeyboardInterrupt:
        _record_end(store, "interrupted")
        raise
    except UserError:
        if not store.discard_if_nothing_saved():  # e.g. missing data: the folder stays free for any spec
            _record_end(store, "failed")
        raise
    except BaseException as exc:
        _record_end(store, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.release()
    return store
