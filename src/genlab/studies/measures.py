"""Which complexity measure predicts generalization? (Jiang, Neyshabur, Mobahi, Krishnan & Bengio
2019, "Fantastic generalization measures and where to find them", ICLR 2020).

Jiang et al. vary seven hyperparameters - width, depth, learning rate, batch size, dropout,
weight decay and optimizer - and train every network until its training cross-entropy reaches
0.01, so that the models differ in how well they generalize and not in how well they fit. Here
the same axes are varied one at a time around a base network (a grid of 3^7 configurations is out
of a CPU budget): the base configuration, and for each axis the base with that axis set to each of
its other values, every configuration trained from ``len(seeds)`` seeds. The network is an MLP
(``network="mlp"``: width = units of every hidden layer, depth = hidden layers) or Jiang et al.'s
network-in-network (``network="nin"``, :func:`genlab.models.convnets.nin`: width = channels of
every convolution, depth = NiN blocks, BatchNorm, dropout at the end of each block). Label
noise, which Jiang et al. did not vary, is an optional extra axis whose models are ranked
separately.

For every model the measures of :func:`genlab.probes.measures.compute_measures` are computed on its
training set (weights-only norms, distance from initialization, spectral/Frobenius products,
path norm, margin-normalized forms, PAC-Bayes, magnitude-aware, worst-case and Keskar sharpness),
plus the optimization-speed measure "steps until the training cross-entropy first falls to
``speed_loss``" (Jiang's "step.to.0.1"), defined for every model that reached the stop rule. The
generalization gap is the 0-1 gap: training accuracy (on the labels trained on) minus test
accuracy. Each measure is oriented so that a larger value should mean a larger gap, and ranked by
its signed Kendall tau with the gap, every tau over the same models (those that reached the stop
rule with every measure defined); per-axis taus (base + one axis) and their mean are the
one-at-a-time analogue of Jiang's granulated coefficient.

Models that share depth, batch size, dropout and optimizer train together in one engine call
(learning rates and weight decays differ per model; MLP widths too, but NiNs of different widths
train in separate calls: a call pads every model to its widest, and a convolution's cost grows
with the square of its channels). The measures run in eval mode on each model's own parameters and BatchNorm statistics;
the initial network for the distance from initialization is the engine's epoch-0 checkpoint
(parameters and statistics).
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
from pydantic import AfterValidator, Field, model_validator
from torch import nn

from genlab.data import corrupt_labels
from genlab.engine import InputGroup, ModelJob, StackedModels, train_models
from genlab.models import build_model
from genlab.plotting import COLORS, figure, save
from genlab.probes.measures import compute_measures
from genlab.probes.ranking import one_at_a_time_taus, rank_measures
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, SharedOptimSpec, StudySpec
from genlab.spec.fields import Init, Loss
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset
from genlab.threads import intra_op_threads

AXES = ("width", "depth", "lr", "batch_size", "dropout", "weight_decay", "optimizer")
"""Jiang et al.'s seven hyperparameter axes, each varied one at a time around the base."""
NOISE_AXIS = "label_noise"
HYPERPARAMETERS = (*AXES, NOISE_AXIS)
MEASURES = (
    "params", "l2_norm", "dist_from_init", "spectral_product", "frobenius_product", "path_norm",
    "inverse_margin", "spectral_over_margin", "spectral_orig", "spectral_init", "sum_of_spectral_over_margin",
    "frobenius_over_margin", "sum_of_frobenius_over_margin", "path_norm_over_margin", "pacbayes_sharpness",
    "magnitude_aware_sharpness", "worst_case_sharpness", "worst_case_mag_sharpness", "keskar_sharpness",
    "steps_to_loss",
)
"""The measures ranked, each oriented so that larger should mean a larger gap (Jiang et al.)."""
SHARPNESS = ("pacbayes_sharpness", "magnitude_aware_sharpness", "worst_case_sharpness", "worst_case_mag_sharpness",
             "keskar_sharpness")
"""The sharpness / flatness measures, which Jiang et al. found the best predictors."""

RANKING = "ranking"
OptimizerChoice = Literal["sgd", "sgd_plain", "adam", "adamw"]
NETWORKS = {"mlp": "MLPs", "nin": "NiNs"}
"""The networks the sweep can train, and how the figure and the reading name them."""


def _distinct_positive(values: list) -> list:
    if any(not v > 0 for v in values):
        raise ValueError(f"every value must be > 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    return values


def _distinct_nonnegative(values: list[float]) -> list[float]:
    if any(not v >= 0 for v in values):
        raise ValueError(f"every value must be >= 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {values}")
    return values


def _dropouts(values: list[float]) -> list[float]:
    if any(not 0 <= v < 1 for v in values):
        raise ValueError(f"every dropout probability must be in [0, 1), got {values}")
    return _distinct_nonnegative(values)


def _noise_levels(values: list[float]) -> list[float]:
    if any(not 0 < v <= 1 for v in values):
        raise ValueError(f"every label-noise level must be in (0, 1], got {values}")
    return _distinct_nonnegative(values)


AxisInts = Annotated[list[int], AfterValidator(_distinct_positive)]
AxisRates = Annotated[list[float], AfterValidator(_distinct_positive)]
AxisDecays = Annotated[list[float], AfterValidator(_distinct_nonnegative)]
AxisDropouts = Annotated[list[float], AfterValidator(_dropouts)]
NoiseLevels = Annotated[list[float], AfterValidator(_noise_levels)]


class MeasuresSpec(StudySpec):
    data: DataSpec = DataSpec()
    optim: SharedOptimSpec = SharedOptimSpec(epochs=300)
    loss: Loss = Field("ce", description="cross-entropy, or squared error on one-hot targets")
    init: Init = Field("default", description="weight initializer")
    network: Literal["mlp", "nin"] = Field("mlp", description="the networks swept: mlp (width = units of every "
                                           "hidden layer, depth = hidden layers) or nin (Jiang et al.'s "
                                           "network-in-network: width = channels, depth = NiN blocks, BatchNorm)")
    base_width: int = Field(128, gt=0, description="base configuration: width (mlp: units of every hidden layer; "
                            "nin: channels of every convolution)")
    base_depth: int = Field(2, gt=0, description="base configuration: depth (mlp: hidden layers; nin: NiN blocks)")
    base_lr: float = Field(0.05, gt=0.0, description="base configuration: learning rate (of the base optimizer)")
    base_batch_size: int = Field(64, gt=0, description="base configuration: minibatch size")
    base_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="base configuration: dropout after each hidden "
                                "layer (nin: at the end of each block)")
    sweep_widths: AxisInts = Field([32, 256], description="width axis: the other widths tried (one at a time)")
    sweep_depths: AxisInts = Field([1, 4], description="depth axis: the other depths tried")
    sweep_lrs: AxisRates = Field([0.02, 0.2], description="learning-rate axis: the other learning rates tried")
    sweep_batch_sizes: AxisInts = Field([32, 128], description="batch-size axis: the other batch sizes tried")
    sweep_dropouts: AxisDropouts = Field([0.25, 0.5], description="dropout axis: the other dropout rates tried")
    sweep_weight_decays: AxisDecays = Field([3e-4, 1e-3], description="weight-decay axis: the other L2 weight "
                                            "decays tried")
    sweep_optimizers: list[OptimizerChoice] = Field(["adam", "sgd_plain"], description="optimizer axis: the other "
                                                    "optimizers tried (sgd_plain: SGD without momentum)")
    adam_lr: float = Field(1e-3, gt=0.0, description="learning rate of the adam/adamw models of the optimizer axis")
    plain_sgd_lr: float = Field(0.2, gt=0.0, description="learning rate of the sgd_plain models of the optimizer axis")
    sweep_label_noise: NoiseLevels = Field([], description="optional label-noise axis (not one of Jiang's): "
                                           "corruption probabilities of the base configuration (uniform redraw), "
                                           "ranked separately")
    stop_loss: float = Field(0.01, gt=0.0, description="stop rule: a model stops once its training loss (on its "
                             "own labels) falls to this (Jiang et al.: cross-entropy 0.01)")
    speed_loss: float = Field(0.1, gt=0.0, description="optimization-speed measure: steps until the training "
                              "cross-entropy first falls to this")
    sharpness_points: int = Field(500, ge=10, description="training points (a seeded subsample) used by the Gaussian "
                                  "sharpness searches")
    sharpness_draws: int = Field(4, ge=1, description="Gaussian noise draws per sharpness evaluation")
    sharpness_target: float = Field(0.1, gt=0.0, lt=1.0, description="sharpness: the training error may rise by this "
                                    "much")
    worst_case_points: int = Field(250, ge=10, description="training points used by the worst-case sharpness "
                                   "searches")
    worst_case_steps: int = Field(5, ge=1, description="ascent steps per worst-case perturbation search")
    worst_case_bisections: int = Field(4, ge=0, description="bisections of the worst-case radius")

    aliases = {"widths": "sweep_widths", "depths": "sweep_depths", "lr": "sweep_lrs", "batch_size": "sweep_batch_sizes",
               "dropout": "sweep_dropouts", "optimizers": "sweep_optimizers", "label_noise": "sweep_label_noise"}

    @model_validator(mode="after")
    def _stop_before_speed(self) -> "MeasuresSpec":
        if self.loss == "ce" and self.speed_loss < self.stop_loss:
            raise ValueError(f"speed_loss ({self.speed_loss:g}) must be >= stop_loss ({self.stop_loss:g}): a model "
                             "stops at stop_loss, so a lower speed target would never be reached")
        return self

    presets = {
        # FINDINGS sec. 2 ("jiang_lean256"): 15 configurations x 2 seeds = 30 MLPs, 11 engine calls
        "quick": dict(n_train=1000, seeds=[0, 1]),
        "paper": dict(epochs=1000, base_width=256, sweep_widths=[64, 1024], sweep_lrs=[0.01, 0.2],
                      sweep_batch_sizes=[32, 256], sweep_weight_decays=[1e-4, 1e-3], sharpness_points=2000,
                      worst_case_points=1000, worst_case_steps=10, worst_case_bisections=6, seeds=[0, 1, 2]),
        "cifar": cifar_preset("measures"),
        "smoke": dict(epochs=2, n_train=200, n_test=100, base_width=16, sweep_widths=[8], sweep_depths=[],
                      sweep_lrs=[0.1], sweep_batch_sizes=[], sweep_dropouts=[], sweep_weight_decays=[1e-3],
                      sweep_optimizers=[], sharpness_points=50, sharpness_draws=1, worst_case_points=50,
                      worst_case_steps=2, worst_case_bisections=1, seeds=[0]),
    }


# ----- the design ---------------------------------------------------------------------------


def base_config(spec: MeasuresSpec) -> dict:
    """The configuration every axis varies from."""
    return {"network": spec.network, "width": spec.base_width, "depth": spec.base_depth, "lr": spec.base_lr,
            "batch_size": spec.base_batch_size, "dropout": spec.base_dropout,
            "weight_decay": spec.optim.weight_decay, "optimizer": spec.optim.optimizer, NOISE_AXIS: 0.0,
            "axis": "base"}


def optimizer_lr(spec: MeasuresSpec, optimizer: str) -> float:
    """The learning rate of the optimizer axis' models (the base optimizer keeps the base lr)."""
    if optimizer == spec.optim.optimizer:
        return spec.base_lr
    return spec.plain_sgd_lr if optimizer == "sgd_plain" else spec.adam_lr if optimizer.startswith("adam") \
        else spec.base_lr


def sweep_configs(spec: MeasuresSpec) -> list[dict]:
    """The base configuration, then each axis' other values one at a time (values equal to the
    base's are skipped), then the optional label-noise levels of the base configuration."""
    base = base_config(spec)
    values = {"width": spec.sweep_widths, "depth": spec.sweep_depths, "lr": spec.sweep_lrs,
              "batch_size": spec.sweep_batch_sizes, "dropout": spec.sweep_dropouts,
              "weight_decay": spec.sweep_weight_decays, "optimizer": spec.sweep_optimizers,
              NOISE_AXIS: spec.sweep_label_noise}
    configs = [base]
    for axis in HYPERPARAMETERS:
        for value in values[axis]:
            if value == base[axis]:
                continue
            config = {**base, axis: value, "axis": axis}
            if axis == "optimizer":
                config["lr"] = optimizer_lr(spec, value)
            configs.append(config)
    return configs


def call_key(config: dict) -> str:
    """The engine call a configuration trains in (what must be equal across a call's models): for
    NiNs the width too, since a call pads its models to the widest and a NiN's convolutions cost
    ~width^2 (MLP keys carry no network name, as before NiNs were added)."""
    shared = f"depth{config['depth']}-bs{config['batch_size']}-dropout{config['dropout']:g}-{config['optimizer']}"
    return f"nin-w{config['width']}-{shared}" if config["network"] == "nin" else shared


def sweep_groups(spec: MeasuresSpec) -> list[str]:
    """The engine calls of the sweep, in design order."""
    return list(dict.fromkeys(call_key(c) for c in sweep_configs(spec)))


def config_id(config: dict, seed: int) -> str:
    """A model's id: its network (NiN ids start with ``nin-``; MLP ids keep the form they had before,
    which seeds their sharpness searches), axis, hyperparameters and seed."""
    network = "nin-" if config["network"] == "nin" else ""
    return (f"{network}{config['axis']}-w{config['width']}-d{config['depth']}-lr{config['lr']:g}-"
            f"bs{config['batch_size']}-do{config['dropout']:g}-wd{config['weight_decay']:g}-{config['optimizer']}-"
            f"noise{config[NOISE_AXIS]:g}-seed{seed}")


def steps_to_loss(curve: list[dict], threshold: float) -> float:
    """Step count at the first evaluation whose training loss is <= ``threshold`` (NaN if never)."""
    for point in sorted(curve, key=lambda c: c["step"]):
        if point["epoch"] > 0 and point["train_loss"] <= threshold:
            return float(point["step"])
    return math.nan


def one_intra_op_thread():
    """Run the block with one intra-op thread, then restore the caller's count. The measures are
    many small products and SVDs (a 784-128 matrix, a few hundred points) on which a second
    thread's synchronisation costs more than it saves; on a shared machine it cost ~90x for the
    SVDs (0.69 s vs 0.008 s of CPU per 128 x 784 spectral norm, measured under load)."""
    return intra_op_threads(1)


def module_at(stack: StackedModels, params: dict[str, torch.Tensor], k: int, like: nn.Module,
              buffers: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Model ``k`` of stacked (padded) ``params`` as a standalone module shaped like ``like``, with
    its row of the stacked ``buffers`` (BatchNorm statistics; e.g. a checkpoint's
    ``TrainOutcome.checkpoint_buffers[epoch]``), or the stack's current ones when None."""
    state = stack.state_dict(k, params)
    for name, tensor in (buffers or {}).items():
        state[name] = tensor[stack.buffer_region(k, name)].detach().clone()
    net = copy.deepcopy(like)
    net.load_state_dict(state)
    return net


def build_network(spec: MeasuresSpec, data, config: dict, seed: int) -> nn.Module:
    """The initialized network of ``config`` for ``data`` (one initialization per width, depth and seed)."""
    return build_model(config["network"], data.input_shape, data.num_classes, init=spec.init,
                       seed=derive_seed(seed, "measures-init", config["width"], config["depth"]),
                       dropout=config["dropout"], **network_options(config))


def network_options(config: dict) -> dict:
    """The zoo options of ``config``'s network: its width and depth in the family's own terms."""
    if config["network"] == "mlp":
        return {"widths": [config["width"]] * config["depth"]}
    return {"width": config["width"], "depth": config["depth"]}


def measure_forwards(spec: MeasuresSpec, n: int) -> float:
    """About how many example forwards (a backward counted as two) the measures of one model take:
    a few passes over the n training points (outputs, margin, path norm), the two Gaussian sharpness
    searches (~10 evaluations x draws x points each), the two worst-case searches ((bisections + 2)
    x ascent steps x points, forward and backward) and Keskar's ascent (10 steps over all points)."""
    gaussian = 2 * 10 * spec.sharpness_draws * min(spec.sharpness_points, n)
    worst = 2 * (spec.worst_case_bisections + 2) * spec.worst_case_steps * min(spec.worst_case_points, n) * 3
    return 3 * n + gaussian + worst + 10 * n * 3


@register
class MeasuresStudy(Study):
    name = "measures"
    title = "Generalization measures: which complexity measure ranks models by their generalization gap?"
    question = ("Across networks trained to the same training loss with different hyperparameters, which measures "
                "(norms, margins, sharpness, speed) rank them by their generalization gap?")
    citation = "Jiang et al. 2019, Fantastic generalization measures and where to find them (Kendall tau ranking)"
    Spec = MeasuresSpec
    result_columns = ("kind", "rank", "measure", "tau", "granulated_tau", "model_id", "gen_gap", "test_acc")

    def estimate_seconds(self, spec: MeasuresSpec) -> float:
        """MLPs: ~1.6 s per model at n = 1000 for the quick MLPs (training to CE 0.01 plus the
        measures), scaled by n and by the widest width. NiNs: the FLOPs of every model's full epoch
        budget and of its measures (:func:`genlab.estimate.study_work`) at the assumed CPU rate."""
        if spec.network == "nin":
            from genlab.estimate import CPU_FLOPS, study_work

            return study_work(self.name, spec).seconds(CPU_FLOPS)
        models = len(sweep_configs(spec)) * len(spec.seeds)
        n = spec.data.n_train or 4000
        widest = max([spec.base_width, *spec.sweep_widths])
        return 1.6 * models * (n / 1000) * max(1.0, widest / 256)

    def units(self, spec: MeasuresSpec) -> list[Unit]:
        """One unit per engine call, and the ranking over all of their models (listed first: it is
        what a reader looks for; it runs last)."""
        groups = [Unit(key, {"call": key}) for key in sweep_groups(spec)]
        return [Unit(RANKING, needs=tuple(g.key for g in groups)), *groups]

    def run_unit(self, spec: MeasuresSpec, unit: Unit, ctx) -> UnitResult:
        if unit.key == RANKING:
            return UnitResult(ranking_rows([row for key in unit.needs for row in ctx.rows_of(key).rows]))
        done = self._train_call(spec, spec.data.load(), unit["call"], ctx)
        return UnitResult(done["rows"], done["curves"])

    def _train_call(self, spec: MeasuresSpec, data, key: str, ctx) -> dict:
        """One engine call: every configuration of this call x seed."""
        configs = [c for c in sweep_configs(spec) if call_key(c) == key]
        first = configs[0]
        x_train, y_clean = data.x_train, data.y_train
        jobs, info = [], []
        for config, seed in itertools.product(configs, spec.seeds):
            labels = y_clean.numpy()
            if config[NOISE_AXIS] > 0:
                labels = corrupt_labels(labels, config[NOISE_AXIS], data.num_classes,
                                        derive_seed(seed, "measures-noise", config[NOISE_AXIS]))[0]
            model = build_network(spec, data, config, seed)
            # one data order per replicate: the models of a call then share each batch (a faster forward)
            jobs.append(ModelJob(config_id(config, seed), model, seed=derive_seed(seed, "measures-order"),
                                 y_train=torch.from_numpy(labels), lr=config["lr"],
                                 weight_decay=config["weight_decay"]))
            info.append({**config, "seed": seed, "fraction_wrong": float((labels != y_clean.numpy()).mean())})
        plain = first["optimizer"] == "sgd_plain"
        ctx.progress.start_unit(f"measures {key}", spec.optim.epochs, len(jobs))
        config = spec.optim.train_config(spec.loss, optimizer="sgd" if plain else first["optimizer"],
                                         momentum=0.0 if plain else spec.optim.momentum, lr=first["lr"],
                                         batch_size=first["batch_size"], stop_train_loss=spec.stop_loss,
                                         eval_every=1, checkpoint_epochs=(0,), device=spec.device)
        outcome = train_models(jobs, [InputGroup(x_train, data.x_test, data.y_test)], config,
                               on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot())
        started = time.perf_counter()
        rows, curves = [], []
        for k, (job, meta, o) in enumerate(zip(jobs, info, outcome.outcomes)):
            own_curve = [c for c in outcome.curves if c["key"] == job.key]
            measures = {"steps_to_loss": steps_to_loss(own_curve, spec.speed_loss)}
            if not o.diverged:
                with one_intra_op_thread():
                    measures.update(self._measures(spec, outcome, k, job, meta, x_train))
            row = {"kind": "model", "model_id": job.key, **meta, "train_acc": o.train_acc, "test_acc": o.test_acc,
                   "train_loss": o.train_loss, "test_loss": o.test_loss, "gen_gap": o.train_acc - o.test_acc,
                   "loss_gap": o.test_loss - o.train_loss, "fit": o.fit, "steps_to_fit": o.steps_to_fit,
                   "epochs": o.epochs, "steps": o.steps, "diverged": o.diverged, "dataset": spec.data.dataset,
                   **measures}
            rows.append({k_: (None if isinstance(v, float) and not math.isfinite(v) else v) for k_, v in row.items()})
            curves += [{**c, **{h: meta[h] for h in HYPERPARAMETERS}, "axis": meta["axis"], "seed": meta["seed"]}
                       for c in own_curve]
        flagged = sum(1 for r in rows if r.get("measure_warnings"))
        ctx.progress.log(f"measures: {key}: {len(jobs)} models trained in {outcome.seconds:.1f} s, measures computed "
                         f"in {time.perf_counter() - started:.1f} s"
                         + (f" ({flagged} with a sharpness search at its limit: see measure_warnings)" if flagged
                            else ""))
        return {"rows": rows, "curves": curves}

    @staticmethod
    def _measures(spec: MeasuresSpec, outcome, k: int, job: ModelJob, meta: dict, x_train: torch.Tensor) -> dict:
        trained = outcome.stack.module(k, like=job.module)
        initial = module_at(outcome.stack, outcome.checkpoints[0], k, job.module, outcome.checkpoint_buffers.get(0))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = compute_measures(trained, (x_train, job.y_train),
                                     init_model=initial, seed=derive_seed(meta["seed"], "sharpness", job.key),
                                     device=spec.device, sharpness_points=spec.sharpness_points,
                                     sharpness_draws=spec.sharpness_draws, sharpness_target=spec.sharpness_target,
                                     worst_case_points=spec.worst_case_points, worst_case_steps=spec.worst_case_steps,
                                     worst_case_bisections=spec.worst_case_bisections)
        found.pop("train_loss"), found.pop("train_acc")
        found["measure_warnings"] = "; ".join(str(w.message) for w in caught) or None
        found["inverse_margin"] = 1.0 / found["margin"] ** 2 if found["margin"] > 0 else math.nan
        return found

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        models = results[(results["kind"] == "model") & (results["axis"] != NOISE_AXIS)]
        ranked = results[results["kind"] == "rank"].sort_values("rank")
        used = models[models["model_id"].isin(ranked_models(results))]
        top = [m for m in ranked["measure"] if ranked.loc[ranked.measure == m, "tau"].notna().any()][:3]
        fig, axes = figure(4, width=4.2, height=3.8)
        ax = axes[0, 0]
        order = ranked.iloc[::-1]
        colors = [COLORS[2] if t >= 0 else COLORS[3] for t in order["tau"].fillna(0)]
        ax.barh(order["measure"], order["tau"].fillna(0), color=colors)
        if "granulated_tau" in order:
            ax.scatter(order["granulated_tau"].fillna(0), order["measure"], color="black", s=12, zorder=3,
                       label="mean per-axis tau (one at a time)")
            ax.legend(loc="best", fontsize=7)
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_xlim(-1, 1)
        ax.set_xlabel("Kendall tau with the generalization gap (signed)")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"(a) Kendall tau over {len(used)} models")
        axis_names = list(dict.fromkeys(used["axis"]))
        for i, measure in enumerate(top):
            ax = axes[0, i + 1]
            for j, name in enumerate(axis_names):
                part = used[used["axis"] == name]
                ax.scatter(part[measure], part["gen_gap"] * 100, color=COLORS[j % 10], marker="os^vD<>p"[j % 8],
                           s=22, label=name)
            values = used[measure].dropna()
            if len(values) and (values > 0).all() and values.max() / values.min() > 20:
                ax.set_xscale("log")
            tau = float(ranked.loc[ranked.measure == measure, "tau"].iloc[0])
            ax.set_xlabel(measure.replace("_", " "))
            ax.set_ylabel("generalization gap: train - test accuracy (points)")
            ax.set_title(f"({'bcd'[i]}) {measure.replace('_', ' ')}: tau {tau:+.2f}", fontsize=10)
            if i == 0:
                ax.legend(fontsize=6.5, title="axis varied", title_fontsize=6.5)
        fig.suptitle(f"Generalization measures vs gap: {NETWORKS[spec.network]} on {spec.data.dataset}, "
                     f"Jiang et al.'s axes one at a time "
                     f"around the base, trained to training loss {spec.stop_loss:g}")
        return [save(fig, out_dir, "measures")]

    # ----- reading --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        models = results[results["kind"] == "model"]
        main = models[models["axis"] != NOISE_AXIS]
        ranked = results[results["kind"] == "rank"].sort_values("rank")
        valid = ranked[ranked["tau"].notna()]
        fitted = int(main["fit"].astype(bool).sum())
        common = int(valid["n"].max()) if len(valid) else 0
        same_models = bool(len(valid) and (valid["n"] == common).all())
        top3 = list(valid["measure"].head(3))
        tau = {r.measure: (float(r.tau), float(r.p_value)) for r in valid.itertuples()}
        sharp = [m for m in valid["measure"] if m in SHARPNESS]
        best_sharp = sharp[0] if sharp else None
        replicate = seed_replicate_tau(main)
        listing = ", ".join(f"{r.measure} {r.tau:+.2f}" for r in valid.itertuples())
        checks = [
            (f"every model reached training loss <= {spec.stop_loss:g} within {spec.optim.epochs} epochs "
             f"({fitted}/{len(main)}), and every tau is over the same {common} models", bool(
                 fitted == len(main) and same_models and common == len(main))),
            ("the gaps differ between configurations beyond seed noise: Kendall tau between seed replicates' gaps "
             f"over the configurations >= 0.3 ({_fmt(replicate)})",
             bool(math.isfinite(replicate) and replicate >= 0.3)),
            (f"a sharpness measure is among the top 3 by signed tau (Jiang et al.): top 3 {', '.join(top3) or 'none'}",
             bool(set(SHARPNESS) & set(top3))),
            ("the best-ranked sharpness measure predicts the gap: tau > 0 with p < 0.05 ("
             + (f"{best_sharp} {tau[best_sharp][0]:+.2f}, p = {tau[best_sharp][1]:.2g}" if best_sharp else "none")
             + ")", bool(best_sharp and tau[best_sharp][0] > 0 and tau[best_sharp][1] < 0.05)),
            ("the spectral-norm product correlates negatively with the gap (Jiang et al.): tau "
             + (f"{tau['spectral_product'][0]:+.2f}" if "spectral_product" in tau else "undefined"),
             bool("spectral_product" in tau and tau["spectral_product"][0] < 0)),
        ]
        best = valid.iloc[0] if len(valid) else None
        verdict = (f"best measure {best.measure} (tau {best.tau:+.2f}) over {int(best.n)} models; best sharpness "
                   f"measure {best_sharp or 'none'}" + (f" ({tau[best_sharp][0]:+.2f})" if best_sharp else "")
                   if best is not None else "no measure could be ranked")
        speed = tau.get("steps_to_loss")
        noise = results[results["kind"] == "rank_label_noise"].sort_values("rank")
        reading = (
            f"{len(main)} {NETWORKS[spec.network]} on {spec.data.n_train or 'all'} {spec.data.dataset} examples: a "
            f"base configuration "
            f"(width {spec.base_width}, depth {spec.base_depth}, {spec.optim.optimizer} lr {spec.base_lr:g}, batch "
            f"{spec.base_batch_size}, dropout {spec.base_dropout:g}, weight decay {spec.optim.weight_decay:g}) and "
            f"Jiang et al.'s axes varied one at a time, {len(spec.seeds)} seed(s) each; {fitted} reached training "
            f"loss {spec.stop_loss:g} within {spec.optim.epochs} epochs. The gap ranges from "
            f"{main['gen_gap'].min() * 100:.1f} to {main['gen_gap'].max() * 100:.1f} points; seed replicates' gaps "
            f"agree with Kendall tau {_fmt(replicate)} over the configurations. Signed Kendall tau with the gap (each "
            f"measure oriented so that larger should mean a larger gap; over {common} models): {listing}. "
            f"Jiang et al. found sharpness / PAC-Bayes flatness (magnitude-aware in particular) and optimization "
            f"speed the most predictive and spectral-norm products negatively correlated; here the top three are "
            f"{', '.join(top3)}"
            + (f", optimization speed (steps to cross-entropy {spec.speed_loss:g}) has tau {speed[0]:+.2f}" if speed
               else "")
            + (f" and the spectral product {tau['spectral_product'][0]:+.2f}." if "spectral_product" in tau else ".")
            + (" Label-noise axis (base configuration with corrupted labels, ranked separately over "
               f"{int(noise['n'].max())} models): " + ", ".join(f"{r.measure} {r.tau:+.2f}"
                                                              for r in noise.itertuples() if pd.notna(r.tau)) + "."
               if len(noise) and noise["n"].notna().any() else ""))
        refs = [("best-correlated measures", "magnitude-aware sharpness / PAC-Bayes flatness, optimization speed",
                 ", ".join(top3)),
                ("spectral-norm product", "negative correlation",
                 f"{tau['spectral_product'][0]:+.2f}" if "spectral_product" in tau else "undefined")]
        return Summary(verdict, reading, refs, checks)


def _fmt(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "undefined: needs >= 2 seeds"


def seed_replicate_tau(models: pd.DataFrame) -> float:
    """Mean over pairs of seeds of Kendall's tau between their gaps across the configurations
    (NaN with fewer than 2 seeds): how much of the gaps' ranking is the configuration's, not noise."""
    from scipy.stats import kendalltau  # imported here: scipy.stats takes ~0.6 s to import
    configs = models.assign(config=models["model_id"].str.replace(r"-seed\d+$", "", regex=True))
    table = configs.pivot_table(index="config", columns="seed", values="gen_gap")
    taus = []
    for a, b in itertools.combinations(table.columns, 2):
        pair = table[[a, b]].dropna()
        if len(pair) >= 2:
            taus.append(float(kendalltau(pair[a], pair[b]).statistic))
    taus = [t for t in taus if math.isfinite(t)]
    return sum(taus) / len(taus) if taus else math.nan


def ranked_models(results: pd.DataFrame) -> list[str]:
    """The model ids every tau of the main ranking is computed over (all, when fewer than 2 qualify)."""
    models = numeric_measures(results[(results["kind"] == "model") & (results["axis"] != NOISE_AXIS)])
    usable = common_models(models)
    return list((usable if len(usable) >= 2 else models)["model_id"])


def common_models(table: pd.DataFrame) -> pd.DataFrame:
    """The models that reached the stop rule with every measure defined (finite)."""
    finite = table[list(MEASURES)].notna().all(axis=1) & table["gen_gap"].notna()
    return table[table["fit"].astype(bool) & finite]


def _ranking(table: pd.DataFrame, kind: str, axis_taus: bool) -> list[dict]:
    if len(table) < 2:
        return []
    ranked = rank_measures(table, "gen_gap", measures=list(MEASURES), order="signed")
    if axis_taus:
        per_axis = one_at_a_time_taus(table, list(MEASURES), axis_column="axis")
        ranked = ranked.join(per_axis, on="measure")
    return [{"kind": kind, "rank": i + 1, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                             for k, v in r.items()}}
            for i, r in enumerate(ranked.to_dict("records"))]


def ranking_rows(rows: list[dict]) -> list[dict]:
    """The measures ranked by signed Kendall tau with the gap over the same models - those of
    Jiang's axes that reached the stop rule with every measure defined - as rows of kind ``rank``
    (with per-axis taus; when fewer than 2 models qualify, each tau is over the models where that
    measure is defined, and the summary's first check fails); and, when the sweep has a label-noise
    axis, the same over the base and label-noise models as rows of kind ``rank_label_noise``."""
    table = numeric_measures(pd.DataFrame(rows))
    usable = common_models(table)
    if len(usable[usable["axis"] != NOISE_AXIS]) < 2:  # too little to rank on the same models: each tau on its own
        usable = table
    out = _ranking(usable[usable["axis"] != NOISE_AXIS], "rank", axis_taus=True)
    if (table["axis"] == NOISE_AXIS).any():
        out += _ranking(usable[usable["axis"].isin(["base", NOISE_AXIS])], "rank_label_noise", axis_taus=False)
    return out


def numeric_measures(table: pd.DataFrame) -> pd.DataFrame:
    """The model table with every measure column as float (missing or undefined values as NaN)."""
    table = table.copy()
    for column in MEASURES:
        table[column] = pd.to_numeric(table[column], errors="coerce") if column in table else math.nan
    return table
