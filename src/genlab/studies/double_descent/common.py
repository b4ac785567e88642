"""What the three experiments share: curve reading and plotting helpers, and the cost model's constants."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

FLOPS = 2.0e10         # sustained float64/float32 FLOP/s of one idle core (BLAS-bound work: the RFF solves)
SWEEP_FLOPS = 6.0e10   # FLOP/s of the engine training a sweep of small MLPs, counting each model's own work
                       # (not the padding), evaluations included, on 2 cores: fitted to the quick and paper
                       # label-noise runs (6.0 s for 4,000 steps of 143 GFLOP; 11.3 s for 1,200 of 615)
STEP_OVERHEAD = 1.0e-3  # seconds of per-step overhead of a batched engine step on small models


def mean_curve(rows: pd.DataFrame, x: str, columns: list[str]) -> pd.DataFrame:
    """Mean, min and max over seeds of ``columns`` at each ``x`` (sorted by x)."""
    grouped = rows.groupby(x)[columns]
    out = grouped.mean()
    out = out.join(grouped.min().add_suffix("_min")).join(grouped.max().add_suffix("_max"))
    return out.sort_index()


def first_interpolating(curve: pd.Series, tolerance: float) -> float | None:
    """The smallest x whose mean training error is <= tolerance (None when none is)."""
    fitted = curve[curve <= tolerance]
    return float(fitted.index.min()) if len(fitted) else None


def classical_best_and_peak(test: pd.Series) -> tuple[float, float]:
    """(x at the bottom of the classical U, x of the largest test value from there on).

    The bottom of the U is the first local minimum of the test curve, scanning from the smallest
    model; the double-descent peak is the largest test value at x at or above it, so the
    under-fitting of the smallest models (the left arm of the U) is not mistaken for the peak.
    A curve that only falls has its bottom and its "peak" at the largest x.
    """
    values = test.to_numpy(dtype=float)
    bottom = 0
    while bottom + 1 < len(values) and values[bottom + 1] < values[bottom]:
        bottom += 1
    return float(test.index[bottom]), float(test.iloc[bottom:].idxmax())


@dataclass(frozen=True)
class RiskPeak:
    """The largest seed-mean risk in a window around the threshold, with what it must stand above.

    ``before`` is the lowest seed-mean risk at any smaller size, ``largest`` the risk of the largest
    size; ``*_se`` are standard errors over seeds of the per-seed differences peak - before and
    peak - largest (sd / sqrt(seeds); NaN with one seed)."""

    x: float
    value: float
    before_x: float | None
    before: float
    before_se: float
    largest_x: float
    largest: float
    largest_se: float
    seeds: int

    def margin(self, lower: float, se: float, relative: float = 0.1, z: float = 2.0) -> float:
        """How far the peak must stand above ``lower``: max(z standard errors, ``relative`` x lower);
        infinite when the spread is unknown (one seed)."""
        return max(z * se if math.isfinite(se) else math.inf, relative * abs(lower))

    def stands_out(self, min_seeds: int = 3, relative: float = 0.1, z: float = 2.0) -> bool:
        """Peak minus the lowest risk before it, and peak minus the largest size's risk, both exceed
        their margins, over at least ``min_seeds`` seeds (so that a seed spread exists)."""
        if self.seeds < min_seeds or self.before_x is None or self.x >= self.largest_x:
            return False
        return bool(self.value - self.before > self.margin(self.before, self.before_se, relative, z)
                    and self.value - self.largest > self.margin(self.largest, self.largest_se, relative, z))


def risk_peak(rows: pd.DataFrame, x: str, value: str, low: float, high: float) -> RiskPeak | None:
    """The peak of the seed-mean ``value`` over ``x`` in [low, high] (None when no x is there).

    ``rows`` has one row per (x, seed); the seed spread of the two differences is computed over
    the seeds present at the peak and at the compared size (paired: one difference per seed)."""
    table = rows.pivot_table(index=x, columns="seed", values=value, aggfunc="mean").sort_index()
    mean = table.mean(axis=1)
    window = mean[(mean.index >= low) & (mean.index <= high)]
    if not len(window):
        return None
    peak_x = window.idxmax()
    before = mean[mean.index < peak_x]
    before_x = before.idxmin() if len(before) else None
    largest_x = mean.index[-1]

    def se(other) -> float:
        if other is None:
            return math.nan
        diffs = (table.loc[peak_x] - table.loc[other]).dropna().to_numpy(dtype=float)
        return float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) >= 2 else math.nan

    return RiskPeak(x=float(peak_x), value=float(mean[peak_x]),
                    before_x=None if before_x is None else float(before_x),
                    before=float(before.min()) if len(before) else math.nan, before_se=se(before_x),
                    largest_x=float(largest_x), largest=float(mean[largest_x]), largest_se=se(largest_x),
                    seeds=int(table.loc[peak_x].notna().sum()))


def ticks_125(low: float, high: float) -> list[float]:
    """1-2-5 ticks (1, 2, 5, 10, 20, ...) covering [low, high], for log axes with few decades."""
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    return [t for t in ticks if low <= t <= high]


def _band(ax, curve: pd.DataFrame, column: str, color, label: str, marker: str = "o", ls: str = "-") -> None:
    x = curve.index.to_numpy(dtype=float)
    ax.plot(x, curve[column], marker=marker, ms=3.5, lw=1.4, color=color, label=label, ls=ls)
    if (curve[f"{column}_max"] > curve[f"{column}_min"]).any():
        ax.fill_between(x, curve[f"{column}_min"], curve[f"{column}_max"], color=color, alpha=0.2, lw=0)


def _threshold_line(ax, x: float, label: str) -> None:
    ax.axvline(x, color="black", ls="--", lw=1, alpha=0.7, label=label)


def _log_x_with_plain_ticks(ax, ticks: list[float] | None = None) -> None:
    """Log x-axis labelled with plain numbers (no 2x10^0-style minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ticks is not None:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


def _window(curve: pd.DataFrame, n: int, low: float = 0.8, high: float = 1.25) -> pd.DataFrame:
    x = curve.index.to_numpy(dtype=float)
    return curve[(x >= low * n) & (x <= high * n)]
