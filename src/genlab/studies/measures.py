"""Which complexity measure predicts generalization? (Jiang, Neyshabur, Mobahi, Krishnan & Bengio
2019, "Fantastic generalization measures and where to find them", ICLR 2020).

A grid of MLPs is trained over width x depth x learning rate x batch size x label noise, each to
the same stop rule (training accuracy on its own - possibly noisy - labels reaching a target),
so that the models differ in how well they generalize and not in how well they fit. For every
model the measures of :func:`genlab.probes.measures.compute_measures` are computed on its training set
(norms, distance from initialization, spectral/Frobenius products, path norm, margin-normalized
forms, PAC-Bayes sharpness and magnitude-aware sharpness), plus the optimization-speed measure
"steps until the training cross-entropy first falls to ``speed_loss``". The generalization gap is
the 0-1 gap: training accuracy (on the labels trained on) minus test accuracy (on clean test
labels). Each measure is ranked by Kendall's tau with the gap, overall and granulated (Jiang et
al.'s eq. 4: one hyperparameter varied at a time).

Models that share a batch size and a depth train together in one engine call (widths differ
within a call: the engine zero-pads them); the initial parameters for the distance from
initialization are the engine's epoch-0 checkpoint.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
import warnings
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
from pydantic import AfterValidator, Field
from torch import nn

from genlab.data import corrupt_labels
from genlab.engine import InputGroup, ModelJob, StackedModels, train_models
from genlab.models import build_model
from genlab.plotting import COLORS, figure, save
from genlab.probes.measures import compute_measures, rank_measures
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, SharedOptimSpec, StudySpec
from genlab.spec.fields import Init, Loss, PositiveInts, Probabilities
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset

HYPERPARAMETERS = ("width", "depth", "lr", "batch_size", "label_noise")
MEASURES = (
    "params", "l2_norm", "dist_from_init", "spectral_product", "frobenius_product", "path_norm",
    "inverse_margin", "spectral_over_margin", "sum_of_spectral_over_margin", "frobenius_over_margin",
    "sum_of_frobenius_over_margin", "path_norm_over_margin", "pacbayes_sharpness",
    "magnitude_aware_sharpness", "steps_to_loss",
)
"""The measures ranked, each oriented so that larger should mean a larger gap (Jiang et al.)."""

RANKING = "ranking"


def _positive_rates(values: list[float]) -> list[float]:
    if any(not x > 0 for x in values):
        raise ValueError(f"every learning rate must be > 0, got {values}")
    return values


class MeasuresSpec(StudySpec):
    data: DataSpec = DataSpec()
    optim: SharedOptimSpec = SharedOptimSpec()
    loss: Loss = Field("ce", description="cross-entropy, or squared error on one-hot targets")
    init: Init = Field("default", description="weight initializer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer")
    sweep_model: Literal["mlp", "nin"] = Field("mlp", description="network family swept: mlp (width = hidden units, "
                                              "depth = hidden layers) or nin (Jiang et al.: width = channels, depth = "
                                              "NiN blocks)")
    sweep_widths: PositiveInts = Field([64, 256], description="hidden widths swept (all hidden layers of a model share "
                                       "the width)")
    sweep_depths: PositiveInts = Field([1, 3], description="numbers of hidden layers swept")
    sweep_lrs: Annotated[list[float], Field(min_length=1), AfterValidator(_positive_rates)] = Field(
        [0.03, 0.1], description="learning rates swept")
    sweep_batch_sizes: PositiveInts = Field([64, 256], description="minibatch sizes swept (one engine call per batch "
                                            "size and depth)")
    sweep_label_noise: Probabilities = Field([0.0, 0.1], description="label corruption probabilities swept (uniform "
                                             "redraw, as Zhang et al.)")
    stop_train_acc: float = Field(0.99, gt=0.0, le=1.0, description="stop rule: a model stops once its training "
                                  "accuracy (on its own labels) reaches this")
    speed_loss: float = Field(0.1, gt=0.0, description="optimization-speed measure: steps until the training "
                              "cross-entropy first falls to this")
    sharpness_points: int = Field(500, ge=10, description="training points (a seeded subsample) used by the sharpness "
                                  "searches")
    sharpness_draws: int = Field(4, ge=1, description="Gaussian noise draws per sharpness evaluation")
    sharpness_target: float = Field(0.1, gt=0.0, lt=1.0, description="sharpness: the training error may rise by this "
                                    "much")

    aliases = {"widths": "sweep_widths", "depths": "sweep_depths", "lr": "sweep_lrs", "batch_size": "sweep_batch_sizes",
               "label_noise": "sweep_label_noise"}

    presets = {
        "quick": dict(optimizer="sgd", momentum=0.9, epochs=100, n_train=1000, seeds=[0]),
        "paper": dict(optimizer="sgd", momentum=0.9, epochs=300, sweep_widths=[128, 512, 1024], sweep_depths=[1, 2, 4],
                      sweep_lrs=[0.01, 0.03, 0.1], sweep_batch_sizes=[32, 128, 512], sweep_label_noise=[0.0, 0.1, 0.2],
                      stop_train_acc=1.0, sharpness_points=2000, seeds=[0]),
        "cifar": cifar_preset("measures"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(optimizer="sgd", momentum=0.9, epochs=2, n_train=200, n_test=100, sweep_widths=[8, 16],
                      sweep_depths=[1], sweep_lrs=[0.05, 0.1], sweep_batch_sizes=[64], sweep_label_noise=[0.0, 0.2],
                      sharpness_points=50,
                      sharpness_draws=1, seeds=[0]),
    }


def sweep_options(spec: MeasuresSpec, width: int, depth: int) -> dict:
    """Builder options of the swept network at ``width`` and ``depth``."""
    if spec.sweep_model == "nin":
        return {"width": width, "depth": depth}
    return {"widths": [width] * depth, "dropout": spec.dropout}


def sweep_groups(spec: MeasuresSpec) -> list[tuple[int, int]]:
    """(batch size, depth) of each engine call."""
    return list(itertools.product(spec.sweep_batch_sizes, spec.sweep_depths))


def steps_to_loss(curve: list[dict], threshold: float) -> float:
    """Step count at the first evaluation whose training loss is <= ``threshold`` (NaN if never)."""
    for point in sorted(curve, key=lambda c: c["step"]):
        if point["epoch"] > 0 and point["train_loss"] <= threshold:
            return float(point["step"])
    return math.nan


def module_at(stack: StackedModels, params: dict[str, torch.Tensor], k: int, like: nn.Module) -> nn.Module:
    """Model ``k`` of stacked (padded) ``params`` as a standalone module shaped like ``like``."""
    net = copy.deepcopy(like)
    net.load_state_dict(stack.state_dict(k, params))
    return net


class _WidthContext:
    """A unit's context whose engine snapshot is named after one width of the sweep."""

    def __init__(self, ctx, width: int):
        self._ctx, self._width = ctx, width
        self.progress = ctx.progress

    def snapshot(self, name: str = "") -> Path:
        return self._ctx.snapshot(f"w{self._width}{'-' + name if name else ''}")


@register
class MeasuresStudy(Study):
    name = "measures"
    title = "Generalization measures: which complexity measure ranks models by their generalization gap?"
    question = ("Across a sweep of trained networks, which measures (norms, margins, sharpness, speed) track the "
                "generalization gap?")
    citation = "Jiang et al. 2019, Fantastic generalization measures and where to find them (Kendall tau ranking)"
    Spec = MeasuresSpec
    result_columns = ("kind", "rank", "measure", "tau", "granulated_tau", "model_id", "gen_gap", "test_acc")

    def estimate_seconds(self, spec: MeasuresSpec) -> float:
        models = (len(spec.sweep_widths) * len(spec.sweep_depths) * len(spec.sweep_lrs) * len(spec.sweep_batch_sizes)
                  * len(spec.sweep_label_noise))
        n = spec.data.n_train or 4000
        return 1.8 * models * len(spec.seeds) * (n / 1000) * (max(spec.sweep_widths) / 256) * (spec.optim.epochs / 100)

    def units(self, spec: MeasuresSpec) -> list[Unit]:
        """One unit per (batch size, depth) engine call, and the ranking over all of their models
        (listed first: it is what a reader looks for; it runs last)."""
        groups = [Unit(f"group-bs{batch_size}-depth{depth}", {"batch_size": batch_size, "depth": depth})
                  for batch_size, depth in sweep_groups(spec)]
        return [Unit(RANKING, needs=tuple(g.key for g in groups)), *groups]

    def run_unit(self, spec: MeasuresSpec, unit: Unit, ctx) -> UnitResult:
        if unit.key == RANKING:
            return UnitResult(ranking_rows([row for key in unit.needs for row in ctx.rows_of(key).rows]))
        data = spec.data.load()
        if spec.sweep_model == "mlp":
            done = self._train_group(spec, data, unit["batch_size"], unit["depth"], ctx)
            return UnitResult(done["rows"], done["curves"])
        # NiNs of different widths: BatchNorm buffers of different sizes do not stack, one engine call per width
        rows, curves = [], []
        for width in spec.sweep_widths:
            done = self._train_group(spec.replace(sweep_widths=[width]), data, unit["batch_size"], unit["depth"],
                                     _WidthContext(ctx, width))
            rows += done["rows"]
            curves += done["curves"]
        return UnitResult(rows, curves)

    def _train_group(self, spec: MeasuresSpec, data, batch_size: int, depth: int, ctx) -> dict:
        """One engine call: every width x lr x label noise x seed at this batch size and depth."""
        x_train, y_clean = data.x_train, data.y_train
        jobs, info = [], []
        for width, lr, noise, seed in itertools.product(spec.sweep_widths, spec.sweep_lrs, spec.sweep_label_noise,
                                                        spec.seeds):
            labels = y_clean.numpy()
            if noise > 0:
                labels = corrupt_labels(labels, noise, data.num_classes, derive_seed(seed, "measures-noise", noise))[0]
            model = build_model(spec.sweep_model, data.input_shape, data.num_classes, init=spec.init,
                                seed=derive_seed(seed, "measures-init", width, depth),
                                **sweep_options(spec, width, depth))
            key = f"w{width}-d{depth}-lr{lr:g}-bs{batch_size}-noise{noise:g}-seed{seed}"
            # one data order per replicate: the models of a call then share each batch (a faster forward)
            jobs.append(ModelJob(key, model, seed=derive_seed(seed, "measures-order"), y_train=torch.from_numpy(labels),
                                 lr=lr))
            info.append({"width": width, "depth": depth, "lr": lr, "batch_size": batch_size, "label_noise": noise,
                         "seed": seed, "fraction_wrong": float((labels != y_clean.numpy()).mean())})
        ctx.progress.start_unit(f"batch size {batch_size}, depth {depth}", spec.optim.epochs, len(jobs))
        config = spec.optim.train_config(spec.loss, lr=spec.sweep_lrs[0], batch_size=batch_size,
                                         stop_train_acc=spec.stop_train_acc, eval_every=1, checkpoint_epochs=(0,),
                                         device=spec.device)
        outcome = train_models(jobs, [InputGroup(x_train, data.x_test, data.y_test)], config,
                               on_epoch=ctx.progress.epoch,
                               snapshot=ctx.snapshot())
        started = time.perf_counter()
        rows, curves = [], []
        for k, (job, meta, o) in enumerate(zip(jobs, info, outcome.outcomes)):
            trained = outcome.stack.module(k, like=job.module)
            initial = module_at(outcome.stack, outcome.checkpoints[0], k, job.module)
            own_curve = [c for c in outcome.curves if c["key"] == job.key]
            measures = {"steps_to_loss": steps_to_loss(own_curve, spec.speed_loss)}
            if not o.diverged:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    found = compute_measures(trained, (x_train, job.y_train), init_model=initial,
                                             seed=derive_seed(meta["seed"], "sharpness", job.key), device=spec.device,
                                             sharpness_points=spec.sharpness_points,
                                             sharpness_draws=spec.sharpness_draws,
                                             sharpness_target=spec.sharpness_target)
                found.pop("train_loss"), found.pop("train_acc")
                found["measure_warnings"] = "; ".join(str(w.message) for w in caught) or None
                found["inverse_margin"] = 1.0 / found["margin"] ** 2 if found["margin"] > 0 else math.nan
                measures.update(found)
            row = {"kind": "model", "model_id": job.key, **meta, "train_acc": o.train_acc, "test_acc": o.test_acc,
                   "train_loss": o.train_loss, "test_loss": o.test_loss, "gen_gap": o.train_acc - o.test_acc,
                   "loss_gap": o.test_loss - o.train_loss, "fit": o.fit, "steps_to_fit": o.steps_to_fit,
                   "epochs": o.epochs, "steps": o.steps, "diverged": o.diverged, "dataset": spec.data.dataset,
                   **measures}
            rows.append({k_: (None if isinstance(v, float) and not math.isfinite(v) else v) for k_, v in row.items()})
            curves += [{**c, **{h: meta[h] for h in HYPERPARAMETERS}, "seed": meta["seed"]} for c in own_curve]
        flagged = sum(1 for r in rows if r.get("measure_warnings"))
        ctx.progress.log(f"measures: batch size {batch_size}, depth {depth}: {len(jobs)} models trained in "
                         f"{outcome.seconds:.1f} s, measures computed in {time.perf_counter() - started:.1f} s"
                         + (f" ({flagged} with a sharpness search at its limit: see "
                            "measure_warnings)" if flagged else ""))
        return {"rows": rows, "curves": curves}

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        models = results[results["kind"] == "model"]
        fitted = models[models["fit"].astype(bool)]
        models = fitted if len(fitted) >= 2 else models
        ranked = results[results["kind"] == "rank"].sort_values("rank")
        top = [m for m in ranked["measure"] if ranked.loc[ranked.measure == m, "tau"].notna().any()][:3]
        fig, axes = figure(4, width=4.2, height=3.8)
        ax = axes[0, 0]
        order = ranked.iloc[::-1]
        colors = [COLORS[2] if t >= 0 else COLORS[3] for t in order["tau"].fillna(0)]
        ax.barh(order["measure"], order["tau"].fillna(0), color=colors)
        if "granulated_tau" in order:
            ax.scatter(order["granulated_tau"].fillna(0), order["measure"], color="black", s=12, zorder=3,
                       label="granulated tau (Jiang eq. 4)")
            ax.legend(loc="best", fontsize=7)
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_xlim(-1, 1)
        ax.set_xlabel("Kendall tau with the generalization gap")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"(a) Kendall tau over {len(models)} fitted models")
        noise_levels = sorted(models["label_noise"].unique())
        markers = dict(zip(sorted(models["depth"].unique()), "os^vD"))
        for i, measure in enumerate(top):
            ax = axes[0, i + 1]
            for j, noise in enumerate(noise_levels):
                for depth, marker in markers.items():
                    part = models[(models["label_noise"] == noise) & (models["depth"] == depth)]
                    ax.scatter(part[measure], part["gen_gap"] * 100, color=COLORS[j % 10], marker=marker, s=22,
                               label=f"noise {noise:g}, depth {int(depth)}")
            values = models[measure].dropna()
            if len(values) and (values > 0).all() and values.max() / values.min() > 20:
                ax.set_xscale("log")
            tau = float(ranked.loc[ranked.measure == measure, "tau"].iloc[0])
            ax.set_xlabel(measure.replace("_", " "))
            ax.set_ylabel("generalization gap: train - test accuracy (points)")
            ax.set_title(f"({'bcd'[i]}) {measure.replace('_', ' ')}: tau {tau:+.2f}", fontsize=10)
            if i == 0:
                ax.legend(fontsize=6.5)
        fig.suptitle(f"Generalization measures vs gap: MLPs on {spec.data.dataset} "
                     f"(width x depth x lr x batch x label noise, stop at {spec.stop_train_acc:.0%} train accuracy)")
        return [save(fig, out_dir, "measures")]

    # ----- reading --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        models = results[results["kind"] == "model"]
        ranked = results[results["kind"] == "rank"].sort_values("rank")
        fitted = int(models["fit"].astype(bool).sum())
        valid = ranked[ranked["tau"].notna()]
        listing = ", ".join(f"{r.measure} {r.tau:+.2f}" for r in valid.itertuples())
        top3 = list(valid["measure"].head(3))
        favoured = {"pacbayes_sharpness", "magnitude_aware_sharpness", "steps_to_loss"}
        products = ", ".join(f"{m} {float(valid.loc[valid.measure == m, 'tau'].iloc[0]):+.2f}"
                             for m in ("spectral_product", "frobenius_product") if m in set(valid["measure"]))
        best = valid.iloc[0] if len(valid) else None
        verdict = (f"best measure {best.measure} (tau {best.tau:+.2f}) over {int(best.n)} models" if best is not None
                   else "no measure could be ranked")
        gran = valid.dropna(subset=["granulated_tau"]) if "granulated_tau" in valid else valid.iloc[0:0]
        gran_best = gran.loc[gran["granulated_tau"].abs().idxmax()] if len(gran) else None
        reading = (
            f"{len(models)} MLPs on {spec.data.n_train or 'all'} {spec.data.dataset} examples ({fitted} reached "
            f"{spec.stop_train_acc:.0%} training accuracy within {spec.optim.epochs} epochs; the ranking uses "
            f"{'those' if fitted >= 2 else 'all'}). The generalization gap (train minus test accuracy) ranges from "
            f"{models['gen_gap'].min() * 100:.1f} to {models['gen_gap'].max() * 100:.1f} points. Kendall tau with the "
                   "gap: "
            f"{listing}. "
            + (f"Granulated (one hyperparameter at a time) the strongest is {gran_best.measure} "
               f"({gran_best.granulated_tau:+.2f}). " if gran_best is not None else "")
            + f"Top three by |tau|: {', '.join(top3)}. Jiang et al. found sharpness/PAC-Bayes measures "
                   "(magnitude-aware "
            "in particular) and optimization speed the most predictive and norm products weak or negatively "
                   "correlated; "
            + (f"here {', '.join(sorted(favoured & set(top3)))} {'is' if len(favoured & set(top3)) == 1 else 'are'} in "
               "the "
               "top three, as there" if favoured & set(top3) else "here none of those is in the top three")
            + (f", and the norm products have tau {products}." if products else ".")
            + _noise_sentence(explained_share(models, "label_noise", "gen_gap")))
        refs = [("best-correlated measures", "magnitude-aware sharpness / PAC-Bayes flatness, optimization speed",
                 ", ".join(top3)),
                ("norm products (spectral, Frobenius)", "weak or negative correlation", products)]
        checks = [("at least 24 models in the sweep", bool(len(models) >= 24)),
                  ("at least 90% of the models reached the stop rule", bool(fitted >= 0.9 * len(models))),
                  ("a sharpness or optimization-speed measure is among the top 3 by |tau| (Jiang et al.)",
                   bool(favoured & set(top3)))]
        return Summary(verdict, reading, refs, checks)


def ranking_rows(rows: list[dict]) -> list[dict]:
    """The measures ranked by Kendall tau with the generalization gap, over the fitted models of
    ``rows`` (all of them when fewer than two fitted), as rows of kind ``rank``."""
    table = numeric_measures(pd.DataFrame(rows))
    fitted = table[table["fit"].astype(bool)]
    ranked = rank_measures(fitted if len(fitted) >= 2 else table, "gen_gap", measures=list(MEASURES),
                           hyperparameters=list(HYPERPARAMETERS))
    return [{"kind": "rank", "rank": i + 1, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                               for k, v in r.items()}}
            for i, r in enumerate(ranked.to_dict("records"))]


def explained_share(table: pd.DataFrame, factor: str, column: str) -> float:
    """Between-group sum of squares over total sum of squares of ``column`` grouped by ``factor`` (eta^2)."""
    values = table[column].astype(float)
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return math.nan
    groups = table.groupby(factor)[column]
    between = float((groups.count() * (groups.mean() - values.mean()) ** 2).sum())
    return between / total


def numeric_measures(table: pd.DataFrame) -> pd.DataFrame:
    """The model table with every measure column as float (missing or undefined values as NaN)."""
    table = table.copy()
    for column in MEASURES:
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else math.nan
    return table


def _noise_sentence(share: float) -> str:
    if not math.isfinite(share):
        return ""
    weight = "mostly" if share >= 0.5 else "partly"
    return (f" Label noise alone accounts for {share:.0%} of the gap's variance (between-level share), so the overall "
            "tau "
            f"{weight} rewards measures that track fitting noisy labels; the granulated tau asks the question one "
            "hyperparameter at a time.")
