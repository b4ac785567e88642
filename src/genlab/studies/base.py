"""The contract every study keeps, and the registry of studies by name.

A study is a :class:`Study` subclass with a pydantic ``Spec`` (with ``quick``, ``paper`` and
``smoke`` presets), a list of typed :class:`Unit` s of work, ``run_unit`` (a pure function of the
spec and the unit: rerunning it gives the same rows), ``plot`` (figures from the stored tables
only) and ``summarize`` (the verdict, a reading and checks of the paper's claims, from the stored
numbers). ``units(spec)`` is cheap: it loads no data and builds no model, so the CLI, the
executors and the report can call it freely.

A unit reaches the run folder only through its :class:`Context`: resume snapshots of the engine
(:meth:`Context.snapshot`), sub-results it caches (:meth:`Context.cached`), and the stored rows of
the units it needs (:attr:`Unit.needs`, :meth:`Context.rows_of`). It writes no file of its own.
``tests/test_conformance.py`` checks all of this for every registered study (``check_study``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import pandas as pd

from genlab.spec import StudySpec

T = TypeVar("T")
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``key`` names it (its folder under ``units/``), ``params`` are the plain
    values (numbers, strings, lists) it computes from, and ``needs`` names the units whose stored
    rows it reads (it runs after them; e.g. a ranking over the models of other units)."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not KEY.match(self.key):
            raise ValueError(f"unit key {self.key!r} must be letters, digits, '.', '_' or '-' (it names a folder)")

    def __getitem__(self, name: str) -> Any:
        return self.params[name]


@dataclass
class UnitResult:
    rows: list[dict]
    curves: list[dict] = field(default_factory=list)


@dataclass
class Summary:
    """What the report shows of a study: a verdict line, a reading, and reference numbers."""

    verdict: str
    reading: str
    references: list[tuple[str, str, str]] = field(default_factory=list)  # (quantity, paper, ours)
    checks: list[tuple[str, bool]] = field(default_factory=list)          # (criterion, passed)


class Study:
    name: ClassVar[str]
    title: ClassVar[str]
    question: ClassVar[str]
    citation: ClassVar[str]
    Spec: ClassVar[type[StudySpec]]
    result_columns: ClassVar[tuple[str, ...]] = ()
    timing_columns: ClassVar[tuple[str, ...]] = ()
    """Columns that hold measured wall times: the only numbers a rerun may change."""
    own_precision: ClassVar[str] = ""
    """The methods that keep their own precision whatever the spec's training precision says (they
    need exactness), for ``--help`` and the report; empty when everything follows it."""

    def units(self, spec: StudySpec) -> list[Unit]:
        """The units of work, in the order their rows appear in the tables."""
        raise NotImplementedError

    def run_unit(self, spec: StudySpec, unit: Unit, ctx: "Context") -> UnitResult:
        raise NotImplementedError

    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec, out_dir: Path) -> list[Path]:
        raise NotImplementedError

    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec) -> Summary:
        raise NotImplementedError

    def estimate_seconds(self, spec: StudySpec) -> float | None:
        """Rough wall time on a 2-core CPU, shown before a long run starts."""
        return None

    def unit(self, spec: StudySpec, key: str) -> Unit:
        """The unit named ``key`` of this spec."""
        for unit in self.units(spec):
            if unit.key == key:
                return unit
        raise KeyError(f"{self.name} has no unit {key!r} for this spec")


@dataclass
class Context:
    """What a unit may use: its folder in the run store (through the methods below), progress
    reporting, and the stored results of the units it needs."""

    unit_dir: Path
    progress: Any
    inputs: dict[str, UnitResult] = field(default_factory=dict)

    def snapshot(self, name: str = "") -> Path:
        """Where the engine keeps a resume snapshot (``train_models(..., snapshot=ctx.snapshot())``);
        a unit with several engine calls names each. The store deletes them once the unit is done."""
        if name and not KEY.match(name):
            raise ValueError(f"snapshot name {name!r} must be letters, digits, '.', '_' or '-'")
        return self.unit_dir / (f"snapshot-{name}.pt" if name else "snapshot.pt")

    def cached(self, name: str, compute: Callable[[], T]) -> T:
        """The value ``compute()`` returned when this unit ran it before (a resumed unit skips the
        work), else ``compute()`` stored atomically first. Plain values are kept as JSON, values holding
        tensors with ``torch.save`` and read back with ``weights_only=True``; either way the value
        returned is the one read back, so a resumed unit computes from exactly what a fresh one did."""
        from genlab.run.store import cached_value

        return cached_value(self.unit_dir, name, compute)

    def rows_of(self, key: str) -> UnitResult:
        """The stored result of unit ``key``, which this unit names in its ``needs``."""
        if key not in self.inputs:
            raise KeyError(f"unit {key!r} is not among this unit's needs ({', '.join(self.inputs) or 'none'})")
        return self.inputs[key]


STUDIES: dict[str, Study] = {}


def register(cls: type[Study]) -> type[Study]:
    STUDIES[cls.name] = cls()
    return cls


def get_study(name: str) -> Study:
    import genlab.studies  # noqa: F401  (registers the studies)
    from genlab.errors import UserError

    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    return STUDIES[name]
