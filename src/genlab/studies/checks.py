"""``check_study``: the contract of :class:`~genlab.studies.base.Study`, checked on one study.

In the spirit of scikit-learn's ``check_estimator``: every registered study passes it (the test
``tests/test_conformance.py`` runs it over all of them), and a new study learns from its first
failing assertion what it is missing. It runs the study's ``smoke`` preset in a scratch folder.

What it checks, in order:

1. the class: name, title, question, citation, a ``Spec`` with ``quick``, ``paper`` and ``smoke``
   presets that resolve, and a description for every setting;
2. the units: typed :class:`~genlab.studies.base.Unit` s with unique keys, plain JSON parameters,
   valid ``needs``, the same for the same spec, and computed without loading data or building
   (initializing) a model;
3. a run end to end: complete, with rows, and a run folder holding only the store's files (a unit
   writes nothing of its own: only engine snapshots and ``Context.cached`` values, deleted once
   it is done);
4. purity: a unit rerun alone (the first and the last to run) gives the stored rows again
   (wall-time columns aside);
5. resume: a run interrupted at an engine epoch, after a newly cached sub-result and at the end
   of a unit resumes to the same tables;
6. figures from the stored tables only (rebuilt in a fresh folder from the CSV files);
7. the summary: a verdict, a reading, references as (quantity, paper, ours) and checks as
   (criterion, bool); and checks that depend on the numbers: altering the stored numbers changes
   at least one check's outcome.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pandas as pd

from genlab.progress import NullProgress
from genlab.spec import StudySpec, resolve_spec
from genlab.studies.base import Context, Study, Summary, Unit


class StudyContractError(AssertionError):
    """A study does not keep the contract; the message says what is missing."""


def _require(condition: bool, study: Study, message: str) -> None:
    if not condition:
        raise StudyContractError(f"{getattr(study, 'name', type(study).__name__)}: {message}")


class _Interrupter(NullProgress):
    """Raises KeyboardInterrupt at the first event of a kind not interrupted before: an engine
    epoch, a newly cached sub-result, or the end of a unit. One interruption per run."""

    KINDS = ("epoch", "cache", "unit")

    def __init__(self):
        self.done: list[str] = []
        self.armed = True

    def event(self, kind: str) -> None:
        if self.armed and kind not in self.done:
            self.armed = False
            self.done.append(kind)
            raise KeyboardInterrupt

    def epoch(self, trainer) -> None:
        self.event("epoch")

    def end_unit(self, unit: str, skipped: bool = False) -> None:
        if not skipped:
            self.event("unit")


def _comparable(table: pd.DataFrame, timing: tuple[str, ...]) -> pd.DataFrame:
    return table.drop(columns=[c for c in timing if c in table]).reset_index(drop=True)


def check_class(study: Study) -> StudySpec:
    """Item 1; returns the smoke spec."""
    for attribute in ("name", "title", "question", "citation", "Spec"):
        _require(bool(getattr(study, attribute, None)), study, f"the class needs a {attribute!r}")
    _require(isinstance(study.Spec, type) and issubclass(study.Spec, StudySpec), study,
             "Spec must be a genlab.spec.StudySpec subclass")
    for preset in ("quick", "paper", "smoke"):
        _require(preset in study.Spec.presets, study, f"Spec.presets needs a {preset!r} preset")
        resolve_spec(study.Spec, preset)
    for name, field in study.Spec.flat_fields().items():
        _require(bool(study.Spec.help_texts.get(name) or field.info.description), study,
                 f"setting {name!r} has no description (its --help text)")
    _require(not vars(study), study, "a study instance must hold no state (plots and summaries read stored tables)")
    return resolve_spec(study.Spec, "smoke")


def check_units(study: Study, spec: StudySpec) -> list[Unit]:
    """Item 2."""
    from genlab.data import registry
    from genlab.models import zoo
    from genlab.run.runner import check_units as check_needs

    def refuse(*args, **kwargs):
        raise StudyContractError(f"{study.name}: units() must not load data or build models")

    entries = {name: dataclasses.replace(entry, loader=refuse) for name, entry in registry.DATASETS.items()}
    with mock.patch.dict(registry.DATASETS, entries), mock.patch.object(registry, "_CACHE", {}), \
            mock.patch.object(zoo, "initialize", refuse):
        units = study.units(spec)
    _require(isinstance(units, list) and units and all(isinstance(u, Unit) for u in units), study,
             "units() must return a non-empty list of genlab.studies.base.Unit")
    for unit in units:
        _require(json.loads(json.dumps(unit.params)) == unit.params, study,
                 f"unit {unit.key!r}: params must be plain JSON values (numbers, strings, lists, dicts)")
    check_needs(study, units)
    _require(study.units(spec) == units, study, "units() must give the same units for the same spec")
    _require(study.units(type(spec).from_flat(spec.flat())) == units, study,
             "units() must depend on the spec's settings only (the same after a round trip through its flat dump)")
    return units


def check_run_folder(study: Study, folder: Path, units: list[Unit]) -> None:
    """Item 3: only the store's files."""
    allowed_top = {"manifest.json", "spec.toml", "results.csv", "curves.csv", "figures", "units", ".lock",
                   "engine-choices.json", ".engine-choices.json.lock"}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in allowed_top)
    _require(not extra, study, f"files outside the store's layout in the run folder: {extra}")
    for unit in units:
        left = sorted(str(p.relative_to(folder)) for p in (folder / "units" / unit.key).rglob("*")
                      if p.name != "done.json")
        _require(not left, study, f"unit {unit.key!r} left files behind after it finished: {left} (cache "
                 "sub-results with ctx.cached and give the engine ctx.snapshot() paths)")


def check_unit_purity(study: Study, spec: StudySpec, units: list[Unit], store, scratch: Path) -> None:
    """Item 4, and item 3 for what a unit writes while it runs."""
    from genlab.run.runner import execution_order, stored_inputs

    order = execution_order(units)
    for unit in order[:1] + order[1:][-1:]:  # the first and the last to run: a sample, to stay fast
        folder = scratch / unit.key
        folder.mkdir(parents=True)
        again = study.run_unit(spec, unit, Context(folder, NullProgress(), stored_inputs(store, unit)))
        written = [p for p in folder.rglob("*") if p.is_file()]
        strays = sorted(str(p.relative_to(folder)) for p in written
                        if not (p.name.startswith("snapshot") and p.suffix == ".pt") and "cache" not in p.parts)
        _require(not strays, study, f"unit {unit.key!r} wrote files of its own: {strays} (use ctx.cached and "
                 "ctx.snapshot)")
        stored = store.load_unit(unit.key)
        for name, fresh, kept in (("rows", again.rows, stored["rows"]), ("curves", again.curves, stored["curves"])):
            a = _comparable(pd.DataFrame(json.loads(json.dumps(fresh, default=str))), study.timing_columns)
            b = _comparable(pd.DataFrame(kept), study.timing_columns)
            _require(a.equals(b), study, f"unit {unit.key!r} gave other {name} when run again: units must be pure "
                     "functions of (spec, unit) (declare wall-time columns in timing_columns)")


def check_resume(study: Study, spec: StudySpec, reference, folder: Path) -> None:
    """Item 5: a run interrupted at an engine epoch, after a newly cached sub-result and at the end of
    a unit (each kind the study has, one per attempt) resumes to the tables of an uninterrupted run."""
    from genlab.run import store as store_module
    from genlab.run.runner import run_study

    real = store_module.cached_value
    interrupter = _Interrupter()

    def cached_then_interrupt(unit_dir, name, compute):
        new = not any((unit_dir / "cache" / f"{name}{ext}").exists() for ext in (".json", ".pt"))
        value = real(unit_dir, name, compute)
        if new:
            interrupter.event("cache")
        return value

    with mock.patch.object(store_module, "cached_value", cached_then_interrupt):
        for _ in range(len(_Interrupter.KINDS) + 1):
            interrupter.armed = True
            try:
                resumed = run_study(study, spec, folder, progress=interrupter)
                break
            except KeyboardInterrupt:
                _require(json.loads((folder / "manifest.json").read_text())["status"] == "interrupted", study,
                         "an interrupted run must be marked interrupted")
    _require("unit" in interrupter.done, study, "the resume check never interrupted the run")
    for table in ("results", "curves"):
        a = _comparable(getattr(resumed, table)(), study.timing_columns)
        b = _comparable(getattr(reference, table)(), study.timing_columns)
        _require(a.equals(b), study, f"a resumed run's {table}.csv differs from an uninterrupted run's")


def check_figures(study: Study, spec: StudySpec, store, scratch: Path) -> None:
    """Item 6."""
    from genlab.run.runner import make_figures
    from genlab.run.store import RunStore

    copy = scratch / "tables-only"
    copy.mkdir()
    for name in ("results.csv", "curves.csv", "manifest.json"):
        shutil.copy(store.path / name, copy / name)
    figures = make_figures(study, RunStore(copy), spec)
    _require(bool(figures) and all(Path(p).exists() for p in figures), study,
             "plot() must draw its figures from the stored tables (results.csv, curves.csv) alone")


def _altered(table: pd.DataFrame):
    """The stored numbers changed one column at a time: tripled, reversed, and (fractions) x -> 1 - x."""
    for column in [c for c in table.columns if table[c].dtype.kind in "fi"]:
        values = table[column]
        changes = [values * 3, values.to_numpy()[::-1]]
        if values.dtype.kind == "f" and values.dropna().between(0, 1).all():
            changes.append(1.0 - values)
        for changed in changes:
            altered = table.copy()
            altered[column] = changed
            yield altered


def check_summary(study: Study, spec: StudySpec, results: pd.DataFrame, curves: pd.DataFrame) -> None:
    """Item 7."""
    summary = study.summarize(results, curves, spec)
    _require(isinstance(summary, Summary) and summary.verdict and summary.reading, study,
             "summarize() must return a Summary with a verdict and a reading")
    _require(all(isinstance(r, tuple) and len(r) == 3 and all(isinstance(x, str) for x in r)
                 for r in summary.references), study, "references must be (quantity, paper, ours) string triples")
    _require(bool(summary.checks) and all(isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str)
                                          and type(c[1]) is bool for c in summary.checks), study,
             "checks must be a non-empty list of (criterion, bool)")
    verdicts = [ok for _, ok in summary.checks]
    altered = [(r, curves) for r in _altered(results)] + [(results, c) for c in _altered(curves)]
    for altered_results, altered_curves in altered:
        try:
            other = study.summarize(altered_results, altered_curves, spec)
        except Exception:  # a summary may refuse numbers no run can produce
            continue
        if [ok for _, ok in other.checks] != verdicts:
            return
    raise StudyContractError(f"{study.name}: no check changed its outcome when the stored numbers were altered: "
                             "a check must test a claim on measured numbers, so that it can fail")


def check_study(study: Study, folder: Path | str | None = None) -> None:
    """Run every check above on ``study`` (its smoke preset) in ``folder`` (a temporary one by default)."""
    from genlab.run.runner import run_study

    with tempfile.TemporaryDirectory() as scratch_dir:
        base = Path(folder) if folder is not None else Path(scratch_dir)
        spec = check_class(study)
        units = check_units(study, spec)
        store = run_study(study, spec, base / "run")
        _require(json.loads(store.manifest_path.read_text())["status"] == "complete", study, "the run did not complete")
        results, curves = store.results(), store.curves()
        _require(len(results) > 0, study, "the smoke run stored no rows")
        check_run_folder(study, store.path, units)
        check_unit_purity(study, spec, units, store, base / "again")
        check_resume(study, spec, store, base / "resumed")
        check_figures(study, spec, store, base)
        check_summary(study, spec, results, curves)
        estimate = study.estimate_seconds(spec)
        _require(estimate is None or (math.isfinite(float(estimate)) and estimate >= 0), study,
                 "estimate_seconds() must be None or a non-negative number of seconds")
