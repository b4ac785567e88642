"""Run folders: one folder per run, atomic writes, a lock, and resume.

Layout of ``RUN_DIR``::

    manifest.json       spec, study, status (running/complete/failed/interrupted), versions,
                        seeds, git revision, host, timings, finished units
    results.csv         tidy results: one row per model x measurement (all finished units)
    curves.csv          per-epoch learning curves (all finished units)
    figures/            PNG (and SVG) figures, made from the CSV files only
    engine-choices.json the engine's strategy per workload signature, written as each is chosen
                        (:func:`genlab.engine.choose.pinned_choices`): a resumed run computes
                        with the strategies the run started with
    units/<key>/        a unit's rows once finished (``done.json``, with a summary of what the
                        engine ran for it); while it runs, its resume snapshots (``snapshot*.pt``)
                        and its cached sub-results (``cache/``, each with the engine decisions
                        made while computing it, ``NAME.engine.json``)

A unit is finished exactly when ``units/<key>/done.json`` exists; it is written atomically
(temp file + ``os.replace``), so a run killed at any point resumes without losing or redoing
finished units. Once it exists, the unit's snapshots and cache are deleted; temp files of writes
a kill interrupted are deleted when the run folder is opened again. A second process on the same
folder is refused by an ``flock`` on ``RUN_DIR/.lock``, which the kernel releases when a process dies.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from genlab.engine.snapshot import load_snapshot, save_snapshot
from genlab.errors import UserError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _holds_tensors(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v) for v in value)
    return False


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists (tensors kept)."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


_UNIT_DECISIONS: ContextVar[list | None] = ContextVar("genlab_unit_decisions", default=None)


@contextmanager
def recording_unit_decisions():
    """Collect, as a list, the engine decisions of one unit (:func:`genlab.engine.recording_decisions`),
    including those of sub-results it reads back from its cache instead of computing them again, so
    that a resumed unit records what an uninterrupted one does."""
    from genlab.engine import recording_decisions

    with recording_decisions() as log:
        token = _UNIT_DECISIONS.set(log)
        try:
            yield log
        finally:
            _UNIT_DECISIONS.reset(token)


def summarize_decisions(log: list[dict]) -> dict[str, Any]:
    """The compact record of a unit's engine calls kept in ``done.json`` and the manifest: their
    precisions, how many calls and models, how many calls ran each strategy, how each call's first
    strategy was chosen (count per reason), and the calibrations timed (count, seconds).

    A call resumed from its snapshot records what it would have uninterrupted: its earlier
    decisions come back with the snapshot, and it continues with the strategies chosen then."""
    strategies: Counter = Counter()
    chosen_by: Counter = Counter()
    timed = []
    for call in log:
        decisions = call.get("decisions") or []
        strategies.update({str(d.get("strategy")) for d in decisions})
        if decisions:
            chosen_by[str(decisions[0].get("reason"))] += 1
        timed += [d for d in decisions if d.get("reason") == "calibrated"]
    return {"precision": sorted({str(call.get("precision")) for call in log}), "engine_calls": len(log),
            "models": sum(int(call.get("models", 0)) for call in log), "strategies": dict(sorted(strategies.items())),
            "chosen_by": dict(sorted(chosen_by.items())), "calibrations": len(timed),
            "calibration_seconds": round(sum(float(d.get("calibration_seconds", 0.0)) for d in timed), 3)}


def cached_value(folder: Path, name: str, compute):
    """The value stored under ``name`` in ``folder/cache``, or ``compute()`` stored there first.

    Tensors and plain Python values only (numpy values become Python numbers): JSON when there is
    no tensor, else a file of :mod:`genlab.engine.snapshot` (``torch.save``, read back with
    ``weights_only=True``, refused with one line when damaged). The value returned is
    always the one read back from disk. A computation that trains through the engine names its
    resume snapshot after itself (``snapshot-NAME.pt``): once the value is stored, it is deleted.
    The engine decisions made by ``compute()`` are kept beside the value (``NAME.engine.json``,
    written before it) and added to the unit's record whenever the value is used.
    """
    cache = folder / "cache"
    as_json, as_torch = cache / f"{name}.json", cache / f"{name}.pt"
    decisions = cache / f"{name}.engine.json"
    if not (as_json.exists() or as_torch.exists()):
        with recording_unit_decisions() as made:  # sub-results cached inside compute() land in made
            value = _plain(compute())
        cache.mkdir(parents=True, exist_ok=True)
        if made:
            atomic_write_json(decisions, made)
        else:
            decisions.unlink(missing_ok=True)
        if _holds_tensors(value):
            save_snapshot({"value": value}, as_torch)
        else:
            atomic_write_text(as_json, json.dumps(value))
        (folder / f"snapshot-{name}.pt").unlink(missing_ok=True)
    unit_log = _UNIT_DECISIONS.get()
    if unit_log is not None and decisions.exists():
        try:
            unit_log.extend(json.loads(decisions.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise UserError(f"{decisions} is unreadable ({_reason(exc)}); delete it and {name}.* beside it to "
                            f"recompute them, or re-run with --force-new") from None
    if as_json.exists():
        try:
            return json.loads(as_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise UserError(f"{as_json} is unreadable ({exc}); delete it to recompute it, or re-run with "
                            f"--force-new") from None
    return load_snapshot(as_torch)["value"]


def remove_leftovers(units_dir: Path) -> None:
    """Delete temp files of writes a kill interrupted (``*.tmp`` anywhere below ``units_dir``)."""
    if units_dir.is_dir():
        for leftover in units_dir.rglob("*.tmp"):
            leftover.unlink(missing_ok=True)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("genlab", "torch", "numpy", "pandas", "pydantic", "matplotlib", "mnist1d", "mlxtend", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    import torch

    return {"host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _spec_diff(old: dict, new: dict) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} asked"
    return ""


class RunStore:
    """A run folder (see module docstring). Use as a context manager to hold its lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock_fh = None
        self._created_from: Path | None = None  # the outermost folder of the path this process made
        self._started_run = False  # this process wrote the run's first manifest

    # ----- paths ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def choices_path(self) -> Path:
        return self.path / "engine-choices.json"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def unit_dir(self, unit: str) -> Path:
        d = self.path / "units" / unit
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ----- opening, locking ----------------------------------------------------------------
    def open(self, study: str, spec: dict, force_new: bool = False) -> "RunStore":
        """Create or resume the run for ``study`` with ``spec``; refuse a folder holding another spec."""
        try:
            missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
            self._created_from = missing[-1] if missing else None
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write to run folder {self.path}: {exc.strerror or exc}") from None
        self._lock()
        if force_new and any(child.name != ".lock" for child in self.path.iterdir()):
            self._move_aside()
        manifest = self.read_manifest()
        if manifest is not None:
            same = manifest.get("study") == study and manifest.get("spec") == spec
            if not same:
                self.release()
                diff = _spec_diff(manifest.get("spec", {}), spec) if manifest.get("study") == study else \
                    f"study {manifest.get('study')!r} there, {study!r} asked"
                raise UserError(f"{self.path} holds a run with a different spec ({diff}); "
                                f"use another --out, or --force-new to start over (the old run is kept aside)")
        now = datetime.now(timezone.utc).isoformat()
        self._started_run = manifest is None
        if manifest is None:
            manifest = {"study": study, "spec": spec, "status": "running", "created": now,
                        "units_done": [], "unit_seconds": {}, "attempts": []}
        manifest.update({"status": "running", "versions": package_versions(), "environment": environment(),
                         "git_revision": git_revision(), "seeds": spec.get("seeds")})
        manifest.setdefault("attempts", []).append({"started": now, "pid": os.getpid()})
        self.write_manifest(manifest)
        remove_leftovers(self.path / "units")
        return self

    def discard_if_nothing_saved(self) -> bool:
        """Undo a run this process started and that ended before anything was computed: no unit left a
        file (done, snapshot or cache) and no table or figure was written. Removes the files ``open``
        and the engine wrote, and the folder when this process made it, so that the next command may
        use the folder for any spec. Call while holding the lock; returns whether the run was removed."""
        units = self.path / "units"
        if not self._started_run or (units.exists() and any(p.is_file() for p in units.rglob("*"))):
            return False
        if any((self.path / name).exists() for name in (*TABLES, "figures")):
            return False
        for name in ("manifest.json", "spec.toml", "engine-choices.json"):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(units, ignore_errors=True)
        (self.path / ".lock").unlink(missing_ok=True)
        self.release()
        if self._created_from is not None:
            for folder in (self.path, *self.path.parents):
                if any(folder.iterdir()):
                    break
                folder.rmdir()
                if folder == self._created_from:
                    break
        return True

    def _move_aside(self) -> Path:
        """Move everything of the folder but its lock to ``NAME.old-TIMESTAMP`` (``--force-new``)."""
        stamp = f"{self.path.name}.old-{datetime.now():%Y%m%d-%H%M%S}"
        backup, n = self.path.with_name(stamp), 1
        while backup.exists():
            n += 1
            backup = self.path.with_name(f"{stamp}-{n}")
        backup.mkdir()
        for child in list(self.path.iterdir()):
            if child.name != ".lock":
                shutil.move(str(child), backup / child.name)
        return backup

    def _lock(self) -> None:
        lock_path = self.path / ".lock"
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"{self.path} is in use by {holder}; wait for it or use another --out") from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._lock_fh = fh

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ----- manifest --------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise UserError(f"{self.manifest_path} is unreadable ({_reason(exc)}); re-run with --force-new to start "
                            f"over (the old run is kept aside)") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("spec", {}), dict) or \
                not isinstance(manifest.get("units_done", []), list):
            raise UserError(f"{self.manifest_path} is not a genlab manifest (damaged?); re-run with --force-new to "
                            f"start over (the old run is kept aside)")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def set_status(self, status: str, **fields: Any) -> None:
        manifest = self.read_manifest() or {}
        manifest["status"] = status
        manifest.update(fields)
        if manifest.get("attempts"):
            manifest["attempts"][-1]["ended"] = datetime.now(timezone.utc).isoformat()
            manifest["attempts"][-1]["status"] = status
        self.write_manifest(manifest)

    def write_spec_toml(self, spec: dict) -> None:
        """The spec as TOML beside the run, so ``genlab run STUDY --config RUN_DIR/spec.toml`` repeats it."""
        import tomli_w

        atomic_write_text(self.path / "spec.toml", tomli_w.dumps({k: v for k, v in spec.items() if v is not None}))

    # ----- units -----------------------------------------------------------------------------
    def unit_done(self, unit: str) -> bool:
        return (self.path / "units" / unit / "done.json").exists()

    def save_unit(self, unit: str, rows: list[dict], curves: list[dict], seconds: float,
                  engine: dict | None = None) -> None:
        """Record a finished unit atomically (with ``engine``, the :func:`summarize_decisions` of
        what the engine ran for it), then refresh the manifest."""
        folder = self.unit_dir(unit)
        record = {"rows": rows, "curves": curves, "seconds": seconds}
        if engine is not None:
            record["engine"] = engine
        atomic_write_json(folder / "done.json", record)
        for leftover in folder.glob("snapshot*.pt"):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(folder / "cache", ignore_errors=True)
        manifest = self.read_manifest() or {}
        if unit not in manifest.setdefault("units_done", []):
            manifest["units_done"].append(unit)
        manifest.setdefault("unit_seconds", {})[unit] = round(seconds, 3)
        if engine is not None:
            manifest.setdefault("engine", {})[unit] = engine
        self.write_manifest(manifest)

    def load_unit(self, unit: str) -> dict:
        path = self.path / "units" / unit / "done.json"
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise UserError(f"{path} is unreadable ({_reason(exc)}); delete it to run unit {unit} again, or re-run "
                            f"with --force-new to start over") from None
        if not (isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("curves"), list)
                and all(isinstance(r, dict) for r in data["rows"] + data["curves"])):
            raise UserError(f"{path} does not hold a finished unit's rows (damaged?); delete it to run unit {unit} "
                            f"again, or re-run with --force-new to start over")
        return data

    def engine_records(self, units: list[str]) -> dict[str, dict]:
        """What the engine ran for each finished unit (from ``done.json``), in unit order."""
        records = {}
        for unit in units:
            if self.unit_done(unit):
                engine = self.load_unit(unit).get("engine")
                if isinstance(engine, dict):
                    records[unit] = engine
        return records

    def rebuild_tables(self, units: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Concatenate finished units' rows in unit order into results.csv and curves.csv."""
        rows, curves = [], []
        for unit in units:
            if self.unit_done(unit):
                data = self.load_unit(unit)
                rows += data["rows"]
                curves += data["curves"]
        results, curve_df = pd.DataFrame(rows), pd.DataFrame(curves)
        atomic_write_text(self.path / "results.csv", results.to_csv(index=False))
        atomic_write_text(self.path / "curves.csv", curve_df.to_csv(index=False))
        return results, curve_df

    def table_digests(self) -> dict[str, str]:
        """SHA-256 of results.csv and curves.csv, recorded in the manifest of a complete run."""
        return {name: _sha256(self.path / name) for name in TABLES if (self.path / name).exists()}

    def verify_tables(self, manifest: dict) -> None:
        """Refuse tables that differ from the digests the complete run recorded (damaged or edited)."""
        for name, digest in (manifest.get("tables") or {}).items():
            path = self.path / name
            if name in TABLES and (not path.exists() or _sha256(path) != digest):
                raise UserError(f"{path} is missing or differs from what the run wrote (damaged or edited); re-run "
                                f"the run's command to rebuild it from units/*/done.json, or --force-new to start over")

    # ----- reading a finished run ------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        return _read_csv(self.path / "results.csv")

    def curves(self) -> pd.DataFrame:
        return _read_csv(self.path / "curves.csv")


TABLES = ("results.csv", "curves.csv")


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"{path} does not exist: is this a genlab run folder?")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise UserError(f"{path} is unreadable ({_reason(exc)}); re-run the run's command to rebuild it from "
                        f"units/*/done.json, or --force-new to start over") from None
