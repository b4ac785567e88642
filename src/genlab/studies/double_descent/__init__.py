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
  threshold is itself a source of the drop there. Inputs may be average-pooled (``nn_pool``) so
  that the threshold width is a trainable net at small n, and nets may stop once their training
  MSE reaches ``nn_stop_mse`` (trained to interpolation). The peak check asks for Belkin's claim
  on the measured curve: a seed-mean test-MSE peak in [0.5, 2] n K standing above the lowest risk
  before it and above the largest net's by more than max(2 standard errors of the per-seed
  difference, 10%), over at least 3 seeds (``nn_seeds``).
* ``label_noise`` - Nakkiran, Kaplun, Bansal, Yang, Barak & Sutskever (2019), "Deep double
  descent", with the MNIST-1D set-up of Greydanus (2020): MLP 40-h-h-10 on labels of which a
  fraction (15%) is replaced by a *different* class (``corrupt_labels(mode="other")``), a width
  sweep trained by SGD with momentum, all widths in one batched engine call. The test error
  peaks near the width where the training error first reaches ~0; the per-epoch curves of the
  widest model give the epoch-wise curve.

Each experiment is a module of this package (``rff``, ``nn``, ``label_noise``: its settings
group, its unit, its figure and its checks). Units: one ``rff-seed<s>`` per seed (an RFF sweep),
one ``nn`` unit (all seeds batched in every engine call) and one ``label_noise`` unit (all widths
and seeds in one engine call).

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
from typing import Annotated, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from genlab.spec import Prefix, StudySpec, distinct
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset
from genlab.studies.double_descent.common import (
    FLOPS,
    STEP_OVERHEAD,
    SWEEP_FLOPS,
    RiskPeak,
    classical_best_and_peak,
    first_interpolating,
    mean_curve,
    risk_peak,
)
from genlab.studies.double_descent.label_noise import (
    NoiseSweep,
    plot_label_noise,
    run_label_noise,
    summarize_label_noise,
)
from genlab.studies.double_descent.nn import (
    NetSweep,
    nn_seconds_estimate,
    one_hidden_layer_params,
    padding_groups,
    plot_nn,
    reuse_plan,
    run_nn,
    summarize_nn,
    threshold_width,
    width_grid,
)
from genlab.studies.double_descent.rff import RFFSweep, plot_rff, rff_flops, run_rff, summarize_rff

Mode = Literal["rff", "nn", "label_noise"]
MODES: tuple[str, ...] = ("rff", "nn", "label_noise")

__all__ = [
    "DoubleDescent", "DoubleDescentSpec", "NetSweep", "NoiseSweep", "RFFSweep", "RiskPeak",
    "classical_best_and_peak",
    "first_interpolating", "mean_curve", "one_hidden_layer_params", "padding_groups", "reuse_plan", "risk_peak",
    "run_rff",
    "summarize_rff", "threshold_width", "width_grid",
]


class DoubleDescentSpec(StudySpec):
    modes: list[Mode] = Field(list(MODES), min_length=1, description="experiments to run: rff (Belkin Fig. 2), nn "
                              "(Belkin Fig. 3), label_noise (Nakkiran, MNIST-1D)")
    rff: Annotated[RFFSweep, Prefix("rff")] = RFFSweep()
    nn: Annotated[NetSweep, Prefix("nn")] = NetSweep()
    noise: Annotated[NoiseSweep, Prefix("noise")] = NoiseSweep()
    interpolation_tolerance: float = Field(0.01, ge=0.0, lt=1.0, description="training error counted as ~0 "
                                           "(interpolation)")

    aliases = {"ridges": "rff_ridges"}
    help_texts = {"rff_n_train": "training examples n (the threshold is at n features)",
                  "nn_n_train": "training examples n (threshold at n*K parameters)",
                  "noise_schedule": "learning-rate schedule (Nakkiran/MNIST-1D: constant)",
                  "rff_dataset": "dataset (Belkin used MNIST, n = 10^4)"}

    @field_validator("modes")
    @classmethod
    def _distinct_modes(cls, v: list[str]) -> list[str]:
        return distinct(v, "modes")

    @model_validator(mode="after")
    def _sizes_given(self) -> "DoubleDescentSpec":
        for name, group in (("rff", self.rff), ("nn", self.nn), ("noise", self.noise)):
            if group.data.n_train is None or group.data.n_train < 2:
                raise ValueError(f"{name}_n_train must be at least 2 (the threshold is placed by it), "
                                 f"got {group.data.n_train}")
        return self

    presets = {
        "quick": dict(seeds=[0], rff_n_train=4000, rff_points=32, rff_ridges=[0.0, 1e-3],
                      # nn: Belkin Fig. 3 in budget (FINDINGS sec. 1): 2x2-pooled MNIST (d = 196) so that the
                      # threshold width h* = 24 is a well-trained net, fresh Glorot everywhere, trained to
                      # interpolation, 3 seeds for the seed spread of the peak check
                      nn_n_train=500, nn_pool=2, nn_widths=[4, 7, 11, 15, 19, 24, 30, 40, 60, 96], nn_reuse="never",
                      nn_group_ratio=25.0, nn_epochs=1000, nn_optimizer="adam", nn_lr=3e-3, nn_schedule="constant",
                      nn_stop_mse=1e-3, nn_eval_every=100, nn_seeds=[0, 1, 2],
                      noise_widths=[8, 16, 24, 32, 48, 64, 96, 128], noise_epochs=100, noise_lr=0.05,
                      noise_schedule="cosine", noise_eval_every=5),
        "paper": dict(seeds=[0, 1, 2], rff_n_train=4000, rff_points=40, rff_ridges=[0.0, 1e-3, 1e-2],
                      nn_n_train=4000, nn_points=24, nn_min_ratio=0.1, nn_max_ratio=4.0, nn_epochs=6000,
                      nn_optimizer="adam", nn_lr=3e-3, nn_schedule="step", nn_step_every=500,
                      nn_step_gamma=0.9, nn_eval_every=50, nn_stop_mse=1e-3,
                      noise_widths=[4, 8, 12, 16, 20, 24, 32, 40, 47, 56, 64, 80, 100, 128, 200, 300],
                      noise_epochs=500, noise_lr=0.01, noise_schedule="constant", noise_eval_every=2),
        "cifar": cifar_preset("double-descent"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(seeds=[0], rff_n_train=200, rff_n_test=200, rff_points=9, nn_n_train=100, nn_n_test=100,
                      nn_points=4, nn_epochs=2, nn_eval_every=1, noise_n_train=200, noise_n_test=100,
                      noise_widths=[4, 8, 16], noise_epochs=2, noise_eval_every=1),
    }


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
    timing_columns = ("seconds",)
    own_precision = "the random-features sweep is float64 (its features and minimum-norm solve)"

    def units(self, spec: DoubleDescentSpec) -> list[Unit]:
        units: list[Unit] = []
        if "rff" in spec.modes:
            units += [Unit(f"rff-seed{s}", {"mode": "rff", "seed": s}) for s in spec.seeds]
        if "nn" in spec.modes:
            units.append(Unit("nn", {"mode": "nn"}))
        if "label_noise" in spec.modes:
            units.append(Unit("label_noise", {"mode": "label_noise"}))
        return units

    def run_unit(self, spec: DoubleDescentSpec, unit: Unit, ctx) -> UnitResult:
        if unit["mode"] == "rff":
            return run_rff(spec, unit["seed"], ctx)
        if unit["mode"] == "nn":
            return run_nn(spec, ctx)
        return run_label_noise(spec, ctx)

    def estimate_seconds(self, spec: DoubleDescentSpec) -> float | None:
        """Rough wall time on 2 cores: floating-point work / rate + a per-step overhead.

        rff: its solves at :data:`FLOPS`. nn and label_noise: each model's own work (the engine
        batches the widths of a call in buckets, not padded to the widest) at :data:`SWEEP_FLOPS`
        for MLPs (conv nets at :data:`genlab.estimate.CPU_FLOPS`), plus :data:`STEP_OVERHEAD` per
        step of each engine call. Assumes MNIST-sized inputs (d = 784) for rff and nn; the
        constants are fitted to measured quick and paper runs.
        """
        from genlab.estimate import CPU_FLOPS, label_noise_work

        total = 0.0
        if "rff" in spec.modes:
            total += len(spec.seeds) * rff_flops(spec) / FLOPS
        if "nn" in spec.modes:
            total += nn_seconds_estimate(spec)
        if "label_noise" in spec.modes:
            sweep = spec.noise
            steps = sweep.optim.epochs * math.ceil(sweep.data.n_train / sweep.optim.batch_size)
            calls = 1 if sweep.model == "mlp" else len(sweep.widths)  # the ResNet: one call per width
            rate = SWEEP_FLOPS if sweep.model == "mlp" else CPU_FLOPS
            total += label_noise_work(spec).flops / rate + calls * steps * STEP_OVERHEAD
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
