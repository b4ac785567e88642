"""Figures of a diagnosis, in the house style (:mod:`genlab.plotting`); the layer-robustness
heatmap is the layer-robustness study's own."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker
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
    ax.plot(epochs, trajectory["dist_from_init_all_params"], marker="o", ms=3, color=COLORS[2])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("recorded epoch")
    ax.set_title(r"distance from init, all parameters: $\|\theta_t - \theta_0\|_2$", fontsize=9)
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


def description_length_figure(result: dict, out_dir: Path) -> Path:
    """Cumulative prequential code of the true and the random labels against the uniform code, and
    bits per label in each block."""
    blocks = result["blocks"]
    fig, axes = figure(2, 1, width=4.2, height=3.0)
    for i, (labels, part) in enumerate(blocks.groupby("labels", sort=False)):
        style = "-o" if labels == "true" else "--x"
        axes[0, 0].plot(part["block_end"], part["cumulative_bits"] / 1000, style, ms=4, color=COLORS[i],
                        label=f"{labels} labels")
        coded = part.iloc[1:]
        axes[0, 1].plot(coded["block_end"], coded["bits_per_label"], style, ms=4, color=COLORS[i],
                        label=f"{labels} labels")
    ends = blocks.drop_duplicates("block_end").sort_values("block_end")["block_end"].to_numpy()
    log_k = np.log2(result["classes"])
    axes[0, 0].plot(ends, ends * log_k / 1000, color="black", lw=1, ls=":", label="uniform code")
    axes[0, 1].axhline(log_k, color="black", lw=1, ls=":", label=f"uniform: log2 {result['classes']}")
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    axes[0, 0].set_xlabel("labels sent")
    axes[0, 0].set_ylabel("cumulative code length (kbits)")
    axes[0, 0].set_title("prequential code length")
    axes[0, 1].set_xlabel("end of the coded block")
    axes[0, 1].set_ylabel("bits per label in the block")
    axes[0, 1].set_title("cost per label as the data grows")
    return save(fig, out_dir, "description_length")


def intrinsic_dim_figure(result: dict, out_dir: Path) -> Path:
    """Validation and test accuracy of the subspace-trained networks against d, with the direct
    baseline and the 90% target."""
    runs = result["runs"]
    sub = runs[runs["kind"] == "subspace"].sort_values("d")
    fig, axes = figure(1, 1, width=5.2, height=3.0)
    ax = axes[0, 0]
    ax.plot(sub["d"], sub["val_acc"], "-o", ms=4, color=COLORS[0], label="subspace: validation")
    ax.plot(sub["d"], sub["test_acc"], "--x", ms=4, color=COLORS[1], label="subspace: test")
    ax.axhline(result["baseline_val_acc"], color="black", lw=1, label=f"direct (D = {result['D']:,}): validation")
    ax.axhline(result["target_val_acc"], color="black", lw=1, ls=":", label="90% of direct")
    if result["d_int90"] is not None:
        ax.axvline(result["d_int90"], color=COLORS[2], lw=1, label=f"d_int90 = {result['d_int90']:,.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel("accuracy")
    ax.set_title("intrinsic dimension: training in random d-dimensional subspaces")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "intrinsic_dim")


def lottery_figure(table: pd.DataFrame, out_dir: Path) -> Path:
    """Test accuracy of the ticket and of its re-initialized control against the weights remaining."""
    fig, axes = figure(1, 1, width=5.2, height=3.0)
    ax = axes[0, 0]
    for i, (arm, label) in enumerate((("ticket", "ticket (reset to init)"), ("reinit", "same mask, re-initialized"))):
        part = table[table["arm"] == arm].sort_values("weights_remaining", ascending=False)
        if arm == "reinit":  # the dense round has no control; start the line at the dense network
            part = pd.concat([table[table["round"] == 0], part])
        ax.plot(100 * part["weights_remaining"], part["test_acc"], "-o" if arm == "ticket" else "--x", ms=4,
                color=COLORS[i], label=label)
    ax.set_xscale("log")
    ticks = sorted(set(100 * table["weights_remaining"]), reverse=True)
    ax.set_xticks(ticks, [f"{t:.0f}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy")
    ax.set_title("lottery ticket: iterative magnitude pruning")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "lottery")
