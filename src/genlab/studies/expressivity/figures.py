"""The figures of the expressivity study, drawn from its stored tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genlab.plotting import COLORS, figure, save
from genlab.studies.expressivity.fitting import time_exponent


def plot_scaling(results: pd.DataFrame, spec, out_dir: Path) -> Path:
    fig, axes = figure(2, 2, width=5.4, height=3.9)
    mean = results.groupby(["dataset", "labels", "n"], sort=False).mean(numeric_only=True).reset_index()
    datasets = list(dict.fromkeys(results["dataset"]))
    color = {name: COLORS[i % 10] for i, name in enumerate(datasets)}
    marker = {"true": "o", "random": "s"}
    style = {"true": "-", "random": "--"}

    ax = axes[0, 0]
    for (name, kind), g in mean.groupby(["dataset", "labels"], sort=False):
        ax.plot(g["n"], g["max_residual"], style[kind], marker=marker[kind], color=color[name], ms=4,
                label=f"{name}, {kind} labels")
    for name, g in mean.groupby("dataset", sort=False):
        by_n = g.groupby("n")["condition_estimate"].mean()
        ax.plot(by_n.index, by_n.values * np.finfo(float).eps, ":", color=color[name], lw=1.2,
                label=f"{name}: eps x cond(M), worst case")
    ax.axhline(0.5, color="gray", lw=1, ls="-.", label="0.5: argmax still exact below")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training points n")
    ax.set_ylabel("max |f(x_i) - y_i| on one-hot targets")
    ax.set_title("(a) exact fit: largest residual (float64)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0, 1]
    for name, g in mean.groupby("dataset", sort=False):
        for column, face, what in (("seconds", color[name], "construction"),
                                   ("predict_seconds", "white", "forward pass on the n points")):
            ax.plot(g["n"], g[column], "o", ms=4, color=color[name], mfc=face, ls="none")
            exponent, c, (low, high) = time_exponent(g, column)
            if np.isfinite(exponent):
                ns = np.geomspace(low, high, 50)
                ax.plot(ns, c * ns ** exponent, "-" if column == "seconds" else "--", color=color[name], lw=1.2,
                        label=f"{name} {what}: t ~ n^{exponent:.2f} (fit n >= {low:,})")
        if "dense_seconds" in g and g["dense_seconds"].notna().any():
            ax.plot(g["n"], g["dense_seconds"], "x", ms=5, color=color[name], ls="none",
                    label=f"{name}: dense triangular solve of M v = y (measured)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training points n")
    ax.set_ylabel("wall time (s)")
    ax.set_title("(b) cost vs n (filled: construction; hollow: forward pass; x: dense solve)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1, 0]
    for (name, kind), g in mean.groupby(["dataset", "labels"], sort=False):
        ax.plot(g["n"], g["train_acc"], style[kind], marker=marker[kind], color=color[name], ms=4, lw=1,
                alpha=0.5)
        ax.plot(g["n"], g["test_acc"], style[kind], marker=marker[kind], color=color[name], ms=4, mfc="white",
                label=f"{name}, {kind} labels")
    chance = float(results["chance"].iloc[0])
    ax.axhline(chance, color="gray", lw=1, ls="-.", label=f"chance ({chance:.0%})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("training points n")
    ax.set_ylabel("accuracy")
    ax.set_title("(c) train (faint, all 100%) and test accuracy (hollow)", fontsize=10)
    ax.legend(fontsize=7, loc="center right")

    ax = axes[1, 1]
    architecture = results.groupby("dataset")["mlp_architecture"].first()
    for name, g in mean[mean["labels"] == mean["labels"].iloc[0]].groupby("dataset", sort=False):
        d = int(g["d"].iloc[0])
        ax.plot(g["n"], g["params"], "-o", ms=4, color=color[name],
                label=f"{name}: interpolant, n(k+1)+d, k={int(g['k'].iloc[0])}, d={d}")
        ax.plot(g["n"], g["params_scalar"], ":", color=color[name], label=f"{name}: 2n+d (one output)")
        ax.axhline(g["mlp_params"].iloc[0], color=color[name], ls="--", lw=1,
                   label=f"{name}: MLP {architecture[name]} of the randomization quick preset "
                         f"({int(g['mlp_params'].iloc[0]):,})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    top = max(mean["params"].max(), mean["mlp_params"].max())
    ax.set_ylim(top=top * 8)
    ax.set_xlabel("training points n")
    ax.set_ylabel("parameters")
    ax.set_title("(d) parameter count")
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("2n+d ReLU interpolation (Zhang et al. 2017, Thm. 1): "
                 f"{', '.join(datasets)}, {results['seed'].nunique()} seed(s)")
    return save(fig, out_dir, "expressivity")


def plot_toy(curves: pd.DataFrame, out_dir: Path) -> Path:
    points = curves[curves["kind"] == "toy_point"].sort_values("x")
    ramps = curves[curves["kind"] == "toy_ramp"]
    fit = curves[curves["kind"] == "toy_fit"].sort_values("x")
    fig, axes = figure(2, 1, width=5.4, height=3.9)
    ax = axes[0, 0]
    order = sorted(ramps["ramp"].unique())
    partial = None
    for j in order:
        r = ramps[ramps["ramp"] == j].sort_values("x")
        partial = r["value"].to_numpy() if partial is None else partial + r["value"].to_numpy()
        if j < order[-1]:
            ax.plot(r["x"], partial, color=COLORS[int(j) % 10], lw=0.9, alpha=0.55)
    ax.plot(fit["x"], fit["value"], color="black", lw=1.8, label="f = sum of all ramps")
    ax.plot(points["x"], points["y"], "o", color="crimson", ms=6, zorder=5, label="training points (x_i, y_i)")
    ax.plot([], [], color="gray", lw=0.9, alpha=0.6, label="partial sums of the first j ramps")
    biases = ramps.groupby("ramp")["bias"].first()
    for b in biases:
        ax.axvline(b, color="gray", lw=0.6, ls=":")
    span = points["y"].max() - points["y"].min()
    ax.set_ylim(points["y"].min() - 0.6 * span, points["y"].max() + 0.6 * span)
    ax.set_xlabel("x  (w = 1: the projection is x itself)")
    ax.set_ylabel("f(x)")
    residual = float(np.max(np.abs(points["value"] - points["y"])))
    ax.set_title(f"(a) {len(points)} points fitted exactly (max residual {residual:.0e})", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    for j in order:
        r = ramps[ramps["ramp"] == j].sort_values("x")
        ax.plot(r["x"], r["value"], color=COLORS[int(j) % 10], lw=1.3,
                label=f"v_{int(j) + 1} relu(x - b_{int(j) + 1}), v = {r['weight'].iloc[0]:.3g}")
    for b in biases:
        ax.axvline(b, color="gray", lw=0.6, ls=":")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xlabel("x  (dotted: biases b_j, each in the gap below x_j)")
    ax.set_ylabel("ramp value v_j relu(x - b_j)")
    ax.set_title("(b) the ramps: each bends f at its own point", fontsize=10)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.suptitle("The construction of Theorem 1 on a 1-D toy set")
    return save(fig, out_dir, "expressivity_toy")

# ----- reading --------------------------------------------------------------------------------
