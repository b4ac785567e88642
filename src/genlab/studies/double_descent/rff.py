"""Random Fourier features (Belkin, Hsu, Ma & Mandal 2019, PNAS 116(32), Fig. 2): min-norm least
squares on N real features across the interpolation threshold N = n; its unit, figure and checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from genlab.plotting import COLORS, figure, save
from genlab.probes.random_features import default_sigma, log_grid_dense_near, rff_sweep
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, Group
from genlab.studies.base import Summary, UnitResult
from genlab.studies.double_descent.common import (
    _band,
    _log_x_with_plain_ticks,
    _threshold_line,
    _window,
    mean_curve,
)

MSE_FLOOR = 1e-4  # lower limit of the squared-loss axis of the RFF figure


class RFFSweep(Group):
    """The feature-count sweep: n training points, N from min_ratio n to max_ratio n, ridge curves."""

    data: DataSpec = DataSpec(n_train=4000)
    points: int = Field(32, ge=3, le=400, description="number of feature counts N on the log grid (about half "
                        "within n e^-0.25..n e^0.25)")
    min_ratio: float = Field(0.1, gt=0.0, lt=1.0, description="smallest N as a fraction of n")
    max_ratio: float = Field(10.0, gt=1.0, le=100.0, description="largest N as a multiple of n")
    sigma: float | None = Field(None, gt=0.0, description="kernel bandwidth sigma, frequencies v ~ N(0, sigma^-2 I) "
                                "(default: median pairwise distance)")
    ridges: list[float] = Field([0.0, 1e-3], min_length=1, description="ridge parameters; 0 is the min-norm "
                                "interpolant, > 0 ridge curves on the same features")

    @field_validator("ridges")
    @classmethod
    def _ridges_valid(cls, v: list[float]) -> list[float]:
        for ridge in v:
            if not ridge >= 0.0:
                raise ValueError(f"every ridge must be a finite number >= 0, got {ridge}")
        if len(set(v)) != len(v):
            raise ValueError(f"ridges must be distinct, got {v}")
        return v


def rff_flops(spec, d: int = 784, n_test: int = 1000) -> float:
    """Work of one RFF sweep: Gram accumulation of all rows over all columns, projections, solves."""
    n = spec.rff.data.n_train
    rows = n + (spec.rff.data.n_test or n_test)
    columns = spec.rff.max_ratio * n
    solves = spec.rff.points * len(spec.rff.ridges) * n ** 3 / 3 * 0.75  # the p < n solves are smaller
    return rows ** 2 * columns / 2 + rows * d * columns + solves


def flat_float64(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def run_rff(spec, seed: int, ctx) -> UnitResult:
    """One RFF sweep (Belkin Fig. 2) for one seed: every N and every ridge on one frequency draw."""
    data = spec.rff.data.load()
    X_train, X_test = flat_float64(data.x_train), flat_float64(data.x_test)
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    n, k = len(y_train), data.num_classes
    sigma = spec.rff.sigma if spec.rff.sigma is not None else default_sigma(X_train, seed=0)
    counts = log_grid_dense_near(n, spec.rff.min_ratio, spec.rff.max_ratio, spec.rff.points)
    ctx.progress.start_unit(f"rff-seed{seed}", 1, len(counts) * len(spec.rff.ridges))
    sweep = rff_sweep(X_train, np.eye(k)[y_train], X_test, y_test, counts, sigma,
                      seed=derive_seed(seed, "rff-frequencies"), ridge=list(spec.rff.ridges))
    rows = [{"mode": "rff", "dataset": spec.rff.data.dataset, "n": n, "features_or_width": r["features"],
             "params": r["params"] * k, "threshold_params": n * k, "seed": seed,
             "train_mse": r["train_mse"], "test_mse": r["test_mse"], "train_err": r["train_err"],
             "test_err": r["test_err"], "norm": r["norm"], "scheme": "min-norm" if r["ridge"] == 0 else "ridge",
             "ridge": r["ridge"], "epochs": None, "sigma": r["sigma"], "solver": r["solver"],
             "floor": r["floor"], "seconds": r["seconds"]} for r in sweep]
    return UnitResult(rows, [])


def plot_rff(rows: pd.DataFrame, spec, out_dir: Path) -> Path:
    n = int(rows["n"].iloc[0])
    seeds = rows["seed"].nunique()
    fig, axes = figure(3, width=4.6, height=3.7)
    metrics = ["train_mse", "test_mse", "train_err", "test_err", "norm"]
    for i, (ridge, part) in enumerate(sorted(rows.groupby("ridge"), key=lambda item: item[0])):
        curve = mean_curve(part, "features_or_width", metrics)
        name = "min-norm" if ridge == 0 else f"ridge {ridge:g}"
        color = COLORS[i % 10]
        _band(axes[0, 0], curve, "test_mse", color, f"test, {name}")
        _band(axes[0, 0], curve, "train_mse", color, f"train, {name}", marker=".", ls=":")
        _band(axes[0, 1], curve, "test_err", color, f"test, {name}")
        _band(axes[0, 1], curve, "train_err", color, f"train, {name}", marker=".", ls=":")
        _band(axes[0, 2], curve, "norm", color, name)
    titles = ["(a) squared loss", "(b) zero-one loss", "(c) norm of the solution"]
    ylabels = ["squared loss (summed over outputs)", "zero-one error", "Frobenius norm |W|_F"]
    for ax, title, ylabel in zip(axes[0], titles, ylabels):
        _threshold_line(ax, n, f"interpolation threshold N = n = {n}")
        _log_x_with_plain_ticks(ax)
        ax.set_xlabel("random Fourier features N (real columns, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylim(bottom=MSE_FLOOR)  # interpolating fits have training MSE ~1e-25: drawn off the bottom
    axes[0, 0].text(0.98, 0.98, f"training MSE below {MSE_FLOOR:g}\n(interpolation) is off the axis",
                    transform=axes[0, 0].transAxes, ha="right", va="top", fontsize=7, color="gray")
    axes[0, 2].set_yscale("log")
    axes[0, 1].set_ylim(0, min(1.0, float(rows["test_err"].max()) * 1.1 + 0.02))
    axes[0, 0].legend(fontsize=7, loc="lower left")
    axes[0, 2].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Random Fourier features, min-norm least squares on {rows['dataset'].iloc[0]} (n = {n}, "
                 f"{seeds} seed{'s' if seeds > 1 else ''}{'; band: min-max over seeds' if seeds > 1 else ''}) "
                 f"- Belkin et al. 2019 Fig. 2")
    return save(fig, out_dir, "double_descent_rff")


def summarize_rff(rows: pd.DataFrame) -> Summary:
    n = int(rows["n"].iloc[0])
    metrics = ["train_mse", "test_mse", "train_err", "test_err", "norm"]
    plain = mean_curve(rows[rows["ridge"] == 0], "features_or_width", metrics)
    checks, references = [], []
    if not len(plain):
        return Summary("rff: no min-norm (ridge 0) curve", "The RFF sweep ran only with ridge > 0.")
    peak_n = int(plain["test_mse"].idxmax())
    norm_peak_n = int(plain["norm"].idxmax())
    under = plain[plain.index < n]
    far = plain.iloc[-1]
    far_n = int(plain.index[-1])
    best_under_n = int(under["test_err"].idxmin()) if len(under) else None
    best_under = float(under["test_err"].min()) if len(under) else float("nan")
    checks.append((f"rff: test-MSE peak at N in [0.8n, 1.25n] (N = {peak_n} = {peak_n / n:.2f} n)",
                   bool(0.8 * n <= peak_n <= 1.25 * n)))
    checks.append((f"rff: norm peak at N in [0.8n, 1.25n] (N = {norm_peak_n} = {norm_peak_n / n:.2f} n)",
                   bool(0.8 * n <= norm_peak_n <= 1.25 * n)))
    checks.append((f"rff: test error at the largest N ({far['test_err']:.2%}) below the best under-parameterized "
                   f"test error ({best_under:.2%})", bool(far["test_err"] < best_under)))
    plain_peak = float(_window(plain, n)["test_mse"].max())
    ridge_text = []
    for ridge in sorted(r for r in rows["ridge"].unique() if r > 0):
        ridged = mean_curve(rows[rows["ridge"] == ridge], "features_or_width", metrics)
        ridged_peak = float(_window(ridged, n)["test_mse"].max())
        ridged_under = float(ridged[ridged.index < n]["test_mse"].min()) if (ridged.index < n).any() else float("nan")
        checks.append((f"rff: ridge {ridge:g} flattens the peak (max test MSE near n {ridged_peak:.3g} <= 10% of the "
                       f"min-norm {plain_peak:.3g})", bool(ridged_peak <= 0.1 * plain_peak)))
        ridge_text.append(f"With ridge {ridge:g} the largest test MSE in [0.8n, 1.25n] is {ridged_peak:.3g} "
                          f"({ridged_peak / ridged_under:.2g}x its best under-parameterized value)")
    seeds = rows["seed"].nunique()
    seconds = rows.groupby("seed")["seconds"].sum().mean()
    verdict = (f"rff: test MSE peaks at N = {peak_n / n:.2f} n ({plain_peak:.3g}), norm at N = {norm_peak_n / n:.2f} "
               "n; "
               f"largest N test error {far['test_err']:.1%} vs best under-parameterized {best_under:.1%}")
    reading = (f"Random Fourier features on {rows['dataset'].iloc[0]} (n = {n}, {len(plain)} feature counts from "
               f"{int(plain.index[0])} to {far_n}, {seeds} seed(s), sigma = {rows['sigma'].iloc[0]:.3g}, "
               f"{seconds:.0f} s per sweep): the min-norm test MSE is {under['test_mse'].min():.3g} at its best "
               f"below n (N = {int(under['test_mse'].idxmin())}), {plain['test_mse'].max():.3g} at its maximum "
               f"(N = {peak_n}, training MSE {plain.loc[peak_n, 'train_mse']:.2g}) and "
               f"{far['test_mse']:.3g} at N = {far_n}; the zero-one test error goes "
               f"{best_under:.1%} (best below n, N = {best_under_n}) -> {plain.loc[peak_n, 'test_err']:.1%} (peak) -> "
               f"{far['test_err']:.1%} (N = {far_n}). The norm |W|_F peaks at N = {norm_peak_n} "
               f"({plain['norm'].max():.3g}) and is {far['norm']:.3g} at N = {far_n}. "
               + ("; ".join(ridge_text) + "." if ridge_text else ""))
    references.append(("rff: location of the test-risk peak", "N = n (n = 10^4 MNIST, Belkin Fig. 2)",
                       f"N = {peak_n / n:.2f} n (n = {n})"))
    references.append(("rff: location of the norm peak", "N = n", f"N = {norm_peak_n / n:.2f} n"))
    references.append(("rff: zero-one test error, best under-param. / largest N", "over-param. end lowest (Fig. 2)",
                       f"{best_under:.1%} / {far['test_err']:.1%}"))
    return Summary(verdict, reading, references, checks)
