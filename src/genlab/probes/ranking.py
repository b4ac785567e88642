"""Which measure predicts generalization: Kendall's rank correlation of each measure with the
generalization gap over a set of trained models, overall and granulated (Jiang et al. 2019,
"Fantastic Generalization Measures and Where to Find Them", eqs. 3-4)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from genlab.errors import UserError


def rank_measures(
    table: pd.DataFrame,
    gap_column: str = "gen_gap",
    *,
    measures: Sequence[str] | None = None,
    hyperparameters: Sequence[str] | None = None,
    order: Literal["signed", "absolute"] = "signed",
) -> pd.DataFrame:
    """Kendall's tau of each measure with the generalization gap, sorted by tau descending.

    One row per model in ``table``. ``measures`` defaults to every numeric column other than
    ``gap_column`` and ``hyperparameters``. Returns columns ``measure, tau, p_value, n`` where tau
    is scipy's Kendall tau-b over the rows where both values are finite (n of them) and p_value
    its two-sided p-value; NaN when n < 2 or either column is constant there.

    Sorting: ``order="signed"`` (default) by tau itself, largest first: each measure is meant to
    be oriented so that a larger value predicts a larger gap (Jiang et al.), and a measure that
    ranks the models backwards (tau near -1) is a bad predictor, not a good one; ``"absolute"``
    by |tau| (for measures of unknown orientation). NaN taus come last either way.

    With ``hyperparameters`` (columns of the table that were varied on a grid), also Jiang et al.
    2019's granulated Kendall coefficient (their eq. 4): for each hyperparameter h, ``tau_<h>``
    is the mean, over all settings of the other hyperparameters, of the tau computed among the
    models that differ only in h; ``granulated_tau`` is the mean of the ``tau_<h>``. It asks
    whether a measure tracks the gap when one thing changes at a time.
    """
    hyperparameters = list(hyperparameters or [])
    _check_table(table, gap_column, hyperparameters)
    columns = _measure_columns(table, gap_column, measures, hyperparameters)
    rows = []
    for column in columns:
        tau, p_value, n = _kendall(table[column], table[gap_column])
        row: dict[str, object] = {"measure": column, "tau": tau, "p_value": p_value, "n": n}
        if hyperparameters:
            row.update(_granulated(table, column, gap_column, hyperparameters))
        rows.append(row)
    result = pd.DataFrame(rows, columns=None if rows else ["measure", "tau", "p_value", "n"])
    if order not in ("signed", "absolute"):
        raise UserError(f"order: must be 'signed' or 'absolute', got {order!r}")
    key = result["tau"] if order == "signed" else result["tau"].abs()
    index = key.sort_values(ascending=False, na_position="last", kind="stable").index
    return result.loc[index].reset_index(drop=True)


def _check_table(table: pd.DataFrame, gap_column: str, hyperparameters: list[str]) -> None:
    if not isinstance(table, pd.DataFrame):
        raise UserError(f"table: expected a pandas DataFrame, got {type(table).__name__}")
    if gap_column not in table.columns:
        raise UserError(f"gap_column: column {gap_column!r} is not in the table (columns: {list(table.columns)})")
    if not pd.api.types.is_numeric_dtype(table[gap_column]):
        raise UserError(f"gap_column: column {gap_column!r} is not numeric")
    if len(table) < 2:
        raise UserError(f"table: needs at least 2 rows (models) to rank measures, got {len(table)}")
    for name in hyperparameters:
        if name not in table.columns:
            raise UserError(f"hyperparameters: column {name!r} is not in the table")


def _measure_columns(
    table: pd.DataFrame, gap_column: str, measures: Sequence[str] | None, hyperparameters: list[str]
) -> list[str]:
    if measures is None:
        excluded = {gap_column, *hyperparameters}
        return [
            c for c in table.columns if c not in excluded
            and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        ]
    for name in measures:
        if name not in table.columns:
            raise UserError(f"measures: column {name!r} is not in the table")
        if not pd.api.types.is_numeric_dtype(table[name]):
            raise UserError(f"measures: column {name!r} is not numeric")
    return list(measures)


def _kendall(values: pd.Series, gaps: pd.Series) -> tuple[float, float, int]:
    from scipy.stats import kendalltau  # imported here: scipy.stats takes ~0.6 s to import
    a = values.to_numpy(dtype=np.float64)
    b = gaps.to_numpy(dtype=np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    n = int(finite.sum())
    if n < 2 or np.unique(a).size < 2 or np.unique(b).size < 2:
        return math.nan, math.nan, n
    result = kendalltau(a, b)
    return float(result.statistic), float(result.pvalue), n


def _granulated(
    table: pd.DataFrame, column: str, gap_column: str, hyperparameters: list[str]
) -> dict[str, float]:
    per_axis = {}
    for varied in hyperparameters:
        fixed = [h for h in hyperparameters if h != varied]
        groups = [table] if not fixed else [g for _, g in table.groupby(fixed, dropna=False)]
        taus = [_kendall(g[column], g[gap_column])[0] for g in groups]
        taus = [t for t in taus if not math.isnan(t)]
        per_axis[f"tau_{varied}"] = float(np.mean(taus)) if taus else math.nan
    values = [t for t in per_axis.values() if not math.isnan(t)]
    per_axis["granulated_tau"] = float(np.mean(values)) if values else math.nan
    return per_axis


def one_at_a_time_taus(
    table: pd.DataFrame,
    measures: Sequence[str],
    gap_column: str = "gen_gap",
    *,
    axis_column: str = "axis",
    base: str = "base",
) -> pd.DataFrame:
    """Per-axis Kendall taus of a one-at-a-time design, and their mean.

    In such a design every model differs from a base configuration in at most one hyperparameter,
    named in ``axis_column`` (the base models carry ``base``). For each axis a, ``tau_<a>`` is the
    Kendall tau of a measure with the gap among the base models and those that vary a; and
    ``granulated_tau`` is their mean: the analogue, for this design, of Jiang et al. 2019's
    granulated coefficient (eq. 4), which on their full grid averages over every setting of the
    other axes. One row per measure (index ``measure``).
    """
    _check_table(table, gap_column, [axis_column])
    axes = [a for a in dict.fromkeys(table[axis_column]) if a != base]
    rows = []
    for column in _measure_columns(table, gap_column, measures, []):
        row: dict[str, object] = {"measure": column}
        for axis in axes:
            part = table[table[axis_column].isin([base, axis])]
            row[f"tau_{axis}"] = _kendall(part[column], part[gap_column])[0]
        values = [t for t in (row[f"tau_{a}"] for a in axes) if not math.isnan(t)]
        row["granulated_tau"] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("measure")
