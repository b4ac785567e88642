"""Explicit regularization ablation (Zhang, Bengio, Hardt, Recht & Vinyals 2017, "Understanding deep
learning requires rethinking generalization", Table 1).

The same network is trained in every cell of the grid weight decay on/off x dropout on/off x data
augmentation (random shifts) on/off, on the true labels and on uniformly random labels. Zhang et
al. found that the explicit regularizers move test accuracy by a few points but are neither
necessary for generalization nor able to stop the network from memorizing random labels.

Within a replicate every cell starts from the same initialization and sees the same data order
(both derive from the seed), so the cells differ only in the regularizer. Weight decay and
augmentation are per-model settings of the engine (``ModelJob.weight_decay``, ``ModelJob.augment``),
so those cells train together; dropout is part of the architecture (a dropout model has extra
``Dropout`` modules that shift the parameter names, and the shared template decides whether
dropout runs), so the grid is two engine calls, one per dropout setting - the two units of work.
Training accuracy is measured on the un-augmented training set with dropout off.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator
from torch import nn

from genlab.data import corrupt_labels
from genlab.data.augment import RandomShift
from genlab.engine import InputGroup, ModelJob, train_models
from genlab.errors import UserError
from genlab.plotting import COLORS, figure, save
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, ModelSpec, OptimSpec, StudySpec
from genlab.spec.fields import Loss
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset

REGULARIZERS = ("wd", "dropout", "aug")
UNITS = ("dropout_off", "dropout_on")
LABELS = ("true", "random")
MEMORIZED = 0.95
"""Training accuracy on random labels that counts as memorized (the issue's criterion)."""

# Zhang et al. 2017, Table 1, CIFAR-10, Inception (random crop, weight decay) -> train / test accuracy.
PAPER_TABLE1 = (
    ("Inception, crop + weight decay", "100.0% / 89.05%"),
    ("Inception, crop only", "100.0% / 89.31%"),
    ("Inception, weight decay only", "100.0% / 86.03%"),
    ("Inception, no regularizer", "100.0% / 85.75%"),
    ("Inception, random labels, no regularizer", "100.0% / 9.78%"),
)


class RegularizationSpec(StudySpec):
    data: DataSpec = DataSpec()
    network: ModelSpec = ModelSpec(dropout=0.2)
    optim: OptimSpec = OptimSpec(weight_decay=5e-4)
    loss: Loss = Field("ce", description="cross-entropy, or squared error on one-hot targets")
    max_shift: int = Field(1, ge=1, le=8, description="augmentation: largest random shift in pixels (samples for 1-D "
                           "signals), per axis")
    shift_padding: Literal["replicate", "zeros"] = Field("replicate", description="augmentation: how the border "
                                                         "uncovered by a shift is filled")
    stop_train_acc: float = Field(1.0, gt=0.0, le=1.0, description="a model stops once its (un-augmented) training "
                                  "accuracy reaches this")
    eval_every: int = Field(1, ge=1, description="epochs between evaluations of train/test accuracy (the stop rule is "
                            "checked then)")

    help_texts = {"weight_decay": "L2 weight decay of the cells with weight decay on (0 in the others)",
                  "dropout": "dropout probability after each hidden layer in the cells with dropout on"}

    @model_validator(mode="after")
    def _regularizers_on(self) -> "RegularizationSpec":
        for name, value in (("weight_decay", self.optim.weight_decay), ("dropout", self.network.dropout)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0: it is the {name} of the cells with it on (got {value})")
        return self

    presets = {
        "quick": dict(widths=[512], optimizer="adam", lr=0.002, batch_size=128, epochs=250, n_train=1000,
                      stop_train_acc=0.99, eval_every=5, seeds=[0]),
        "paper": dict(widths=[512], optimizer="sgd", lr=0.01, momentum=0.9, batch_size=128, epochs=1000,
                      max_shift=2, seeds=[0, 1, 2]),
        "cifar": cifar_preset("regularization"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(widths=[32], optimizer="adam", lr=0.003, batch_size=64, epochs=2, n_train=200, n_test=100,
                      seeds=[0]),
    }


def cell_name(wd: bool, dropout: bool, aug: bool) -> str:
    """'none' or the regularizers that are on, joined by '+' (e.g. 'wd+aug')."""
    on = [name for name, flag in zip(REGULARIZERS, (wd, dropout, aug)) if flag]
    return "+".join(on) if on else "none"


def cell_order() -> list[str]:
    """The 8 cells, from no regularizer to all three."""
    flags = sorted(itertools.product((False, True), repeat=3), key=lambda f: (sum(f), [not x for x in f]))
    return [cell_name(*f) for f in flags]


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) for m in model.modules())


@register
class Regularization(Study):
    name = "regularization"
    title = "Explicit regularization: weight decay, dropout and augmentation vs memorization"
    question = "Do explicit regularizers explain generalization, or stop the network from memorizing random labels?"
    citation = "Zhang et al. 2017, Understanding deep learning requires rethinking generalization, Table 1"
    Spec = RegularizationSpec
    result_columns = ("cell", "labels", "seed", "weight_decay_on", "dropout_on", "augmentation_on",
                      "train_acc", "test_acc", "fit", "epochs")

    def estimate_seconds(self, spec: RegularizationSpec) -> float:
        n = spec.data.n_train or 4000
        return 40.0 * len(spec.seeds) * (n / 1000) * (spec.optim.epochs / 100) * (sum(spec.network.widths) / 512)

    def units(self, spec: RegularizationSpec) -> list[Unit]:
        return [Unit(key, {"dropout": on}) for key, on in zip(UNITS, (False, True))]

    def run_unit(self, spec: RegularizationSpec, unit: Unit, ctx) -> UnitResult:
        dropout_on = unit["dropout"]
        data = spec.data.load()
        probe = spec.network.build(data, seed=0)
        if not _has_dropout(probe):
            raise UserError(f"model {spec.network.model!r} has no dropout layers; use mlp or lenet for the "
                            "regularization study")
        shift = RandomShift(spec.max_shift, spec.shift_padding)
        jobs, info = [], []
        for seed in spec.seeds:
            random_labels, _ = corrupt_labels(data.y_train.numpy(), 1.0, data.num_classes,
                                              derive_seed(seed, "regularization", "random-labels"))
            targets = {"true": data.y_train, "random": torch.from_numpy(random_labels)}
            for labels, wd, aug in itertools.product(LABELS, (False, True), (False, True)):
                model = spec.network.build(data, seed, dropout=spec.network.dropout if dropout_on else 0.0)
                cell = cell_name(wd, dropout_on, aug)
                jobs.append(ModelJob(f"{cell}|{labels}|seed{seed}", model, seed=seed, y_train=targets[labels],
                                     weight_decay=spec.optim.weight_decay if wd else 0.0,
                                     augment=shift if aug else None))
                info.append({"cell": cell, "labels": labels, "seed": seed, "weight_decay_on": wd,
                             "dropout_on": dropout_on, "augmentation_on": aug})
        config = spec.optim.train_config(spec.loss, weight_decay=0.0, stop_train_acc=spec.stop_train_acc,
                                         eval_every=spec.eval_every, device=spec.device,
                                         eval_test="final")  # curves: train accuracy only
        ctx.progress.start_unit(unit.key, config.epochs, len(jobs))
        outcome = train_models(jobs, [InputGroup(data.x_train, data.x_test, data.y_test)], config,
                               on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot())
        params = sum(p.numel() for p in jobs[0].module.parameters())
        rows = [{**meta, "weight_decay": spec.optim.weight_decay if meta["weight_decay_on"] else 0.0,
                 "dropout": spec.network.dropout if dropout_on else 0.0,
                 "max_shift": spec.max_shift if meta["augmentation_on"] else 0,
                 "dataset": spec.data.dataset, "num_classes": data.num_classes, "model": spec.network.model,
                 "params": params,
                 "train_acc": o.train_acc, "test_acc": o.test_acc, "train_loss": o.train_loss,
                 "test_loss": o.test_loss, "fit": o.fit, "steps_to_fit": o.steps_to_fit,
                 "epochs_to_fit": o.epochs_to_fit, "epochs": o.epochs, "steps": o.steps,
                 "diverged": o.diverged}
                for meta, o in zip(info, outcome.outcomes)]
        by_key = {job.key: meta for job, meta in zip(jobs, info)}
        curves = [{**c, "cell": by_key[c["key"]]["cell"], "labels": by_key[c["key"]]["labels"],
                   "seed": by_key[c["key"]]["seed"]} for c in outcome.curves]
        return UnitResult(rows, curves)

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        order = [c for c in cell_order() if c in set(results["cell"])]
        stats = _cell_stats(results)
        fig, axes = figure(3, width=4.8, height=4.4)
        y = np.arange(len(order))
        for ax, labels, title in ((axes[0, 0], "true", "(a) true labels"), (axes[0, 1], "random", "(b) random labels")):
            part = stats[stats["labels"] == labels].set_index("cell").reindex(order)
            ax.barh(y + 0.2, part["train_acc"] * 100, 0.4, xerr=part["train_sd"].fillna(0) * 100,
                    color=COLORS[0], label="train (un-augmented)")
            ax.barh(y - 0.2, part["test_acc"] * 100, 0.4, xerr=part["test_sd"].fillna(0) * 100,
                    color=COLORS[1], label="test")
            for yi, (tr, te) in enumerate(zip(part["train_acc"], part["test_acc"])):
                ax.text(min(tr * 100, 99) , yi + 0.2, f"{tr:.1%}", va="center", ha="right", fontsize=7, color="white")
                ax.text(min(te * 100, 99), yi - 0.2, f"{te:.1%}", va="center", ha="right", fontsize=7, color="white")
            ax.set_yticks(y, order)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel("accuracy (%)")
            ax.set_title(title)
            if labels == "random":
                ax.axvline(MEMORIZED * 100, ls="--", color="gray", lw=1, label=f"{MEMORIZED:.0%} (memorized)")
                ax.axvline(100 / results["num_classes"].iloc[0], ls=":", color="gray", lw=1, label="chance")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7)
        ax = axes[0, 2]
        seed = curves["seed"].min() if len(curves) else None
        for i, cell in enumerate(order):
            c = curves[(curves["cell"] == cell) & (curves["labels"] == "random") & (curves["seed"] == seed)]
            if len(c):
                ax.plot(c["epoch"], c["train_acc"] * 100, label=cell, color=COLORS[i % 10], lw=1.4,
                        ls="-" if "aug" not in cell else "--")
        ax.axhline(MEMORIZED * 100, ls="--", color="gray", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("train accuracy on random labels (%)")
        ax.set_ylim(0, 101)
        ax.set_title(f"(c) memorizing random labels (seed {seed})")
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        fig.suptitle(f"Explicit regularization: {spec.network.model} {spec.network.widths} on {spec.data.dataset} "
                     f"(wd {spec.optim.weight_decay:g}, dropout {spec.network.dropout:g}, shifts <= {spec.max_shift})")
        return [save(fig, out_dir, "regularization")]

    # ----- reading --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        stats = _cell_stats(results).set_index(["labels", "cell"])
        true, rand = stats.loc["true"], stats.loc["random"]
        base = true.loc["none", "test_acc"] if "none" in true.index else np.nan
        best, worst = true["test_acc"].idxmax(), true["test_acc"].idxmin()
        spread = true["test_acc"].max() - true["test_acc"].min()
        effects = main_effects(results[results["labels"] == "true"], "test_acc")
        short = rand[rand["train_acc"] < MEMORIZED]
        rising = _final_rise(curves)
        if len(short):
            gaps = "; ".join(
                f"{cell}: {row.train_acc:.1%} train accuracy after {row.epochs:.0f} epochs, "
                f"{(MEMORIZED - row.train_acc) * 100:.1f} points short"
                + (f" (train accuracy changed {rising[cell] * 100:+.1f} points over the last evaluation interval)"
                   if cell in rising else "")
                for cell, row in short.iterrows())
            memo = (f"Random labels were NOT memorized (< {MEMORIZED:.0%}) in {len(short)}/{len(rand)} cells within "
                    f"the budget: {gaps}.")
        else:
            memo = (f"Random labels were memorized in every cell: train accuracy {rand['train_acc'].min():.1%} "
                    f"to {rand['train_acc'].max():.1%}, test accuracy {rand['test_acc'].min():.1%} to "
                    f"{rand['test_acc'].max():.1%} (chance {1 / results['num_classes'].iloc[0]:.0%}).")
        verdict = (f"true labels: test accuracy {true['test_acc'].min():.1%}..{true['test_acc'].max():.1%} across the "
                   f"8 cells (no regularizer {base:.1%}); random labels: train accuracy >= "
                   f"{rand['train_acc'].min():.1%} in every cell")
        reading = (
            f"The {spec.network.model} {spec.network.widths} ({int(results['params'].iloc[0]):,} parameters, "
                   f"{results['seed'].nunique()} "
            f"seed(s), {spec.optim.optimizer} lr {spec.optim.lr:g}, {spec.data.n_train or 'all'} training examples of "
                   f"{spec.data.dataset}) was "
            f"trained in all 8 cells of weight decay {spec.optim.weight_decay:g} x dropout {spec.network.dropout:g} x "
                   "random shifts "
            f"of up to {spec.max_shift} on/off. On true labels the best cell is {best} "
                   f"({true.loc[best, 'test_acc']:.1%} "
            f"test accuracy) and the worst {worst} ({true.loc[worst, 'test_acc']:.1%}), a spread of {spread * 100:.1f} "
            f"points around {base:.1%} without any regularizer. Average effect of switching a regularizer on "
            "(test accuracy, points): " + ", ".join(f"{k} {v * 100:+.1f}" for k, v in effects.items()) + ". "
            + memo + _speed(results, spec) + _conclusion(spread, short.index.tolist()))
        refs = [(f"Table 1: {what} (train / test)", paper, "") for what, paper in PAPER_TABLE1]
        refs += [("ours: no regularizer, true labels (train / test)", "",
                  f"{true.loc['none', 'train_acc']:.1%} / "
                  f"{true.loc['none', 'test_acc']:.1%}" if "none" in true.index else "n/a"),
                 ("ours: best cell, true labels (train / test)", "",
                  f"{best}: {true.loc[best, 'train_acc']:.1%} / {true.loc[best, 'test_acc']:.1%}"),
                 ("ours: random labels, lowest train accuracy over cells", "100.0%",
                  f"{rand['train_acc'].idxmin()}: {rand['train_acc'].min():.1%}")]
        chance = 1 / results["num_classes"].iloc[0]
        checks = [(f"random labels memorized (>= {MEMORIZED:.0%} train accuracy) in every regularization cell",
                   bool(len(short) == 0)),
                  ("random-label test accuracy within 10 points of chance in every cell",
                   bool((rand["test_acc"] <= chance + 0.10).all())),
                  ("regularizers move true-label test accuracy by a few points (spread over cells <= 10 points)",
                   bool(spread <= 0.10))]
        return Summary(verdict, reading, refs, checks)


def _speed(results: pd.DataFrame, spec) -> str:
    """How long memorizing random labels took with and without augmentation, from the epoch counts."""
    random = results[results["labels"] == "random"]
    parts = []
    for aug, name in ((False, "without augmentation"), (True, "with augmentation")):
        part = random[random["augmentation_on"].astype(bool) == aug]
        if not len(part):
            continue
        unfinished = int((~part["fit"].astype(bool)).sum())
        parts.append(f"{name} {part['epochs'].min():.0f}-{part['epochs'].max():.0f} epochs"
                     + (f" ({unfinished} of {len(part)} models still below {spec.stop_train_acc:.0%} at the "
                        f"{spec.optim.epochs}-epoch budget)" if unfinished else ""))
    return (f" Training on random labels ran (to {spec.stop_train_acc:.0%} train accuracy or the budget) "
            + " and ".join(parts) + ".") if parts else ""


def _conclusion(spread: float, unmemorized: list[str]) -> str:
    """The closing sentence, chosen by the measured spread and the cells that did not memorize."""
    tune = (f" Switching regularizers moved test accuracy by at most {spread * 100:.1f} points, "
            "and the network without any regularizer generalizes on its own")
    if not unmemorized:
        return tune + "; no regularizer took away its capacity to fit random labels."
    return (tune + f"; within this budget {', '.join(unmemorized)} kept random-label training accuracy below "
            f"{MEMORIZED:.0%} (a slowdown or a prevention: compare with a longer budget).")


def _cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of train/test accuracy per (labels, cell)."""
    return results.groupby(["labels", "cell"]).agg(
        train_acc=("train_acc", "mean"), train_sd=("train_acc", "std"),
        test_acc=("test_acc", "mean"), test_sd=("test_acc", "std"), epochs=("epochs", "mean")).reset_index()


def main_effects(rows: pd.DataFrame, column: str) -> dict[str, float]:
    """Mean of ``column`` over the cells with each regularizer on minus the mean with it off.

    In a full 2x2x2 factorial this is the standard main effect of each factor.
    """
    flags = {"wd": "weight_decay_on", "dropout": "dropout_on", "aug": "augmentation_on"}
    return {name: float(rows.loc[rows[flag].astype(bool), column].mean() - rows.loc[~rows[flag].astype(bool),
                                                                                    column].mean())
            for name, flag in flags.items()}


def _final_rise(curves: pd.DataFrame) -> dict[str, float]:
    """Per cell (random labels, mean over seeds): train-accuracy change between the last two evaluations."""
    out = {}
    random = curves[curves["labels"] == "random"] if len(curves) else curves
    for cell, part in random.groupby("cell"):
        rises = []
        for _, seq in part.groupby("seed"):
            seq = seq.sort_values("epoch")
            if len(seq) >= 2:
                rises.append(float(seq["train_acc"].iloc[-1] - seq["train_acc"].iloc[-2]))
        if rises:
            out[cell] = float(np.mean(rises))
    return out
