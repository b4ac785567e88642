"""Reading the expressivity study's numbers: power-law fits of time against n, and the band of
test accuracies a random-label network at chance falls in."""
from __future__ import annotations

import numpy as np
import pandas as pd

CHANCE_BAND_SIGMAS = 4.0


def power_law(n: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log t = log c + e log n; returns (e, c). NaN if fewer than 2 sizes."""
    n, seconds = np.asarray(n, dtype=float), np.asarray(seconds, dtype=float)
    ok = (n > 0) & (seconds > 0) & np.isfinite(seconds)
    if len(np.unique(n[ok])) < 2:
        return float("nan"), float("nan")
    exponent, log_c = np.polyfit(np.log(n[ok]), np.log(seconds[ok]), 1)
    return float(exponent), float(np.exp(log_c))


def fit_range(n: pd.Series) -> tuple[int, int]:
    """The sizes a time fit uses: the upper half of the distinct sizes (at least two, when there are).

    At small n the times are a few milliseconds of fixed overhead (and noisy on a shared CPU), which
    would flatten the fitted exponent; the upper half shows the growth.
    """
    sizes = np.unique(n.to_numpy())
    first = min(len(sizes) // 2, max(len(sizes) - 2, 0))
    return int(sizes[first]), int(sizes[-1])


def time_exponent(rows: pd.DataFrame, column: str) -> tuple[float, float, tuple[int, int]]:
    """Power-law fit (exponent, prefactor) of ``column`` against n over `fit_range`, and that range."""
    low, high = fit_range(rows["n"])
    used = rows[(rows["n"] >= low) & (rows["n"] <= high)]
    return (*power_law(used["n"], used[column]), (low, high))


def chance_band(chance: float, n_test: int) -> float:
    """Half-width of the band around chance accuracy: CHANCE_BAND_SIGMAS binomial standard errors."""
    return CHANCE_BAND_SIGMAS * float(np.sqrt(chance * (1 - chance) / n_test))
