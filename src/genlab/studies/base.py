"""The contract every study keeps, and the registry of studies by name.

A study is a :class:`Study` subclass with a pydantic ``Spec`` (with ``quick`` and ``paper``
presets), a list of *units* of work (pure functions of spec and unit id: rerunning a unit gives
the same rows), ``plot`` (figures from stored tables only) and ``summarize`` (the verdict and a
reading written from the stored numbers, for the report).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from genlab.spec import StudySpec


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

    def units(self, spec: StudySpec) -> list[str]:
        raise NotImplementedError

    def run_unit(self, spec: StudySpec, unit: str, ctx: "Context") -> UnitResult:
        raise NotImplementedError

    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec, out_dir: Path) -> list[Path]:
        raise NotImplementedError

    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec) -> Summary:
        raise NotImplementedError

    def estimate_seconds(self, spec: StudySpec) -> float | None:
        """Rough wall time on a 2-core CPU, shown before a long run starts."""
        return None


@dataclass
class Context:
    """What a unit may use: where to keep its snapshot, progress reporting, the device."""

    unit_dir: Path
    progress: Any
    device: str = "cpu"

    @property
    def snapshot(self) -> Path:
        return self.unit_dir / "snapshot.pt"


STUDIES: dict[str, Study] = {}


def register(cls: type[Study]) -> type[Study]:
    STUDIES[cls.name] = cls()
    return cls


def get_study(name: str) -> Study:
    from genlab.errors import UserError
    import genlab.studies  # noqa: F401  (registers the studies)

    if name not in STUDIES:
        raise UserError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    return STUDIES[name]
