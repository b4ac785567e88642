"""Model-wise double descent under label noise (Nakkiran, Kaplun, Bansal, Yang, Barak & Sutskever
2019, with the MNIST-1D set-up of Greydanus 2020): its unit, figure and checks.

The swept network is the MLP 40-h-h-10 (``model="mlp"``, width h) or Nakkiran et al.'s Fig. 1
ResNet-18 of width k (``model="resnet18"``: widths [k, 2k, 4k, 8k], ``preact`` for their
pre-activation blocks), with optional crop + flip augmentation: all the MLP's widths and seeds in
one batched engine call, the ResNet's one call per width with all its seeds (BatchNorm statistics
exact per model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from genlab.data import corrupt_labels
from genlab.engine import InputGroup, ModelJob, train_models
from genlab.models import build_model
from genlab.plotting import COLORS, figure, save
from genlab.seeding import derive_seed
from genlab.spec import AugmentSpec, DataSpec, Group, OptimSpec
from genlab.spec.fields import Init
from genlab.studies.base import Summary, UnitResult
from genlab.studies.double_descent.common import (
    _band,
    _log_x_with_plain_ticks,
    _threshold_line,
    classical_best_and_peak,
    first_interpolating,
    mean_curve,
)
from genlab.studies.double_descent.nn import parameter_norm, sorted_widths, trained_parameters


class NoiseSweep(Group):
    """The width sweep of MLPs 40-h-h-10 on labels of which a fraction is wrong, trained with cross-entropy."""

    data: DataSpec = DataSpec(dataset="mnist1d", n_train=4000)
    level: float = Field(0.15, ge=0.0, le=1.0, description="fraction of training labels replaced")
    mode: Literal["other", "uniform"] = Field("other", description="other = a different class (Nakkiran: exactly "
                                              "that fraction wrong); uniform = any class")
    model: Literal["mlp", "resnet18"] = Field("mlp", description="network swept: mlp (40-h-h-10, width h) or "
                                              "resnet18 (width k: widths k, 2k, 4k, 8k; Nakkiran et al. Fig. 1)")
    preact: bool = Field(False, description="resnet18: pre-activation blocks (as Nakkiran et al. trained)")
    widths: list[int] = Field([8, 16, 24, 32, 48, 64, 96, 128], min_length=3, description="widths h of the MLP "
                              "40-h-h-10 (resnet18: k)")
    init: Init = Field("default", description="weight initializer")
    eval_every: int = Field(5, gt=0, description="epochs between evaluations (the epoch-wise curve)")
    optim: OptimSpec = OptimSpec(optimizer="sgd", lr=0.05, batch_size=100, epochs=100, schedule="cosine")
    augment: AugmentSpec = AugmentSpec()

    @field_validator("widths")
    @classmethod
    def _widths_valid(cls, v: list[int]) -> list[int]:
        return sorted_widths(v)


def noise_network(sweep: NoiseSweep, width: int) -> tuple[str, dict]:
    """The zoo family and builder options of the swept network at ``width``."""
    if sweep.model == "resnet18":
        return "resnet18", {"width": width, **({"preact": True} if sweep.preact else {})}
    return "mlp", {"widths": [width, width]}


def network_name(sweep: NoiseSweep) -> str:
    """The swept network as the figure and the reading name it."""
    if sweep.model == "resnet18":
        return f"{'pre-activation ' if sweep.preact else ''}ResNet-18 of widths k, 2k, 4k, 8k"
    return "MLP 40-h-h-10" if sweep.data.dataset == "mnist1d" else "MLP d-h-h-C"


def width_symbol(sweep: NoiseSweep) -> str:
    return "k" if sweep.model == "resnet18" else "h"


def run_label_noise(spec, ctx) -> UnitResult:
    """Nakkiran's label-noise width sweep: every width and seed of the MLP in one engine call; the
    ResNet-18 widths one engine call each (all seeds of a width together): in one call every width
    would be padded to the widest (k = 64 is ~4,000x the arithmetic of k = 1), and each width's rows
    are cached as it finishes."""
    data = spec.noise.data.load()
    k, n = data.num_classes, len(data.y_train)
    noisy_labels, wrong = {}, {}
    for s in spec.seeds:
        noisy, _ = corrupt_labels(data.y_train.numpy(), spec.noise.level, k, derive_seed(s, "label-noise"),
                                  spec.noise.mode)
        noisy_labels[s] = noisy
        wrong[s] = float(np.mean(noisy != data.y_train.numpy()))
    inputs = InputGroup(data.x_train, data.x_test, data.y_test)
    config = spec.noise.optim.train_config("ce", eval_every=spec.noise.eval_every, device=spec.device)

    def train(keys: list[tuple[int, int]], label: str, snapshot) -> dict:
        jobs = []
        for h, s in keys:
            family, options = noise_network(spec.noise, h)
            model = build_model(family, data.input_shape, k, init=spec.noise.init, seed=derive_seed(s, "noise-init", h),
                                **options)
            jobs.append(ModelJob(f"h{h}-seed{s}", model, seed=derive_seed(s, "noise-order", h),
                                 y_train=torch.from_numpy(noisy_labels[s]), augment=spec.noise.augment.build()))
        ctx.progress.start_unit(label, spec.noise.optim.epochs, len(jobs))
        outcome = train_models(jobs, [inputs], config, on_epoch=ctx.progress.epoch, snapshot=snapshot)
        rows = []
        for pos, ((h, s), o) in enumerate(zip(keys, outcome.outcomes)):
            parameters = trained_parameters(outcome, pos)
            rows.append({"mode": "label_noise", "dataset": spec.noise.data.dataset, "n": n, "features_or_width": h,
                         "params": sum(t.numel() for t in parameters.values()), "threshold_params": None, "seed": s,
                         "train_mse": None, "test_mse": None, "train_ce": o.train_loss, "test_ce": o.test_loss,
                         "train_err": 1.0 - o.train_acc, "test_err": 1.0 - o.test_acc,
                         "norm": parameter_norm(parameters), "scheme": spec.noise.init, "ridge": None,
                         "epochs": o.epochs, "label_noise": spec.noise.level, "noise_mode": spec.noise.mode,
                         "fraction_wrong": wrong[s], "diverged": o.diverged})
        by_key = {f"h{h}-seed{s}": (h, s) for h, s in keys}
        curves = [{"mode": "label_noise", "width": by_key[c["key"]][0], "seed": by_key[c["key"]][1],
                   "scheme": spec.noise.init, "epoch": c["epoch"], "step": c["step"],
                   "train_ce": c["train_loss"], "test_ce": c["test_loss"],
                   "train_err": 1.0 - c["train_acc"], "test_err": 1.0 - c["test_acc"]} for c in outcome.curves]
        return {"rows": rows, "curves": curves}

    keys = [(h, s) for s in spec.seeds for h in spec.noise.widths]
    if spec.noise.model == "mlp":
        done = train(keys, "label_noise", ctx.snapshot())
        return UnitResult(done["rows"], done["curves"])
    rows, curves = [], []
    for h in spec.noise.widths:
        group = [(h, s) for s in spec.seeds]
        done = ctx.cached(f"width{h}", lambda g=group, h=h: train(g, f"label_noise k={h}", ctx.snapshot(f"w{h}")))
        rows += done["rows"]
        curves += done["curves"]
    order = {key: i for i, key in enumerate(keys)}
    rows.sort(key=lambda r: order[(r["features_or_width"], r["seed"])])
    return UnitResult(rows, curves)


def plot_label_noise(rows: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> Path:
    tolerance, sym = spec.interpolation_tolerance, width_symbol(spec.noise)
    curve = mean_curve(rows, "features_or_width", ["train_err", "test_err"])
    fig, axes = figure(2, width=5.0, height=3.8)
    ax = axes[0, 0]
    _band(ax, curve, "test_err", COLORS[3], "test error (clean test labels)")
    _band(ax, curve, "train_err", COLORS[0], "train error (noisy labels)", ls=":")
    fitted = first_interpolating(curve["train_err"], tolerance)
    if fitted is not None:
        _threshold_line(ax, fitted, f"first width with train error <= {tolerance:g}: {sym} = {fitted:g}")
    _, peak = classical_best_and_peak(curve["test_err"])
    ax.plot([peak], [curve.loc[peak, "test_err"]], marker="*", ms=12, color=COLORS[3], ls="none",
            label=f"test-error peak: {sym} = {peak:g}")
    _log_x_with_plain_ticks(ax, [float(w) for w in curve.index])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"width {sym} of the {network_name(spec.noise)} (log scale)")
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
            _band(ax, epoch_curve, "test_err", COLORS[(3 + i) % 10], f"test, {sym} = {w:g}", marker="")
            _band(ax, epoch_curve, "train_err", COLORS[(3 + i) % 10], f"train, {sym} = {w:g}", marker="", ls=":")
    _log_x_with_plain_ticks(ax)
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("zero-one error")
    ax.set_title("(b) epoch-wise curves")
    ax.legend(fontsize=7)
    fig.suptitle(f"Label noise {spec.noise.level:.0%} ('{spec.noise.mode}': relabelled to "
                 f"{'a different' if spec.noise.mode == 'other' else 'any'} class), {rows['dataset'].iloc[0]} "
                 f"n = {int(rows['n'].iloc[0])}, {spec.noise.optim.optimizer} lr {spec.noise.optim.lr:g} "
                 f"({spec.noise.optim.schedule}), "
                 f"{spec.noise.optim.epochs} epochs, "
                 f"{spec.noise.init} init - Nakkiran et al. 2019")
    return save(fig, out_dir, "double_descent_label_noise")


def seed_se(rows: pd.DataFrame, width: float, other: float) -> float:
    """Standard error over seeds of the per-seed test-error difference between two widths (0 with
    one seed: the check then rests on its fixed margin alone)."""
    table = rows.pivot_table(index="features_or_width", columns="seed", values="test_err")
    diffs = (table.loc[width] - table.loc[other]).dropna().to_numpy(dtype=float)
    return float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) >= 2 else 0.0


def summarize_label_noise(rows: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
    tolerance, sym = spec.interpolation_tolerance, width_symbol(spec.noise)
    curve = mean_curve(rows, "features_or_width", ["train_err", "test_err"])
    fitted = first_interpolating(curve["train_err"], tolerance)
    best, peak = classical_best_and_peak(curve["test_err"])
    best_err, peak_err = float(curve.loc[best, "test_err"]), float(curve.loc[peak, "test_err"])
    right = float(curve["test_err"].iloc[-1])
    widest = curve.index[-1]
    fitted_text = "none" if fitted is None else f"{fitted:g}"
    need_best, need_right = (max(0.02, 2 * seed_se(rows, peak, other)) for other in (best, widest))
    noise_text = "" if rows["seed"].nunique() < 2 else (f" and 2 standard errors of the per-seed difference "
                                                         f"({need_best:.1%} / {need_right:.1%} needed)")
    checks = [(f"label_noise: test-error peak ({sym} = {peak:g}) within a factor 2 of the first width with train error "
               f"<= {tolerance:g} ({sym} = {fitted_text})",
               bool(fitted is not None and fitted / 2 <= peak <= fitted * 2)),
              (f"label_noise: the peak ({peak_err:.1%}) stands >= 2 points{noise_text} above the bottom of the "
               f"classical U ({sym} = {best:g}: {best_err:.1%}) and the widest ({sym} = {widest:g}: {right:.1%})",
               bool(peak > best and peak_err >= best_err + need_best and peak_err >= right + need_right))]
    epoch_text = ""
    if len(curves):
        big = curves[(curves["width"] == widest) & (curves["epoch"] > 0)].groupby("epoch")["test_err"].mean()
        if len(big):
            early = big[big.index < big.index[-1]]
            low_epoch = int(early.idxmin()) if len(early) else int(big.index[-1])
            after = big[big.index > low_epoch]
            rise = (f"then up to {after.max():.1%} (epoch {int(after.idxmax())})" if len(after) and
                    after.max() > big[low_epoch] + 0.005 else "no rise after it")
            epoch_text = (f" Epoch-wise ({sym} = {widest:g}): test error {big.iloc[0]:.1%} at epoch "
                          f"{int(big.index[0])}, "
                          f"{big[low_epoch]:.1%} at epoch {low_epoch} (lowest before the end), {rise}, "
                          f"{big.iloc[-1]:.1%} at the last epoch ({int(big.index[-1])}).")
    noise = rows["fraction_wrong"].mean()
    verdict = (f"label_noise: test error {best_err:.1%} ({sym} = {best:g}) -> peak {peak_err:.1%} "
               f"({sym} = {peak:g}) -> {right:.1%} ({sym} = {widest:g}); train error first <= {tolerance:g} at "
               f"{sym} = {fitted_text}")
    reading = (f"{network_name(spec.noise)} on {rows['dataset'].iloc[0]} (n = {int(rows['n'].iloc[0])}) with "
               f"{spec.noise.level:.0%} label noise, convention '{spec.noise.mode}' "
               f"({'each selected label moved to a different class' if spec.noise.mode == 'other' else ''}"
               f"{'each selected label redrawn from all classes' if spec.noise.mode != 'other' else ''}; "
               f"measured {noise:.1%} of training labels wrong), {spec.noise.optim.optimizer} lr "
               f"{spec.noise.optim.lr:g} "
               f"({spec.noise.optim.schedule} schedule), momentum "
               f"{spec.noise.optim.momentum:g}, batch {spec.noise.optim.batch_size}, {spec.noise.optim.epochs} epochs, "
               f"{rows['seed'].nunique()} seed(s). Test error by width: "
               + ", ".join(f"{sym}={w:g} {e:.1%}" for w, e in curve["test_err"].items())
               + "; train error: " + ", ".join(f"{sym}={w:g} {e:.1%}" for w, e in curve["train_err"].items()) + ". "
               f"The peak is the largest test error at widths from the first local minimum of the test error "
               f"({sym} = {best:g}) upward."
               + epoch_text)
    paper = ("47.2% (h=16) / 54.05% (h=47) / 45.5% (h=300), MLP 40-h-h-10 on MNIST-1D, 500 epochs"
             if spec.noise.model == "mlp" else
             "Nakkiran et al. Fig. 1 (CIFAR-10, 15% noise, Adam 1e-4, 4K epochs): a peak where train error reaches 0, "
             "lower test error at k = 64")
    references = [("label_noise: test error best small / peak / wide", paper,
                   f"{best_err:.1%} ({sym}={best:g}) / {peak_err:.1%} ({sym}={peak:g}) / "
                   f"{right:.1%} ({sym}={widest:g}), {spec.noise.optim.epochs} epochs")]
    return Summary(verdict, reading, references, checks)
