"""Which measure predicts generalization: Kendall's rank correlation of each measure with the
generalization gap over a set of trained models, overall and granulated (Jiang et al. 2019,
"Fantastic Generalization Measures and Where to Find Them", eqs. 3-4)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from genlab.errors import UserError


def rank_measures(
    table: pd.DataFrame,
    gap_column: str = "gen_gap",
    *,
    measures: Sequence[str] | None = None,
    hyperparameters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Kendall's tau of each measure with the generalization gap, sorted by |tau| descending.

    One row per model in ``table``. ``measures`` defaults to every numeric column other than
    ``gap_column`` and ``hyperparameters``. Returns columns ``measure, tau, p_value, n`` where tau
    is scipy's Kendall tau-b over the rows where both values are finite (n of them) and p_value
    its two-sided p-value; NaN when n < 2 or either column is constant there.

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
    order = result["tau"].abs().sort_values(ascending=False, na_position="last", kind="stable").index
    return result.loc[order].reset_index(drop=True)


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
    a = values.to_numpy(dtype=np.float64)
    b = gaps.to_numpy(dtype=np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    n = int(finite.sum())
    if n < 2 or np.unique(a).size < 2 or np.unique(b).size < 2:
        return math.nan, math.nan, n
    result = stats.kendalltau(a, b)
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
