"""Figures of a diagnosis, in the house style (:mod:`genlab.plotting`); the layer-robustness
heatmap is the layer-robustness study's own."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from genlab.plotting import COLORS, figure, save
from genlab.studies.layer_robustness import LayerRobustness


def performance_figure(perf: dict, trajectory: pd.DataFrame | None, out_dir: Path) -> Path:
    """Train vs test accuracy and loss; across the recorded epochs when there is a record."""
    if trajectory is None or len(trajectory) < 2:
        fig, axes = figure(2, 1, width=3.6, height=2.9)
        for ax, key, label in ((axes[0, 0], "acc", "accuracy"), (axes[0, 1], "loss", "cross-entropy")):
            values = [perf[f"train_{key}"], perf[f"test_{key}"]]
            ax.bar(["train", "test"], values, color=[COLORS[0], COLORS[1]])
            for i, v in enumerate(values):
                ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
            ax.set_title(label)
        fig.suptitle(f"generalization gap: {100 * perf['acc_gap']:.1f} points of accuracy", fontsize=10)
        return save(fig, out_dir, "performance")
    fig, axes = figure(3, 1, width=3.6, height=2.9)
    epochs = trajectory["epoch"].to_numpy()
    for ax, key, label in ((axes[0, 0], "acc", "accuracy"), (axes[0, 1], "loss", "cross-entropy")):
        for i, part in enumerate(("train", "test")):
            ax.plot(epochs, trajectory[f"{part}_{key}"], marker="o", ms=3, color=COLORS[i], label=part)
        ax.set_xscale("symlog", linthresh=1)
        if key == "loss":
            ax.set_yscale("log")
        ax.set_xlabel("recorded epoch")
        ax.set_title(label)
        ax.legend()
    ax = axes[0, 2]
    ax.plot(epochs, trajectory["dist_from_init"], marker="o", ms=3, color=COLORS[2])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("recorded epoch")
    ax.set_title(r"$\|\theta_t - \theta_0\|_2$")
    fig.suptitle("the recorded training: train and test at each saved epoch", fontsize=10)
    return save(fig, out_dir, "trajectory")


def margins_figure(train: np.ndarray, test: np.ndarray, out_dir: Path) -> Path:
    fig, axes = figure(1, 1, width=5.6, height=3.0)
    ax = axes[0, 0]
    low, high = np.percentile(np.concatenate([train, test]), [0.5, 99.5])
    bins = np.linspace(low, high, 50)
    ax.hist(train, bins=bins, alpha=0.6, density=True, color=COLORS[0], label="train")
    ax.hist(test, bins=bins, alpha=0.6, density=True, color=COLORS[1], label="test")
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel(r"output margin $f_y(x) - \max_{j \neq y} f_j(x)$ (< 0: misclassified)")
    ax.set_ylabel("density")
    ax.legend()
    return save(fig, out_dir, "margins")


def spectra_figure(spectra: pd.DataFrame, out_dir: Path) -> Path:
    """Singular values of each weight matrix (divided by the largest) and its stable rank."""
    fig, axes = figure(2, 1, width=4.6, height=3.2)
    ax = axes[0, 0]
    cmap = matplotlib.colormaps["viridis"]
    for i, row in enumerate(spectra.itertuples()):
        values = row.singular_values / row.singular_values[0]
        ax.plot(np.arange(1, len(values) + 1), values, color=cmap(i / max(1, len(spectra) - 1)), lw=1.2,
                label=row.layer)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel(r"$s_i / s_1$")
    ax.set_title("singular values of each weight matrix")
    if len(spectra) <= 12:
        ax.legend(fontsize=6)
    ax = axes[0, 1]
    positions = np.arange(len(spectra))
    ax.barh(positions, spectra["stable_rank"], color=COLORS[0], label="stable rank")
    ax.scatter(spectra["rank_max"], positions, marker="|", color="black", s=80, label="min(rows, cols)")
    ax.set_yticks(positions, spectra["layer"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_title(r"stable rank $\|W\|_F^2 / \|W\|_2^2$")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "spectra")


def robustness_figure(table: pd.DataFrame, network: str, dataset: str, seed: int, out_dir: Path) -> Path:
    """The layer-robustness study's heatmap when layers were re-initialized to checkpoints; a bar
    of re-randomized accuracy per layer otherwise."""
    if (table["operation"] == "reinit").any():
        results = table.assign(model=network, dataset=dataset, seed=seed)
        # the study's heatmap reads only the stored rows and the network names
        return LayerRobustness()._plot_heatmaps(results, [network], None, out_dir)
    per = table.groupby("layer_index", sort=True).agg(layer=("layer", "first"), label=("layer_label", "first"),
                                                       acc=("test_acc", "mean"),
                                                       trained=("trained_test_acc", "first"))
    fig, axes = figure(1, 1, width=6.0, height=1.2 + 0.3 * len(per))
    ax = axes[0, 0]
    positions = np.arange(len(per))
    ax.barh(positions, per["acc"], color=COLORS[1])
    ax.axvline(per["trained"].iloc[0], color="black", lw=1, label="trained")
    ax.set_yticks(positions, [f"{r.layer}: {r.label}" for r in per.itertuples()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy with the layer re-randomized (mean over draws)")
    ax.legend()
    return save(fig, out_dir, "layer_robustness")


def randomization_figure(curves: pd.DataFrame, out_dir: Path) -> Path:
    """Train accuracy per epoch of the architecture retrained on true and on random labels."""
    fig, axes = figure(1, 1, width=5.2, height=3.0)
    ax = axes[0, 0]
    for i, (key, sub) in enumerate(curves.groupby("key", sort=False)):
        ax.plot(sub["epoch"], sub["train_acc"], color=COLORS[i], label=f"{key}: train")
        ax.plot(sub["epoch"], sub["test_acc"], color=COLORS[i], ls="--", label=f"{key}: test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("randomization test: the architecture retrained from scratch")
    ax.legend()
    return save(fig, out_dir, "randomization")
