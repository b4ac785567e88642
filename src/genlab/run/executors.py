"""Where units of work run: in this process (default) or as Ray tasks on a local instance or a cluster.

Two executors exist: the local loop of :func:`genlab.run.runner.run_study` (units one after the
other in this process) and :func:`run_units_ray` here. Units are pure functions of (spec, unit),
so either gives the same rows; the driver alone writes the run store, as each unit's result
arrives, so a killed driver resumes like a local run (finished units are on disk; unfinished ones
are resubmitted). A unit that needs others is submitted once their results are stored, with them.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from genlab.engine.choose import pinned_choices
from genlab.errors import UserError
from genlab.progress import NullProgress
from genlab.run.runner import stored_inputs
from genlab.run.store import recording_unit_decisions, summarize_decisions
from genlab.studies.base import Context, Unit, get_study

UNIT_RETRIES = 3  # times Ray re-runs a unit whose worker process died


def _run_unit_task(study_name: str, spec_json: dict, unit: Unit, unit_dir: str, threads: int, inputs: dict,
                   choices_path: str):
    """Body of one Ray task: rebuild the spec, run the unit, return its rows and what the engine ran."""
    import torch

    torch.set_num_threads(threads)  # the same kernels as the driver's in-process run: identical numbers
    study = get_study(study_name)
    spec = study.Spec.model_validate(spec_json)
    folder = Path(unit_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".ray-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError:  # a worker on another machine: keep its resume snapshot locally
        folder = Path(tempfile.mkdtemp(prefix=f"genlab-{unit.key}-"))
    started = time.perf_counter()
    with recording_unit_decisions() as decisions, pinned_choices(choices_path):
        result = study.run_unit(spec, unit, Context(folder, NullProgress(), inputs))
    return unit.key, result.rows, result.curves, time.perf_counter() - started, summarize_decisions(decisions)


def run_units_ray(study, spec, units: list[Unit], store, progress, address: str | None = None) -> None:
    """Run ``units`` as Ray tasks; results are written by this (driver) process as they finish."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'genlab[ray]'") from None
    import torch

    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, torch.get_num_threads()), include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: "
                            f"{exc}") from None
    # a worker that dies mid-unit (killed, out of memory, its node lost) is retried: the retry resumes from the
    # unit's snapshot when the worker could write into the run folder, else from the unit's start
    remote = ray.remote(num_cpus=1, max_retries=UNIT_RETRIES)(_run_unit_task)
    keys = [u.key for u in study.units(spec)]
    spec_json = spec.model_dump(mode="json")
    threads = torch.get_num_threads()
    waiting, pending = list(units), []

    def submit_ready() -> None:
        for unit in [u for u in waiting if all(store.unit_done(k) for k in u.needs)]:
            waiting.remove(unit)
            pending.append(remote.remote(study.name, spec_json, unit, str(store.unit_dir(unit.key)), threads,
                                         stored_inputs(store, unit), str(store.choices_path)))

    submit_ready()
    progress.log(f"[{study.name}] {len(pending)} units submitted to Ray ({address or 'local instance'})")
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            key, rows, curves, seconds, engine = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:  # the unit itself raised: its own error, as in a local run
            if isinstance(exc.cause, UserError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:  # its worker or node died more often than Ray retries
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"a unit of {study.name} failed on Ray after {UNIT_RETRIES} retries ({first}); the "
                            "finished units are stored: re-run the same command to resume") from None
        store.save_unit(key, rows, curves, seconds, engine=engine)
        store.rebuild_tables(keys)
        progress.end_unit(key)
        submit_ready()
