"""One-hidden-layer networks across the interpolation threshold params = n K (Belkin et al. 2019,
Fig. 3), with weight reuse below it; their unit, figure and checks."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from genlab.data.registry import DATASETS, Dataset
from genlab.engine import InputGroup, ModelJob, TrainOutcome, train_models
from genlab.models import build_model
from genlab.models.grow import copy_into_leading_units
from genlab.plotting import COLORS, figure, save
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, Group, OptimSpec
from genlab.studies.base import Summary, UnitResult
from genlab.studies.double_descent.common import (
    STEP_OVERHEAD,
    SWEEP_FLOPS,
    _band,
    _log_x_with_plain_ticks,
    _threshold_line,
    first_interpolating,
    mean_curve,
    risk_peak,
    ticks_125,
)

ReuseRule = Literal["always", "never", "below_threshold"]
SCHEME_LABELS = {"reuse": "weight reuse", "glorot": "fresh Glorot", "default": "fresh PyTorch default"}
MARKER_NAMES = {"o": "circles", "s": "squares"}


class NetSweep(Group):
    """The width sweep of d-h-K networks, trained with squared loss."""

    data: DataSpec = DataSpec(n_train=1000)
    widths: list[int] | None = Field(None, description="hidden widths h (default: a log grid around the threshold "
                                     "width)")
    points: int = Field(10, ge=3, le=200, description="number of widths of the default grid")
    min_ratio: float = Field(0.15, gt=0.0, lt=1.0, description="smallest default width as a fraction of the "
                             "threshold width")
    max_ratio: float = Field(8.0, gt=1.0, le=1000.0, description="largest default width as a multiple of the "
                             "threshold width")
    reuse: ReuseRule = Field("below_threshold", description="weight reuse (start from the previous trained net): "
                             "always, never, below_threshold")
    group_ratio: float = Field(4.0, ge=1.0, description="fresh-init widths train together in groups whose "
                               "largest/smallest width is at most this (plain MLPs are packed without padding in the "
                               "first layer; the vmap path and batched hidden-to-hidden layers pad to the largest)")
    eval_every: int = Field(10, gt=0, description="epochs between evaluations (curves)")
    pool: int = Field(1, ge=1, le=8, description="average-pool image inputs over pool x pool blocks before "
                      "training (2: MNIST 28x28 -> 14x14, d = 196)")
    stop_mse: float | None = Field(None, gt=0.0, description="stop a net once its training MSE (summed over the "
                                   "outputs) falls to this (default: train the whole budget)")
    seeds: list[int] | None = Field(None, min_length=1, description="seeds of the nn sweep (default: the study's "
                                    "seeds); the peak check needs at least 3")
    optim: OptimSpec = OptimSpec(optimizer="adam", lr=1e-3, batch_size=128, epochs=100, schedule="cosine",
                                 step_every=500, step_gamma=0.9)

    @field_validator("widths")
    @classmethod
    def _widths_valid(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else sorted_widths(v)

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"nn_seeds must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _enough_widths(self) -> "NetSweep":
        if self.widths is not None and len(self.widths) < 2:
            raise ValueError(f"nn_widths needs at least 2 widths to sweep, got {self.widths}")
        if self.pool > 1:
            shape = tuple(DATASETS[self.data.dataset].input_shape)
            if len(shape) != 3 or shape[1] % self.pool or shape[2] % self.pool:
                raise ValueError(f"nn_pool={self.pool} needs images whose height and width it divides; "
                                 f"{self.data.dataset} examples have shape {shape}")
        return self


def pooled(data: Dataset, factor: int) -> Dataset:
    """``data`` with every image averaged over factor x factor blocks (d -> d / factor^2)."""
    if factor == 1:
        return data
    return replace(data, x_train=F.avg_pool2d(data.x_train, factor), x_test=F.avg_pool2d(data.x_test, factor),
                   info={**data.info, "pool": factor})


def sweep_seeds(spec) -> list[int]:
    """The seeds of the nn sweep: its own, or the study's."""
    return list(spec.nn.seeds) if spec.nn.seeds is not None else list(spec.seeds)


def sorted_widths(widths: list[int]) -> list[int]:
    """Distinct positive widths, ascending (a ValueError otherwise)."""
    if any(w <= 0 for w in widths):
        raise ValueError(f"every width must be positive, got {widths}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"widths must be distinct, got {widths}")
    return sorted(widths)


def one_hidden_layer_params(d: int, h: int, k: int) -> int:
    """Parameters of a d-h-K network with biases: (d + 1) h + (h + 1) K."""
    return (d + 1) * h + (h + 1) * k


def threshold_width(n: int, d: int, k: int) -> float:
    """The (real) width h* at which a d-h-K net has n K parameters (Belkin's threshold):
    (d + 1) h + (h + 1) K = n K  <=>  h* = K (n - 1) / (d + K + 1)."""
    return k * (n - 1) / (d + k + 1)


def width_grid(center: float, lo: float, hi: float, count: int) -> list[int]:
    """Sorted distinct integer widths log-spaced over [lo center, hi center], always including
    floor(center) and ceil(center) (the last width below and the first above the threshold)."""
    low = max(1.0, lo * center)
    high = max(low + 1.0, hi * center)
    grid = np.rint(np.geomspace(low, high, count)).astype(int).tolist()
    grid += [max(1, math.floor(center)), max(1, math.ceil(center))]
    return sorted(set(int(w) for w in grid if w >= 1))


def reuse_plan(widths: list[int], threshold_params: int, params_of, rule: str) -> tuple[list[int], list[int]]:
    """Split ``widths`` (ascending) into the weight-reuse chain and the fresh-init widths.

    always: every width continues the chain; never: none does; below_threshold: the widths whose
    parameter count is below ``threshold_params`` (Belkin et al. 2019, Fig. 3).
    """
    widths = sorted(widths)
    if rule == "always":
        return widths, []
    if rule == "never":
        return [], widths
    if rule == "below_threshold":
        chain = [w for w in widths if params_of(w) < threshold_params]
        return chain, [w for w in widths if w not in chain]
    raise ValueError(f"unknown reuse rule {rule!r}")


def padding_groups(widths: list[int], max_ratio: float) -> list[list[int]]:
    """Consecutive groups of the sorted ``widths`` with largest / smallest <= max_ratio.

    One engine call each: the ratio bounds how unlike the models trained together are (the engine
    buckets a call's widths by their arithmetic, so a wide ratio wastes little on padding)."""
    groups: list[list[int]] = []
    for w in sorted(widths):
        if groups and w <= max_ratio * groups[-1][0]:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def parameter_norm(parameters: dict[str, torch.Tensor]) -> float:
    """Euclidean norm of all parameters (weights and biases, flattened together)."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in parameters.values())))


def trained_parameters(outcome: TrainOutcome, k: int) -> dict[str, torch.Tensor]:
    """Model k's parameters cut back to its own (unpadded) shapes."""
    state = outcome.stack.state_dict(k)
    return {name: state[name] for name in outcome.stack.params}


def nn_seconds_estimate(spec, d: int = 784, k: int = 10) -> float:
    """Steps x (overhead + forward/backward work of each model's own network) over the engine calls
    (an upper bound when a stop rule frees nets early)."""
    d = d // spec.nn.pool ** 2
    n = spec.nn.data.n_train
    widths = spec.nn.widths or width_grid(threshold_width(n, d, k), spec.nn.min_ratio, spec.nn.max_ratio,
                                          spec.nn.points)
    chain, fresh = reuse_plan(widths, n * k, lambda h: one_hidden_layer_params(d, h, k), spec.nn.reuse)
    calls = [[h] for h in chain] + padding_groups(fresh, spec.nn.group_ratio)
    steps = spec.nn.optim.epochs * math.ceil(n / spec.nn.optim.batch_size)
    models = len(sweep_seeds(spec))
    return sum(steps * (STEP_OVERHEAD + 6 * spec.nn.optim.batch_size * models
                        * sum(one_hidden_layer_params(d, h, k) for h in group) / SWEEP_FLOPS) for group in calls)


def nn_widths(spec, data: Dataset) -> list[int]:
    d, k, n = data.input_dim, data.num_classes, len(data.y_train)
    if spec.nn.widths is not None:
        return list(spec.nn.widths)
    return width_grid(threshold_width(n, d, k), spec.nn.min_ratio, spec.nn.max_ratio, spec.nn.points)


def run_nn(spec, ctx) -> UnitResult:
    """Belkin Fig. 3: d-h-K nets with squared loss, weight reuse along the chain, fresh Glorot elsewhere."""
    data = pooled(spec.nn.data.load(), spec.nn.pool)
    d, k, n = data.input_dim, data.num_classes, len(data.y_train)
    seeds = sweep_seeds(spec)
    threshold, h_star = n * k, threshold_width(n, d, k)
    widths = nn_widths(spec, data)
    chain, fresh = reuse_plan(widths, threshold, lambda h: one_hidden_layer_params(d, h, k), spec.nn.reuse)
    stop = None if spec.nn.stop_mse is None else spec.nn.stop_mse / k  # the engine's mse averages over outputs
    config = spec.nn.optim.train_config("mse", eval_every=spec.nn.eval_every, device=spec.device,
                                        stop_train_loss=stop)
    inputs = [InputGroup(data.x_train, data.x_test, data.y_test)]

    def fresh_net(h: int, seed: int) -> nn.Module:
        return build_model("mlp", data.input_shape, k, init="glorot", seed=derive_seed(seed, "nn-init", h), widths=[h])

    def train(group: list[int], modules: dict[tuple[int, int], nn.Module], tag: str) -> TrainOutcome:
        keys = [(h, s) for h in group for s in seeds]
        jobs = [ModelJob(f"h{h}-seed{s}", modules[h, s], seed=derive_seed(s, "nn-order", h), y_train=data.y_train)
                for h, s in keys]
        ctx.progress.start_unit(f"nn {tag} h={group[0]}..{group[-1]}", spec.nn.optim.epochs, len(jobs))
        return train_models(jobs, inputs, config, on_epoch=ctx.progress.epoch,
                            snapshot=ctx.snapshot(f"{tag}-h{group[0]}-{group[-1]}"))

    rows, curves = [], []
    previous: dict[int, nn.Module] = {}
    for h in chain:
        modules = {}
        for s in seeds:
            net = fresh_net(h, s)
            modules[h, s] = copy_into_leading_units(previous[s], net) if s in previous else net
        outcome = train([h], modules, "reuse")
        for pos, s in enumerate(seeds):
            previous[s] = outcome.stack.module(pos)
        rows += nn_rows(spec, outcome, [(h, s) for s in seeds], "reuse", n, k, threshold, h_star, d)
        curves += nn_curves(outcome, [(h, s) for s in seeds], "reuse", k)
    for group in padding_groups(fresh, spec.nn.group_ratio):
        modules = {(h, s): fresh_net(h, s) for h in group for s in seeds}
        outcome = train(group, modules, "fresh")
        keys = [(h, s) for h in group for s in seeds]
        rows += nn_rows(spec, outcome, keys, "glorot", n, k, threshold, h_star, d)
        curves += nn_curves(outcome, keys, "glorot", k)
    return UnitResult(rows, curves)


def nn_rows(spec, outcome: TrainOutcome, keys: list[tuple[int, int]], scheme: str,
            n: int, k: int, threshold: int, h_star: float, d: int) -> list[dict[str, Any]]:
    rows = []
    for pos, ((h, s), o) in enumerate(zip(keys, outcome.outcomes)):
        parameters = trained_parameters(outcome, pos)
        rows.append({"mode": "nn", "dataset": spec.nn.data.dataset, "n": n, "features_or_width": h,
                     "params": sum(t.numel() for t in parameters.values()), "threshold_params": threshold,
                     "threshold_width": h_star, "input_dim": d, "seed": s,
                     "train_mse": o.train_loss * k, "test_mse": o.test_loss * k,
                     "train_err": 1.0 - o.train_acc, "test_err": 1.0 - o.test_acc,
                     "norm": parameter_norm(parameters), "scheme": scheme, "ridge": None, "epochs": o.epochs,
                     "diverged": o.diverged})
    return rows


def nn_curves(outcome: TrainOutcome, keys: list[tuple[int, int]], scheme: str, k: int) -> list[dict[str, Any]]:
    by_key = {f"h{h}-seed{s}": (h, s) for h, s in keys}
    return [{"mode": "nn", "width": by_key[c["key"]][0], "seed": by_key[c["key"]][1], "scheme": scheme,
             "epoch": c["epoch"], "step": c["step"], "train_mse": c["train_loss"] * k, "test_mse": c["test_loss"] * k,
             "train_err": 1.0 - c["train_acc"], "test_err": 1.0 - c["test_acc"]} for c in outcome.curves]


def plot_nn(rows: pd.DataFrame, spec, out_dir: Path) -> Path:
    n, threshold = int(rows["n"].iloc[0]), int(rows["threshold_params"].iloc[0])
    h_star = float(rows["threshold_width"].iloc[0])
    fig, axes = figure(2, width=5.2, height=3.8)
    markers = {"reuse": "o", "glorot": "s"}
    for scheme, part in sorted(rows.groupby("scheme"), key=lambda item: item[0] != "reuse"):
        curve = mean_curve(part, "params", ["train_mse", "test_mse", "train_err", "test_err"])
        label = SCHEME_LABELS.get(scheme, scheme)
        for ax, metric in ((axes[0, 0], "mse"), (axes[0, 1], "err")):
            _band(ax, curve, f"test_{metric}", COLORS[3], f"test ({label})", marker=markers.get(scheme, "o"))
            _band(ax, curve, f"train_{metric}", COLORS[0], f"train ({label})", marker=markers.get(scheme, "o"), ls=":")
    for ax, ylabel, title in ((axes[0, 0], "squared loss (summed over outputs)", "(a) squared loss"),
                              (axes[0, 1], "zero-one error", "(b) zero-one loss")):
        _threshold_line(ax, threshold, f"threshold n K = {threshold:,} params (h = {h_star:.1f})")
        _log_x_with_plain_ticks(ax, ticks_125(float(rows["params"].min()), float(rows["params"].max())))
        ax.set_xlabel("parameters of the d-h-K network (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        top = 1.5 * ax.get_ylim()[1]  # room for the legend above the curves
        ax.set_ylim(bottom=0.0, top=min(top, 1.05) if ax is axes[0, 1] else top)
        ax.legend(fontsize=7, loc="upper right")
    epochs = int(rows["epochs"].max())
    fig.suptitle(f"One-hidden-layer nets d-h-K, squared loss, {rows['dataset'].iloc[0]} n = {n}, {epochs} epochs - "
                 "Belkin et al. "
                 f"2019 Fig. 3\ninit scheme per point: reuse rule '{spec.nn.reuse}' ("
                 + ", ".join(f"{MARKER_NAMES[markers.get(s, 'o')]}: {SCHEME_LABELS.get(s, s)}"
                             for s in sorted(rows["scheme"].unique(), key=lambda s: s != "reuse")) + ")")
    return save(fig, out_dir, "double_descent_nn")


PEAK_WINDOW = (0.5, 2.0)
"""Where the nn peak may sit, in multiples of n K: Belkin's peak is at n K; trained to a small
training MSE it forms where the training error first reaches ~0, slightly before n K."""


def peak_check(rows: pd.DataFrame, threshold: int) -> tuple[str, bool]:
    """Belkin Fig. 3's claim on the measured curve: a test-MSE peak near n K standing above the
    lowest risk before it and above the largest net's risk by more than max(2 standard errors of
    the per-seed difference, 10% of the lower value), over at least 3 seeds."""
    low, high = PEAK_WINDOW
    peak = risk_peak(rows, "params", "test_mse", low * threshold, high * threshold)
    seeds = rows["seed"].nunique()
    if peak is None:
        return (f"nn: test-MSE peak in [{low:g}, {high:g}] n K: no width there", False)
    ok = peak.stands_out(min_seeds=3)
    before = ("no smaller net" if peak.before_x is None else
              f"lowest before {peak.before:.3g} at {peak.before_x / threshold:.2g} nK, needs > "
              f"{peak.margin(peak.before, peak.before_se):.3g}, has {peak.value - peak.before:.3g}")
    largest = (f"largest net {peak.largest:.3g} at {peak.largest_x / threshold:.2g} nK, needs > "
               f"{peak.margin(peak.largest, peak.largest_se):.3g}, has {peak.value - peak.largest:.3g}")
    seed_text = f"{seeds} seeds" + ("" if seeds >= 3 else ", fewer than the 3 a seed spread needs")
    return (f"nn: test-MSE peak near the threshold stands out beyond seed noise (max(2 SE, 10%)): peak "
            f"{peak.value:.3g} at {peak.x / threshold:.2g} nK; {before}; {largest}; {seed_text}", ok)


def summarize_nn(rows: pd.DataFrame, spec) -> Summary:
    n, threshold = int(rows["n"].iloc[0]), int(rows["threshold_params"].iloc[0])
    tolerance = spec.interpolation_tolerance
    epochs = int(rows["epochs"].max())
    curve = mean_curve(rows, "params", ["train_mse", "test_mse", "train_err", "test_err"])
    scheme = rows.groupby("params")["scheme"].first()
    below = curve[curve.index < threshold]
    past = curve[curve.index >= threshold]
    largest = curve.iloc[-1]
    fitted = first_interpolating(past["train_err"], tolerance)
    fitted_text = "no width" if fitted is None else f"{int(fitted):,} params = {fitted / threshold:.2g} x nK"
    checks = [(f"nn: train error reaches <= {tolerance:.0%} past the threshold (first at {fitted_text}; "
               f"largest net {largest['train_err']:.2%})", fitted is not None)]
    if len(below):
        checks.append((f"nn: train error of the widest net ({largest['train_err']:.2%}) below that of the last net "
                       f"under the threshold ({below['train_err'].iloc[-1]:.2%})",
                       bool(largest["train_err"] < below["train_err"].iloc[-1])))
        checks.append((f"nn: test MSE descends past the threshold (largest net {largest['test_mse']:.3g} < last net "
                       f"below the threshold {below['test_mse'].iloc[-1]:.3g})",
                       bool(largest["test_mse"] < below["test_mse"].iloc[-1])))
    peak_text, peak_ok = peak_check(rows, threshold)
    checks.append((peak_text, peak_ok))
    schemes = ", ".join(f"{SCHEME_LABELS.get(s, s)} for {int(scheme[scheme == s].index.min()):,}.."
                        f"{int(scheme[scheme == s].index.max()):,} params" for s in dict.fromkeys(scheme))
    around = (f"test MSE {below['test_mse'].iloc[-1]:.3g} just below the threshold, " if len(below) else "") + \
        (f"{past['test_mse'].iloc[0]:.3g} just "
         "above, " if len(past) else "") + f"{largest['test_mse']:.3g} at the largest"
    switch = ""
    if len(below) and len(past) and scheme[below.index[-1]] != scheme[past.index[0]]:
        switch = (f"The init scheme switches at the threshold ({SCHEME_LABELS.get(scheme[below.index[-1]])} -> "
                  f"{SCHEME_LABELS.get(scheme[past.index[0]])}), where the test MSE goes "
                  f"{below['test_mse'].iloc[-1]:.3g} "
                  f"-> {past['test_mse'].iloc[0]:.3g}: part of that step is the change of scheme, not of size.")
    verdict = (f"nn: train error {largest['train_err']:.1%} at {int(curve.index[-1]):,} params "
               f"({curve.index[-1] / threshold:.2g} x nK), <= {tolerance:.0%} first at {fitted_text}; {around}; "
               + ("a test-MSE peak near n K stands out beyond seed noise" if peak_ok else
                  "NO test-MSE peak near n K that stands out beyond seed noise in this run"))
    dim = f", d = {int(rows['input_dim'].iloc[0])}" if "input_dim" in rows else ""
    reading = (f"One-hidden-layer nets on {rows['dataset'].iloc[0]} (n = {n}{dim}, threshold n K = {threshold:,} "
               "params, "
               f"{len(curve)} widths, {rows['seed'].nunique()} seed(s), squared loss, {spec.nn.optim.optimizer} lr "
               f"{spec.nn.optim.lr:g} ({spec.nn.optim.schedule} schedule), {epochs} epochs; init: {schemes}). "
               f"Training error: {curve['train_err'].iloc[0]:.1%} at {int(curve.index[0]):,} params, "
               + (f"{below['train_err'].iloc[-1]:.1%} just below the threshold, " if len(below) else "")
               + (f"{past['train_err'].iloc[0]:.1%} just above it, " if len(past) else "")
               + f"{largest['train_err']:.1%} at the largest net. Test MSE: "
               + ", ".join(f"{int(p):,} params {v:.3g}" for p, v in curve["test_mse"].items())
               + (f"; past the threshold it is largest at {int(past['test_mse'].idxmax()):,} params. " if len(past)
                  else ". ")
               + f"Zero-one test error: {curve['test_err'].iloc[0]:.1%} at the smallest net, {largest['test_err']:.1%} "
               f"at the largest. " + switch + " " + peak_text + ".")
    references = [("nn: threshold (params)", "n K = 40,000 (n = 4000, h ~ 50)", f"n K = {threshold:,} (n = {n})"),
                  ("nn: test MSE below / above threshold / largest", "peak at n K, lower past it (6000 epochs)",
                   f"{around} ({epochs} epochs)")]
    return Summary(verdict, reading, references, checks)
