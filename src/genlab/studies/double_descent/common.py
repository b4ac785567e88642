"""What the three experiments share: curve reading and plotting helpers, and the cost model's constants."""
from __future__ import annotations

import math

import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

FLOPS = 2.0e10         # sustained float64/float32 FLOP/s of one idle core (BLAS-bound work)
STEP_OVERHEAD = 1.5e-3  # seconds of per-step overhead of a batched engine step on small models


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
