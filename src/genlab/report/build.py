"""Build ``report.html`` from stored runs only (no training).

For each study folder of a reproduce directory (``DIR/<study>/manifest.json``) the figures are
redrawn from ``results.csv`` / ``curves.csv``, the study's ``summarize`` writes the verdict and a
reading from the stored numbers, and everything is rendered into one HTML file with the figures
embedded (PNG as data URIs; the SVGs stay beside them in each study's ``figures/`` folder).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import platform
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from genlab.errors import UserError
from genlab.run.precision import precisions_of
from genlab.run.runner import make_figures
from genlab.run.store import RunStore, atomic_write_text
from genlab.studies.base import Study, Summary, get_study
from genlab.studies.cifar import with_cifar_references


@dataclass
class StudyRun:
    study: Study
    spec: object
    store: RunStore
    manifest: dict
    summary: Summary
    figures: list[Path]


def load_run(folder: Path, redraw: bool = True) -> StudyRun:
    """Read one finished run folder, redraw its figures (or, with ``redraw=False``, use the ones
    its run drew from the same verified tables, when they are all there) and summarize it."""
    store = RunStore(folder)
    manifest = store.read_manifest()
    if manifest is None:
        raise UserError(f"{folder} has no manifest.json: not a genlab run folder")
    if manifest.get("status") != "complete":
        raise UserError(f"{folder} is not complete (status {manifest.get('status')!r}); re-run its command to finish "
                        "it")
    try:
        study = get_study(str(manifest["study"]))
        spec = study.Spec.from_flat(manifest["spec"])
    except (KeyError, UserError) as exc:
        raise UserError(f"{store.manifest_path} does not describe a run this version of genlab can read "
                        f"({_first_line(exc)}); re-run the study with --force-new") from None
    store.verify_tables(manifest)
    drawn = [store.path / name for name in manifest.get("figures") or []]
    if redraw or not drawn or not all(p.is_file() and p.with_suffix(".svg").is_file() for p in drawn):
        drawn = make_figures(study, store, spec)
    figures = drawn
    summary = with_precision_note(with_cifar_references(study, store.results(), store.curves(), spec), spec)
    return StudyRun(study, spec, store, manifest, summary, figures)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def rerun_command(run: StudyRun) -> str:
    return f"genlab run {run.study.name} --config {run.store.path / 'spec.toml'} --out {run.store.path}"


def _settings(spec) -> list[tuple[str, str]]:
    return [(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in spec.flat().items()]


def precision_line(run: StudyRun) -> str:
    """The training precision of a run, as the report shows it next to its settings."""
    values = sorted(set(precisions_of(run.spec).values()))
    trained = f"networks trained at {', '.join(values)}" if values else "no network trained"
    own = run.manifest.get("own_precision", run.study.own_precision)
    return f"{trained}; {own}" if own else trained


LOW_PRECISION_WHY = {
    "bf16": "bfloat16 keeps 8 significant bits in every product (float32: 24), so the trained weights, and "
            "with them margins, crossings and ties the check compares, move by more than seed-to-seed rounding",
    "fp16": "float16 keeps 11 significant bits in every product and a narrow range (loss-scaled), so the trained "
            "weights, and with them margins, crossings and ties the check compares, move",
}


def precision_note(summary: Summary, spec) -> str:
    """When networks were trained below fp32 and a check failed: which claims do not hold at that
    precision in this run, and why they can move (else empty)."""
    low = sorted({p for p in precisions_of(spec).values() if p != "fp32"})
    failed = [text for text, ok in summary.checks if not ok]
    if not low or not failed:
        return ""
    claims = "; ".join(f"'{text}'" for text in failed)
    why = " ".join(f"{LOW_PRECISION_WHY[p]}." for p in low)
    return (f"At {'/'.join(low)} (not the fp32 reference) these claims do not hold in this run: {claims}. {why} "
            "Re-run with --precision fp32 to tell the precision from the networks.")


def with_precision_note(summary: Summary, spec) -> Summary:
    """``summary`` with :func:`precision_note` added to its reading."""
    note = precision_note(summary, spec)
    return dataclasses.replace(summary, reading=f"{summary.reading} {note}") if note else summary


def engine_line(manifest: dict) -> str:
    """What the engine ran for the whole run (from the manifest's per-unit records): strategies by
    number of engine calls that ran them, how they were chosen, and the calibrations timed."""
    records = [r for r in (manifest.get("engine") or {}).values() if isinstance(r, dict)]
    if not any(r.get("engine_calls") for r in records):
        return "no engine call"
    strategies, reasons = Counter(), Counter()
    for record in records:
        strategies.update(record.get("strategies") or {})
        reasons.update(record.get("chosen_by") or {})
    calls = sum(int(r.get("engine_calls", 0)) for r in records)
    timed = sum(int(r.get("calibrations", 0)) for r in records)
    seconds = sum(float(r.get("calibration_seconds", 0.0)) for r in records)
    shown = ", ".join(f"{name} x{n}" for name, n in strategies.most_common())
    why = ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common())
    return (f"{calls} engine call{'s' if calls != 1 else ''}; strategies: {shown} (chosen: {why}); "
            f"{timed} calibration{'s' if timed != 1 else ''} timed in this run ({seconds:.1f} s)")


def build_report(directory: Path | str, title: str = "genlab: are deep networks overfitted?",
                 redraw: bool = True) -> Path:
    """Write ``directory/report.html`` from every complete study folder inside ``directory``
    (``redraw=False``: keep the figures each run drew, as ``genlab reproduce`` does right after them)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder")
    from genlab.studies import STUDIES

    folders = [directory / name for name in STUDIES if (directory / name / "manifest.json").exists()]
    if not folders:
        raise UserError(f"{directory} holds no study run folders (expected e.g. "
                        f"{directory}/randomization/manifest.json)")
    runs, skipped = [], []
    for folder in folders:
        try:
            runs.append(load_run(folder, redraw=redraw))
        except UserError as exc:
            skipped.append(str(exc))
    if not runs:
        raise UserError("; ".join(skipped))
    env_info = runs[0].manifest.get("environment", {})
    versions = runs[0].manifest.get("versions", {})
    total = sum(float(r.manifest.get("seconds", 0.0)) for r in runs)
    env = Environment(loader=PackageLoader("genlab", "report/templates"), autoescape=select_autoescape(["html"]))
    page = env.get_template("report.html").render(
        title=title,
        runs=[{
            "name": r.study.name, "title": r.study.title, "question": r.study.question, "citation": r.study.citation,
            "summary": r.summary,
            "figures": [{"src": _data_uri(p), "name": p.stem, "svg": str(p.with_suffix(".svg").relative_to(directory))}
                        for p in r.figures],
            "settings": _settings(r.spec), "seconds": float(r.manifest.get("seconds", 0.0)),
            "seeds": r.manifest.get("seeds"), "rerun": rerun_command(r), "preset": getattr(r.spec, "preset", ""),
            "git": r.manifest.get("git_revision"), "precision": precision_line(r), "engine": engine_line(r.manifest),
            "engine_units": [(unit, ", ".join(f"{k} x{n}" for k, n in (rec.get("strategies") or {}).items()) or "-",
                              ", ".join(rec.get("precision") or []) or "-")
                             for unit, rec in (r.manifest.get("engine") or {}).items() if isinstance(rec, dict)],
        } for r in runs],
        skipped=skipped, versions=versions, env=env_info, total_seconds=total,
        built=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), python=platform.python_version(),
    )
    out = directory / "report.html"
    atomic_write_text(out, page)
    return out
