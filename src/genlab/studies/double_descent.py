"""Double descent: test risk against model size, through and past the interpolation threshold.

Three experiments (``modes``), each a risk curve over a size sweep:

* ``rff`` - Belkin, Hsu, Ma & Mandal (2019), "Reconciling modern machine-learning practice and
  the classical bias-variance trade-off", PNAS 116(32), Fig. 2. Random Fourier features with
  minimum-norm least squares on one-hot targets (float64), N real features from ~0.1 n to 10 n on
  a log grid that is dense near n, one frequency draw per seed reused across N (nested models),
  plus ridge-regularized curves on the same features. The test risk and the norm of the solution
  peak at the interpolation threshold N = n and descend again; ridge removes the peak.
  (Features are counted as real columns; see :mod:`genlab.probes.random_features`.)
* ``nn`` - Belkin et al. (2019), Fig. 3: one-hidden-layer networks d-h-K trained with squared
  loss on raw outputs, widths spanning the interpolation threshold params = n K, where
  params(h) = (d+1) h + (h+1) K. Below the threshold each network may start from the previous
  trained one ("weight reuse": its weights copied exactly into the first units, new units from
  Glorot; :func:`genlab.models.grow.copy_into_leading_units`); every row says which
  initialization ``scheme`` produced it, because the switch from reuse to fresh Glorot at the
  threshold is itself a source of the drop there.
* ``label_noise`` - Nakkiran, Kaplun, Bansal, Yang, Barak & Sutskever (2019), "Deep double
  descent", with the MNIST-1D set-up of Greydanus (2020): MLP 40-h-h-10 on labels of which a
  fraction (15%) is replaced by a *different* class (``corrupt_labels(mode="other")``), a width
  sweep trained by SGD with momentum, all widths in one batched engine call. The test error
  peaks near the width where the training error first reaches ~0; the per-epoch curves of the
  widest model give the epoch-wise curve.

Units: one ``rff-seed<s>`` per seed (an RFF sweep), one ``nn`` unit (all seeds batched in every
engine call) and one ``label_noise`` unit (all widths and seeds in one engine call).

Conventions of ``results.csv``: ``train_mse``/``test_mse`` are the squared error summed over the
K outputs and averaged over examples, |Y - f(X)|_F^2 / n, against one-hot targets (the engine's
``mse`` averages over outputs too, so its loss is multiplied by K); for ``label_noise`` (trained
with cross-entropy) they hold the cross-entropy instead. ``train_err``/``test_err`` are zero-one
errors (the training error against the labels the model was trained on, noisy ones included).
``norm`` is the Frobenius norm of the RFF coefficient matrix, or the Euclidean norm of all
parameters of a network. ``params`` counts real parameters (for RFF: features x K outputs, so
the threshold is at params = n K in both Belkin modes).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator
from matplotlib.ticker import FuncFormatter, NullFormatter
from torch import nn

from genlab.data import corrupt_labels, load_dataset
from genlab.data.registry import Dataset
from genlab.engine import InputGroup, ModelJob, TrainConfig, TrainOutcome, train_models
from genlab.models import build_model
from genlab.models.grow import copy_into_leading_units
from genlab.plotting import COLORS, figure, save
from genlab.seeding import derive_seed
from genlab.probes.random_features import default_sigma, log_grid_dense_near, rff_sweep
from genlab.spec import StudySpec, distinct
from genlab.studies.base import Study, Summary, UnitResult, register

Mode = Literal["rff", "nn", "label_noise"]
ReuseRule = Literal["always", "never", "below_threshold"]
Schedule = Literal["constant", "cosine", "step", "linear"]
MODES: tuple[str, ...] = ("rff", "nn", "label_noise")
MSE_FLOOR = 1e-4  # lower limit of the squared-loss axis of the RFF figure
SCHEME_LABELS = {"reuse": "weight reuse", "glorot": "fresh Glorot", "default": "fresh PyTorch default"}


# ----------------------------------------------------------------------------- spec


class DoubleDescentSpec(StudySpec):
    modes: list[Mode] = Field(list(MODES), min_length=1, description="experiments to run: rff (Belkin Fig. 2), nn (Belkin Fig. 3), label_noise (Nakkiran, MNIST-1D)")

    rff_dataset: str = Field("mnist5k", description="rff: dataset (Belkin used MNIST, n = 10^4)")
    rff_n_train: int = Field(4000, gt=1, description="rff: training examples n (the threshold is at n features)")
    rff_n_test: int | None = Field(None, gt=0, description="rff: test examples (default: all)")
    rff_points: int = Field(32, ge=3, le=400, description="rff: number of feature counts N on the log grid (about half within n e^-0.25..n e^0.25)")
    rff_min_ratio: float = Field(0.1, gt=0.0, lt=1.0, description="rff: smallest N as a fraction of n")
    rff_max_ratio: float = Field(10.0, gt=1.0, le=100.0, description="rff: largest N as a multiple of n")
    rff_sigma: float | None = Field(None, gt=0.0, description="rff: kernel bandwidth sigma, frequencies v ~ N(0, sigma^-2 I) (default: median pairwise distance)")
    ridges: list[float] = Field([0.0, 1e-3], min_length=1, description="rff: ridge parameters; 0 is the min-norm interpolant, > 0 ridge curves on the same features")

    nn_dataset: str = Field("mnist5k", description="nn: dataset")
    nn_n_train: int = Field(1000, gt=1, description="nn: training examples n (threshold at n*K parameters)")
    nn_n_test: int | None = Field(None, gt=0, description="nn: test examples (default: all)")
    nn_widths: list[int] | None = Field(None, description="nn: hidden widths h (default: a log grid around the threshold width)")
    nn_points: int = Field(10, ge=3, le=200, description="nn: number of widths of the default grid")
    nn_min_ratio: float = Field(0.15, gt=0.0, lt=1.0, description="nn: smallest default width as a fraction of the threshold width")
    nn_max_ratio: float = Field(8.0, gt=1.0, le=1000.0, description="nn: largest default width as a multiple of the threshold width")
    nn_reuse: ReuseRule = Field("below_threshold", description="nn: weight reuse (start from the previous trained net): always, never, below_threshold")
    nn_optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="nn: optimizer")
    nn_lr: float = Field(1e-3, gt=0.0, description="nn: learning rate")
    nn_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="nn: SGD momentum")
    nn_batch_size: int = Field(128, gt=0, description="nn: minibatch size")
    nn_epochs: int = Field(100, gt=0, description="nn: epochs per network")
    nn_schedule: Schedule = Field("cosine", description="nn: learning-rate schedule")
    nn_step_every: int = Field(500, gt=0, description="nn: with schedule=step, epochs between decays")
    nn_step_gamma: float = Field(0.9, gt=0.0, le=1.0, description="nn: with schedule=step, factor applied at each decay")
    nn_group_ratio: float = Field(4.0, ge=1.0, description="nn: fresh-init widths train together in groups whose largest/smallest width is at most this (plain MLPs are packed without padding in the first layer; the vmap path and batched hidden-to-hidden layers pad to the largest)")
    nn_eval_every: int = Field(10, gt=0, description="nn: epochs between evaluations (curves)")

    noise_dataset: str = Field("mnist1d", description="label_noise: dataset")
    noise_n_train: int = Field(4000, gt=1, description="label_noise: training examples")
    noise_n_test: int | None = Field(None, gt=0, description="label_noise: test examples (default: all)")
    noise_level: float = Field(0.15, ge=0.0, le=1.0, description="label_noise: fraction of training labels replaced")
    noise_mode: Literal["other", "uniform"] = Field("other", description="label_noise: other = a different class (Nakkiran: exactly that fraction wrong); uniform = any class")
    noise_widths: list[int] = Field([8, 16, 24, 32, 48, 64, 96, 128], min_length=3, description="label_noise: widths h of the MLP 40-h-h-10")
    noise_init: Literal["default", "glorot", "kaiming"] = Field("default", description="label_noise: weight initializer")
    noise_optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="label_noise: optimizer")
    noise_lr: float = Field(0.05, gt=0.0, description="label_noise: learning rate")
    noise_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="label_noise: SGD momentum")
    noise_batch_size: int = Field(100, gt=0, description="label_noise: minibatch size")
    noise_epochs: int = Field(100, gt=0, description="label_noise: epochs")
    noise_schedule: Schedule = Field("cosine", description="label_noise: learning-rate schedule (Nakkiran/MNIST-1D: constant)")
    noise_eval_every: int = Field(5, gt=0, description="label_noise: epochs between evaluations (the epoch-wise curve)")
    interpolation_tolerance: float = Field(0.01, ge=0.0, lt=1.0, description="training error counted as ~0 (interpolation)")

    @field_validator("modes")
    @classmethod
    def _distinct_modes(cls, v: list[str]) -> list[str]:
        return distinct(v, "modes")

    @field_validator("ridges")
    @classmethod
    def _ridges_valid(cls, v: list[float]) -> list[float]:
        for ridge in v:
            if not (math.isfinite(ridge) and ridge >= 0.0):
                raise ValueError(f"every ridge must be a finite number >= 0, got {ridge}")
        if len(set(v)) != len(v):
            raise ValueError(f"ridges must be distinct, got {v}")
        return v

    @field_validator("nn_widths", "noise_widths")
    @classmethod
    def _widths_valid(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be positive, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"widths must be distinct, got {v}")
        return sorted(v)

    @field_validator("rff_dataset", "nn_dataset", "noise_dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        from genlab.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of: {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _enough_widths(self) -> "DoubleDescentSpec":
        if self.nn_widths is not None and len(self.nn_widths) < 2:
            raise ValueError(f"nn_widths needs at least 2 widths to sweep, got {self.nn_widths}")
        return self

    presets = {
        "quick": dict(seeds=[0], rff_n_train=4000, rff_points=32, ridges=[0.0, 1e-3],
                      nn_n_train=1000, nn_points=10, nn_epochs=100, nn_optimizer="adam", nn_lr=1e-3,
                      nn_schedule="cosine", nn_eval_every=10,
                      noise_widths=[8, 16, 24, 32, 48, 64, 96, 128], noise_epochs=100, noise_lr=0.05,
                      noise_schedule="cosine", noise_eval_every=5),
        "paper": dict(seeds=[0, 1, 2], rff_n_train=4000, rff_points=40, ridges=[0.0, 1e-3, 1e-2],
                      nn_n_train=4000, nn_points=24, nn_min_ratio=0.1, nn_max_ratio=4.0, nn_epochs=6000,
                      nn_optimizer="adam", nn_lr=1e-3, nn_schedule="step", nn_step_every=500,
                      nn_step_gamma=0.9, nn_eval_every=50,
                      noise_widths=[4, 8, 12, 16, 20, 24, 32, 40, 47, 56, 64, 80, 100, 128, 200, 300],
                      noise_epochs=500, noise_lr=0.01, noise_schedule="constant", noise_eval_every=2),
        "smoke": dict(seeds=[0], rff_n_train=200, rff_n_test=200, rff_points=9, nn_n_train=100, nn_n_test=100,
                      nn_points=4, nn_epochs=2, nn_eval_every=1, noise_n_train=200, noise_n_test=100,
                      noise_widths=[4, 8, 16], noise_epochs=2, noise_eval_every=1),
    }


# ----------------------------------------------------------------------------- sizes


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

    The engine pads every model of a call to the largest one, so grouping bounds the padding
    waste while keeping calls few."""
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


# ----------------------------------------------------------------------------- cost estimate

FLOPS = 2.0e10         # sustained float64/float32 FLOP/s of one idle core (BLAS-bound work)
STEP_OVERHEAD = 1.5e-3  # seconds of per-step overhead of a batched engine step on small models


def rff_flops(spec: DoubleDescentSpec, d: int = 784, n_test: int = 1000) -> float:
    """Work of one RFF sweep: Gram accumulation of all rows over all columns, projections, solves."""
    n = spec.rff_n_train
    rows = n + (spec.rff_n_test or n_test)
    columns = spec.rff_max_ratio * n
    solves = spec.rff_points * len(spec.ridges) * n ** 3 / 3 * 0.75  # the p < n solves are smaller
    return rows ** 2 * columns / 2 + rows * d * columns + solves


def nn_seconds_estimate(spec: DoubleDescentSpec, d: int = 784, k: int = 10) -> float:
    """Steps x (overhead + forward/backward work of the padded batch) over the engine calls."""
    n = spec.nn_n_train
    widths = spec.nn_widths or width_grid(threshold_width(n, d, k), spec.nn_min_ratio, spec.nn_max_ratio,
                                          spec.nn_points)
    chain, fresh = reuse_plan(widths, n * k, lambda h: one_hidden_layer_params(d, h, k), spec.nn_reuse)
    calls = [[h] for h in chain] + padding_groups(fresh, spec.nn_group_ratio)
    steps = spec.nn_epochs * math.ceil(n / spec.nn_batch_size)
    models = len(spec.seeds)
    return sum(steps * (STEP_OVERHEAD + 6 * spec.nn_batch_size * models * len(group)
                        * one_hidden_layer_params(d, max(group), k) / FLOPS) for group in calls)


# ----------------------------------------------------------------------------- curve reading


def mean_curve(rows: pd.DataFrame, x: str, columns: list[str]) -> pd.DataFrame:
    """Mean, min and max over seeds of ``columns`` at each ``x`` (sorted by x)."""
    grouped = rows.groupby(x)[columns]
    out = grouped.mean()
    out = out.join(grouped.min().add_suffix("_min")).join(grouped.max().add_suffix("_max"))
    return out.sort_index()


def first_interpolating(curve: pd.Series, tolerance: float) -> float | None:
    """The smallest x whose mean training error is <= tolerance (None when none is)."""
    fitted = curve[curve <= tolerance]
    return float(fitted.index.min()) if len(fitted) else None


def classical_best_and_peak(test: pd.Series) -> tuple[float, float]:
    """(x at the bottom of the classical U, x of the largest test value from there on).

    The bottom of the U is the first local minimum of the test curve, scanning from the smallest
    model; the double-descent peak is the largest test value at x at or above it, so the
    under-fitting of the smallest models (the left arm of the U) is not mistaken for the peak.
    A curve that only falls has its bottom and its "peak" at the largest x.
    """
    values = test.to_numpy(dtype=float)
    bottom = 0
    while bottom + 1 < len(values) and values[bottom + 1] < values[bottom]:
        bottom += 1
    return float(test.index[bottom]), float(test.iloc[bottom:].idxmax())


def ticks_125(low: float, high: float) -> list[float]:
    """1-2-5 ticks (1, 2, 5, 10, 20, ...) covering [low, high], for log axes with few decades."""
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    return [t for t in ticks if low <= t <= high]


# ----------------------------------------------------------------------------- study


@register
class DoubleDescent(Study):
    name = "double-descent"
    title = "Double descent: risk against model size through the interpolation threshold"
    question = ("Does test error keep falling once a model is large enough to fit its training data exactly, "
                "after a peak at the interpolation threshold?")
    citation = ("Belkin, Hsu, Ma & Mandal 2019, Reconciling modern machine-learning practice and the classical "
                "bias-variance trade-off, PNAS, Figs. 2-3; Nakkiran et al. 2019, Deep double descent "
                "(MNIST-1D set-up of Greydanus 2020)")
    Spec = DoubleDescentSpec
    result_columns = ("mode", "dataset", "n", "features_or_width", "params", "seed", "train_mse", "test_mse",
                      "train_err", "test_err", "norm", "scheme", "ridge", "epochs")

    def units(self, spec: DoubleDescentSpec) -> list[str]:
        units: list[str] = []
        if "rff" in spec.modes:
            units += [f"rff-seed{s}" for s in spec.seeds]
        if "nn" in spec.modes:
            units.append("nn")
        if "label_noise" in spec.modes:
            units.append("label_noise")
        return units

    def run_unit(self, spec: DoubleDescentSpec, unit: str, ctx) -> UnitResult:
        if unit.startswith("rff-seed"):
            return run_rff(spec, int(unit.removeprefix("rff-seed")), ctx)
        if unit == "nn":
            return run_nn(spec, ctx)
        if unit == "label_noise":
            return run_label_noise(spec, ctx)
        raise ValueError(f"unknown unit {unit!r}")

    def estimate_seconds(self, spec: DoubleDescentSpec) -> float | None:
        """Rough wall time on one idle core: floating-point work / FLOPS + a per-step overhead.

        Assumes MNIST-sized inputs (d = 784, 1000 test examples) for rff and nn, and 40-sample
        MNIST-1D signals for label_noise; the constants are fitted to measured quick runs.
        """
        total = 0.0
        if "rff" in spec.modes:
            total += len(spec.seeds) * rff_flops(spec) / FLOPS
        if "nn" in spec.modes:
            total += nn_seconds_estimate(spec)
        if "label_noise" in spec.modes:
            k, h = len(spec.noise_widths) * len(spec.seeds), max(spec.noise_widths)
            steps = spec.noise_epochs * math.ceil(spec.noise_n_train / spec.noise_batch_size)
            per_step = STEP_OVERHEAD + 6 * spec.noise_batch_size * k * (h * h + 52 * h + 10) / FLOPS
            total += steps * per_step
        return total

    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        paths = []
        modes = set(results["mode"]) if len(results) else set()
        if "rff" in modes:
            paths.append(plot_rff(results[results["mode"] == "rff"], spec, out_dir))
        if "nn" in modes:
            paths.append(plot_nn(results[results["mode"] == "nn"], spec, out_dir))
        if "label_noise" in modes:
            noise_curves = curves[curves["mode"] == "label_noise"] if "mode" in curves else curves.iloc[0:0]
            paths.append(plot_label_noise(results[results["mode"] == "label_noise"], noise_curves, spec, out_dir))
        return paths

    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        parts = []
        if "rff" in set(results["mode"]):
            parts.append(summarize_rff(results[results["mode"] == "rff"]))
        if "nn" in set(results["mode"]):
            parts.append(summarize_nn(results[results["mode"] == "nn"], spec))
        if "label_noise" in set(results["mode"]):
            noise_curves = curves[curves["mode"] == "label_noise"] if "mode" in curves else curves.iloc[0:0]
            parts.append(summarize_label_noise(results[results["mode"] == "label_noise"], noise_curves, spec))
        if not parts:
            return Summary("no results", "No unit of the double-descent study has finished.")
        return Summary(verdict="; ".join(p.verdict for p in parts),
                       reading=" ".join(p.reading for p in parts),
                       references=[r for p in parts for r in p.references],
                       checks=[c for p in parts for c in p.checks])


# ----------------------------------------------------------------------------- mode: rff


def flat_float64(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def run_rff(spec: DoubleDescentSpec, seed: int, ctx) -> UnitResult:
    """One RFF sweep (Belkin Fig. 2) for one seed: every N and every ridge on one frequency draw."""
    params = {"n_train": spec.rff_n_train, **({"n_test": spec.rff_n_test} if spec.rff_n_test else {})}
    data = load_dataset(spec.rff_dataset, **params)
    X_train, X_test = flat_float64(data.x_train), flat_float64(data.x_test)
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    n, k = len(y_train), data.num_classes
    sigma = spec.rff_sigma if spec.rff_sigma is not None else default_sigma(X_train, seed=0)
    counts = log_grid_dense_near(n, spec.rff_min_ratio, spec.rff_max_ratio, spec.rff_points)
    ctx.progress.start_unit(f"rff-seed{seed}", 1, len(counts) * len(spec.ridges))
    sweep = rff_sweep(X_train, np.eye(k)[y_train], X_test, y_test, counts, sigma,
                      seed=derive_seed(seed, "rff-frequencies"), ridge=list(spec.ridges))
    rows = [{"mode": "rff", "dataset": spec.rff_dataset, "n": n, "features_or_width": r["features"],
             "params": r["params"] * k, "threshold_params": n * k, "seed": seed,
             "train_mse": r["train_mse"], "test_mse": r["test_mse"], "train_err": r["train_err"],
             "test_err": r["test_err"], "norm": r["norm"], "scheme": "min-norm" if r["ridge"] == 0 else "ridge",
             "ridge": r["ridge"], "epochs": None, "sigma": r["sigma"], "solver": r["solver"],
             "floor": r["floor"], "seconds": r["seconds"]} for r in sweep]
    return UnitResult(rows, [])


# ----------------------------------------------------------------------------- mode: nn


def nn_config(spec: DoubleDescentSpec) -> TrainConfig:
    milestones = tuple(range(spec.nn_step_every, spec.nn_epochs, spec.nn_step_every))
    return TrainConfig(loss="mse", optimizer=spec.nn_optimizer, lr=spec.nn_lr, momentum=spec.nn_momentum,
                       batch_size=spec.nn_batch_size, epochs=spec.nn_epochs, schedule=spec.nn_schedule,
                       milestones=milestones, gamma=spec.nn_step_gamma, eval_every=spec.nn_eval_every,
                       device=spec.device)


def nn_widths(spec: DoubleDescentSpec, data: Dataset) -> list[int]:
    d, k, n = data.input_dim, data.num_classes, len(data.y_train)
    if spec.nn_widths is not None:
        return list(spec.nn_widths)
    return width_grid(threshold_width(n, d, k), spec.nn_min_ratio, spec.nn_max_ratio, spec.nn_points)


def run_nn(spec: DoubleDescentSpec, ctx) -> UnitResult:
    """Belkin Fig. 3: d-h-K nets with squared loss, weight reuse along the chain, fresh Glorot elsewhere."""
    params = {"n_train": spec.nn_n_train, **({"n_test": spec.nn_n_test} if spec.nn_n_test else {})}
    data = load_dataset(spec.nn_dataset, **params)
    d, k, n = data.input_dim, data.num_classes, len(data.y_train)
    threshold, h_star = n * k, threshold_width(n, d, k)
    widths = nn_widths(spec, data)
    chain, fresh = reuse_plan(widths, threshold, lambda h: one_hidden_layer_params(d, h, k), spec.nn_reuse)
    config = nn_config(spec)
    inputs = [InputGroup(data.x_train, data.x_test, data.y_test)]

    def fresh_net(h: int, seed: int) -> nn.Module:
        return build_model("mlp", data.input_shape, k, init="glorot", seed=derive_seed(seed, "nn-init", h), widths=[h])

    def train(group: list[int], modules: dict[tuple[int, int], nn.Module], tag: str) -> TrainOutcome:
        keys = [(h, s) for h in group for s in spec.seeds]
        jobs = [ModelJob(f"h{h}-seed{s}", modules[h, s], seed=derive_seed(s, "nn-order", h), y_train=data.y_train)
                for h, s in keys]
        ctx.progress.start_unit(f"nn {tag} h={group[0]}..{group[-1]}", spec.nn_epochs, len(jobs))
        return train_models(jobs, inputs, config, on_epoch=ctx.progress.epoch,
                            snapshot=ctx.unit_dir / f"snapshot-{tag}-h{group[0]}-{group[-1]}.pt")

    rows, curves = [], []
    previous: dict[int, nn.Module] = {}
    for h in chain:
        modules = {}
        for s in spec.seeds:
            net = fresh_net(h, s)
            modules[h, s] = copy_into_leading_units(previous[s], net) if s in previous else net
        outcome = train([h], modules, "reuse")
        for pos, s in enumerate(spec.seeds):
            previous[s] = outcome.stack.module(pos)
        rows += nn_rows(spec, outcome, [(h, s) for s in spec.seeds], "reuse", n, k, threshold, h_star)
        curves += nn_curves(outcome, [(h, s) for s in spec.seeds], "reuse", k)
    for group in padding_groups(fresh, spec.nn_group_ratio):
        modules = {(h, s): fresh_net(h, s) for h in group for s in spec.seeds}
        outcome = train(group, modules, "fresh")
        keys = [(h, s) for h in group for s in spec.seeds]
        rows += nn_rows(spec, outcome, keys, "glorot", n, k, threshold, h_star)
        curves += nn_curves(outcome, keys, "glorot", k)
    return UnitResult(rows, curves)


def nn_rows(spec: DoubleDescentSpec, outcome: TrainOutcome, keys: list[tuple[int, int]], scheme: str,
            n: int, k: int, threshold: int, h_star: float) -> list[dict[str, Any]]:
    rows = []
    for pos, ((h, s), o) in enumerate(zip(keys, outcome.outcomes)):
        parameters = trained_parameters(outcome, pos)
        rows.append({"mode": "nn", "dataset": spec.nn_dataset, "n": n, "features_or_width": h,
                     "params": sum(t.numel() for t in parameters.values()), "threshold_params": threshold,
                     "threshold_width": h_star, "seed": s,
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


# ----------------------------------------------------------------------------- mode: label noise


def run_label_noise(spec: DoubleDescentSpec, ctx) -> UnitResult:
    """Nakkiran's label-noise width sweep on MNIST-1D: every width and seed in one engine call."""
    params = {"n_train": spec.noise_n_train, **({"n_test": spec.noise_n_test} if spec.noise_n_test else {})}
    data = load_dataset(spec.noise_dataset, **params)
    k, n = data.num_classes, len(data.y_train)
    jobs, keys, wrong = [], [], {}
    for s in spec.seeds:
        noisy, _ = corrupt_labels(data.y_train.numpy(), spec.noise_level, k, derive_seed(s, "label-noise"), spec.noise_mode)
        wrong[s] = float(np.mean(noisy != data.y_train.numpy()))
        for h in spec.noise_widths:
            model = build_model("mlp", data.input_shape, k, init=spec.noise_init, seed=derive_seed(s, "noise-init", h),
                                widths=[h, h])
            jobs.append(ModelJob(f"h{h}-seed{s}", model, seed=derive_seed(s, "noise-order", h),
                                 y_train=torch.from_numpy(noisy)))
            keys.append((h, s))
    config = TrainConfig(loss="ce", optimizer=spec.noise_optimizer, lr=spec.noise_lr, momentum=spec.noise_momentum,
                         batch_size=spec.noise_batch_size, epochs=spec.noise_epochs, schedule=spec.noise_schedule,
                         eval_every=spec.noise_eval_every, device=spec.device)
    ctx.progress.start_unit("label_noise", spec.noise_epochs, len(jobs))
    outcome = train_models(jobs, [InputGroup(data.x_train, data.x_test, data.y_test)], config,
                           on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot)
    rows = []
    for pos, ((h, s), o) in enumerate(zip(keys, outcome.outcomes)):
        parameters = trained_parameters(outcome, pos)
        rows.append({"mode": "label_noise", "dataset": spec.noise_dataset, "n": n, "features_or_width": h,
                     "params": sum(t.numel() for t in parameters.values()), "threshold_params": None, "seed": s,
                     "train_mse": None, "test_mse": None, "train_ce": o.train_loss, "test_ce": o.test_loss,
                     "train_err": 1.0 - o.train_acc, "test_err": 1.0 - o.test_acc,
                     "norm": parameter_norm(parameters), "scheme": spec.noise_init, "ridge": None, "epochs": o.epochs,
                     "label_noise": spec.noise_level, "noise_mode": spec.noise_mode, "fraction_wrong": wrong[s],
                     "diverged": o.diverged})
    by_key = {f"h{h}-seed{s}": (h, s) for h, s in keys}
    curves = [{"mode": "label_noise", "width": by_key[c["key"]][0], "seed": by_key[c["key"]][1],
               "scheme": spec.noise_init, "epoch": c["epoch"], "step": c["step"],
               "train_ce": c["train_loss"], "test_ce": c["test_loss"],
               "train_err": 1.0 - c["train_acc"], "test_err": 1.0 - c["test_acc"]} for c in outcome.curves]
    return UnitResult(rows, curves)


# ----------------------------------------------------------------------------- figures


def _band(ax, curve: pd.DataFrame, column: str, color, label: str, marker: str = "o", ls: str = "-") -> None:
    x = curve.index.to_numpy(dtype=float)
    ax.plot(x, curve[column], marker=marker, ms=3.5, lw=1.4, color=color, label=label, ls=ls)
    if (curve[f"{column}_max"] > curve[f"{column}_min"]).any():
        ax.fill_between(x, curve[f"{column}_min"], curve[f"{column}_max"], color=color, alpha=0.2, lw=0)


def _threshold_line(ax, x: float, label: str) -> None:
    ax.axvline(x, color="black", ls="--", lw=1, alpha=0.7, label=label)


def _log_x_with_plain_ticks(ax, ticks: list[float] | None = None) -> None:
    """Log x-axis labelled with plain numbers (no 2x10^0-style minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ticks is not None:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))


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


def plot_nn(rows: pd.DataFrame, spec, out_dir: Path) -> Path:
    n, threshold = int(rows["n"].iloc[0]), int(rows["threshold_params"].iloc[0])
    h_star = float(rows["threshold_width"].iloc[0])
    fig, axes = figure(2, width=5.2, height=3.8)
    markers = {"reuse": "o", "glorot": "s"}
    for j, (scheme, part) in enumerate(sorted(rows.groupby("scheme"), key=lambda item: item[0] != "reuse")):
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
    fig.suptitle(f"One-hidden-layer nets d-h-K, squared loss, {rows['dataset'].iloc[0]} n = {n}, {epochs} epochs - Belkin et al. "
                 f"2019 Fig. 3\ninit scheme per point: reuse rule '{spec.nn_reuse}' (circles: weight reuse, "
                 f"squares: fresh Glorot)")
    return save(fig, out_dir, "double_descent_nn")


def plot_label_noise(rows: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> Path:
    tolerance = spec.interpolation_tolerance
    curve = mean_curve(rows, "features_or_width", ["train_err", "test_err"])
    fig, axes = figure(2, width=5.0, height=3.8)
    ax = axes[0, 0]
    _band(ax, curve, "test_err", COLORS[3], "test error (clean test labels)")
    _band(ax, curve, "train_err", COLORS[0], "train error (noisy labels)", ls=":")
    fitted = first_interpolating(curve["train_err"], tolerance)
    if fitted is not None:
        _threshold_line(ax, fitted, f"first width with train error <= {tolerance:g}: h = {fitted:g}")
    _, peak = classical_best_and_peak(curve["test_err"])
    ax.plot([peak], [curve.loc[peak, "test_err"]], marker="*", ms=12, color=COLORS[3], ls="none",
            label=f"test-error peak: h = {peak:g}")
    _log_x_with_plain_ticks(ax, [float(w) for w in curve.index])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("hidden width h of the MLP 40-h-h-10 (log scale)")
    ax.set_ylabel("zero-one error")
    ax.set_title("(a) model-wise double descent")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    if len(curves):
        widths = sorted(curves["width"].unique())
        shown = [w for w in dict.fromkeys([widths[-1], peak]) if w in widths]
        for i, w in enumerate(shown):
            part = curves[(curves["width"] == w) & (curves["epoch"] > 0)]
            epoch_curve = mean_curve(part, "epoch", ["test_err", "train_err"])
            _band(ax, epoch_curve, "test_err", COLORS[(3 + i) % 10], f"test, h = {w:g}", marker="")
            _band(ax, epoch_curve, "train_err", COLORS[(3 + i) % 10], f"train, h = {w:g}", marker="", ls=":")
    _log_x_with_plain_ticks(ax)
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("zero-one error")
    ax.set_title("(b) epoch-wise curves")
    ax.legend(fontsize=7)
    fig.suptitle(f"Label noise {spec.noise_level:.0%} ('{spec.noise_mode}': relabelled to "
                 f"{'a different' if spec.noise_mode == 'other' else 'any'} class), {rows['dataset'].iloc[0]} "
                 f"n = {int(rows['n'].iloc[0])}, {spec.noise_optimizer} lr {spec.noise_lr:g} ({spec.noise_schedule}), "
                 f"{spec.noise_epochs} epochs, "
                 f"{spec.noise_init} init - Nakkiran et al. 2019")
    return save(fig, out_dir, "double_descent_label_noise")


# ----------------------------------------------------------------------------- summaries


def _window(curve: pd.DataFrame, n: int, low: float = 0.8, high: float = 1.25) -> pd.DataFrame:
    x = curve.index.to_numpy(dtype=float)
    return curve[(x >= low * n) & (x <= high * n)]


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
    verdict = (f"rff: test MSE peaks at N = {peak_n / n:.2f} n ({plain_peak:.3g}), norm at N = {norm_peak_n / n:.2f} n; "
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
    schemes = ", ".join(f"{SCHEME_LABELS.get(s, s)} for {int(scheme[scheme == s].index.min()):,}.."
                        f"{int(scheme[scheme == s].index.max()):,} params" for s in dict.fromkeys(scheme))
    around = (f"test MSE {below['test_mse'].iloc[-1]:.3g} just below the threshold, " if len(below) else "") + \
        (f"{past['test_mse'].iloc[0]:.3g} just above, " if len(past) else "") + f"{largest['test_mse']:.3g} at the largest"
    switch = ""
    if len(below) and len(past) and scheme[below.index[-1]] != scheme[past.index[0]]:
        switch = (f"The init scheme switches at the threshold ({SCHEME_LABELS.get(scheme[below.index[-1]])} -> "
                  f"{SCHEME_LABELS.get(scheme[past.index[0]])}), where the test MSE goes {below['test_mse'].iloc[-1]:.3g} "
                  f"-> {past['test_mse'].iloc[0]:.3g}: part of that step is the change of scheme, not of size.")
    verdict = (f"nn: train error {largest['train_err']:.1%} at {int(curve.index[-1]):,} params "
               f"({curve.index[-1] / threshold:.2g} x nK), <= {tolerance:.0%} first at {fitted_text}; {around}")
    reading = (f"One-hidden-layer nets on {rows['dataset'].iloc[0]} (n = {n}, threshold n K = {threshold:,} params, "
               f"{len(curve)} widths, {rows['seed'].nunique()} seed(s), squared loss, {spec.nn_optimizer} lr "
               f"{spec.nn_lr:g} ({spec.nn_schedule} schedule), {epochs} epochs; init: {schemes}). "
               f"Training error: {curve['train_err'].iloc[0]:.1%} at {int(curve.index[0]):,} params, "
               + (f"{below['train_err'].iloc[-1]:.1%} just below the threshold, " if len(below) else "")
               + (f"{past['train_err'].iloc[0]:.1%} just above it, " if len(past) else "")
               + f"{largest['train_err']:.1%} at the largest net. Test MSE: "
               + ", ".join(f"{int(p):,} params {v:.3g}" for p, v in curve["test_mse"].items())
               + (f"; past the threshold it is largest at {int(past['test_mse'].idxmax()):,} params. " if len(past)
                  else ". ")
               + f"Zero-one test error: {curve['test_err'].iloc[0]:.1%} at the smallest net, {largest['test_err']:.1%} "
               f"at the largest. " + switch)
    references = [("nn: threshold (params)", "n K = 40,000 (n = 4000, h ~ 50)", f"n K = {threshold:,} (n = {n})"),
                  ("nn: test MSE below / above threshold / largest", "peak at n K, lower past it (6000 epochs)",
                   f"{around} ({epochs} epochs)")]
    return Summary(verdict, reading, references, checks)


def summarize_label_noise(rows: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
    tolerance = spec.interpolation_tolerance
    curve = mean_curve(rows, "features_or_width", ["train_err", "test_err"])
    fitted = first_interpolating(curve["train_err"], tolerance)
    best, peak = classical_best_and_peak(curve["test_err"])
    best_err, peak_err = float(curve.loc[best, "test_err"]), float(curve.loc[peak, "test_err"])
    right = float(curve["test_err"].iloc[-1])
    widest = curve.index[-1]
    fitted_text = "none" if fitted is None else f"{fitted:g}"
    checks = [(f"label_noise: test-error peak (h = {peak:g}) within a factor 2 of the first width with train error "
               f"<= {tolerance:g} (h = {fitted_text})",
               bool(fitted is not None and fitted / 2 <= peak <= fitted * 2)),
              (f"label_noise: the peak ({peak_err:.1%}) is >= 2 points above the bottom of the classical U "
               f"(h = {best:g}: {best_err:.1%}) and the widest (h = {widest:g}: {right:.1%})",
               bool(peak > best and peak_err >= best_err + 0.02 and peak_err >= right + 0.02))]
    epoch_text = ""
    if len(curves):
        big = curves[(curves["width"] == widest) & (curves["epoch"] > 0)].groupby("epoch")["test_err"].mean()
        if len(big):
            early = big[big.index < big.index[-1]]
            low_epoch = int(early.idxmin()) if len(early) else int(big.index[-1])
            after = big[big.index > low_epoch]
            rise = (f"then up to {after.max():.1%} (epoch {int(after.idxmax())})" if len(after) and
                    after.max() > big[low_epoch] + 0.005 else "no rise after it")
            epoch_text = (f" Epoch-wise (h = {widest:g}): test error {big.iloc[0]:.1%} at epoch {int(big.index[0])}, "
                          f"{big[low_epoch]:.1%} at epoch {low_epoch} (lowest before the end), {rise}, "
                          f"{big.iloc[-1]:.1%} at the last epoch ({int(big.index[-1])}).")
    noise = rows["fraction_wrong"].mean()
    verdict = (f"label_noise: test error {best_err:.1%} (h = {best:g}) -> peak {peak_err:.1%} (h = {peak:g}) -> "
               f"{right:.1%} (h = {widest:g}); train error first <= {tolerance:g} at h = {fitted_text}")
    reading = (f"MLP 40-h-h-10 on {rows['dataset'].iloc[0]} (n = {int(rows['n'].iloc[0])}) with "
               f"{spec.noise_level:.0%} label noise, convention '{spec.noise_mode}' "
               f"({'each selected label moved to a different class' if spec.noise_mode == 'other' else 'each selected label redrawn from all classes'}; "
               f"measured {noise:.1%} of training labels wrong), {spec.noise_optimizer} lr {spec.noise_lr:g} "
               f"({spec.noise_schedule} schedule), momentum "
               f"{spec.noise_momentum:g}, batch {spec.noise_batch_size}, {spec.noise_epochs} epochs, "
               f"{rows['seed'].nunique()} seed(s). Test error by width: "
               + ", ".join(f"h={w:g} {e:.1%}" for w, e in curve["test_err"].items())
               + "; train error: " + ", ".join(f"h={w:g} {e:.1%}" for w, e in curve["train_err"].items()) + ". "
               f"The peak is the largest test error at widths from the first local minimum of the test error "
               f"(h = {best:g}) upward."
               + epoch_text)
    references = [("label_noise: test error best small / peak / wide", "47.2% (h=16) / 54.05% (h=47) / 45.5% (h=300), 500 epochs",
                   f"{best_err:.1%} (h={best:g}) / {peak_err:.1%} (h={peak:g}) / "
                   f"{right:.1%} (h={widest:g}), {spec.noise_epochs} epochs")]
    return Summary(verdict, reading, references, checks)
