"""The papers' CIFAR-10 experiments: each study's ``cifar`` preset, the figure it reproduces, the
paper's settings and numbers.

One :class:`CifarExperiment` per study. Its ``preset`` is the study's ``presets["cifar"]`` (flat
names over the study's defaults); ``settings`` lists what the paper did, with ``(?)`` where the
paper does not say and genlab chose; ``numbers`` are the paper's results to compare against. A
study's summary appends :func:`cifar_references` to its reference table when it ran the cifar preset,
so the report shows the paper's setting next to this run's.

Common to every preset: ``dataset=cifar10`` (all 50,000 training and 10,000 test images, scaled
to [0, 1], not whitened), 32x32 inputs. Zhang et al. (2017) center-cropped to 28x28 and whitened
each image; genlab trains on the full 32x32 images (the Inception's parameter count does not depend
on the image size; the small AlexNet has 1,756,426 parameters at 32x32 instead of 1,387,786).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd


@dataclass(frozen=True)
class CifarExperiment:
    figure: str                                   # what the preset reproduces
    preset: dict[str, Any]                        # flat settings of the study's "cifar" preset
    settings: list[tuple[str, str]]               # (setting, the paper's value)
    numbers: list[tuple[str, str, Callable[[pd.DataFrame], str] | None]] = field(default_factory=list)
    """(quantity, the paper's number, how to read ours from the results table or None)."""


def _mean(results: pd.DataFrame, column: str, **where: Any) -> str:
    part = results
    for key, value in where.items():
        if key not in part:
            return "n/a"
        part = part[part[key] == value]
    if column not in part or part[column].dropna().empty:
        return "n/a"
    return f"{part[column].mean():.1%}"


def _ranked(results: pd.DataFrame) -> pd.DataFrame:
    if "kind" not in results or "tau" not in results:
        return results.iloc[0:0]
    return results[(results["kind"] == "rank") & results["tau"].notna()].sort_values("rank")


def _top_measures(results: pd.DataFrame, count: int) -> str:
    ranked = _ranked(results).head(count)
    return ", ".join(f"{r.measure} {r.tau:+.2f}" for r in ranked.itertuples()) or "n/a"


def _tau(results: pd.DataFrame, measure: str) -> str:
    ranked = _ranked(results)
    row = ranked[ranked["measure"] == measure]
    return f"{float(row['tau'].iloc[0]):+.2f}" if len(row) else "n/a"


SGD_095 = dict(optimizer="sgd", lr=0.1, momentum=0.9, schedule="step", step_every=1, step_gamma=0.95,
               batch_size=128)

EXPERIMENTS: dict[str, CifarExperiment] = {
    "randomization": CifarExperiment(
        figure="Zhang et al. 2017, Fig. 1 (a-c): small Inception on CIFAR-10",
        preset=dict(dataset="cifar10", model="inception-small", **SGD_095, epochs=100, seeds=[0]),
        settings=[("network", "small Inception, 1,649,402 parameters, BN"),
                  ("optimizer", "SGD momentum 0.9, lr 0.1 (?) x0.95 per epoch, batch 128 (?)"),
                  ("inputs", "28x28 center crops, per-image whitening (genlab: 32x32, [0, 1])"),
                  ("budget", "until 100% train accuracy (genlab: stop at 100%, at most 100 epochs)")],
        numbers=[("true labels: train / test accuracy (Table 1, no regularizer)", "100% / 85.75%",
                  lambda r: f"{_mean(r, 'train_acc', corruption=0.0, inputs='clean')} / "
                            f"{_mean(r, 'test_acc', corruption=0.0, inputs='clean')}"),
                 ("random labels: train / test accuracy (Table 1)", "100% / 9.78%",
                  lambda r: f"{_mean(r, 'train_acc', corruption=1.0)} / {_mean(r, 'test_acc', corruption=1.0)}"),
                 ("time to fit random labels (Fig. 1b)", "a small constant factor over true labels", None)]),
    "regularization": CifarExperiment(
        figure="Zhang et al. 2017, Table 1: small Inception, crop x weight decay (x dropout, genlab's) on CIFAR-10",
        preset=dict(dataset="cifar10", model="inception-small", dropout=0.5, weight_decay=5e-4, **SGD_095,
                    epochs=100, max_shift=4, shift_padding="zeros", stop_train_acc=1.0, eval_every=5, seeds=[0]),
        settings=[("network", "small Inception (no dropout in the paper; genlab's dropout cells put 0.5 before "
                              "the classifier)"),
                  ("regularizers", "random crop, weight decay (value not stated; genlab 5e-4 (?))"),
                  ("optimizer", "SGD momentum 0.9, lr 0.1 (?) x0.95 per epoch, batch 128 (?)")],
        numbers=[("crop + weight decay: train / test", "100% / 89.05%",
                  lambda r: f"{_mean(r, 'train_acc', cell='wd+aug', labels='true')} / "
                            f"{_mean(r, 'test_acc', cell='wd+aug', labels='true')}"),
                 ("crop only", "100% / 89.31%",
                  lambda r: f"{_mean(r, 'train_acc', cell='aug', labels='true')} / "
                            f"{_mean(r, 'test_acc', cell='aug', labels='true')}"),
                 ("weight decay only", "100% / 86.03%",
                  lambda r: f"{_mean(r, 'train_acc', cell='wd', labels='true')} / "
                            f"{_mean(r, 'test_acc', cell='wd', labels='true')}"),
                 ("no regularizer", "100% / 85.75%",
                  lambda r: f"{_mean(r, 'train_acc', cell='none', labels='true')} / "
                            f"{_mean(r, 'test_acc', cell='none', labels='true')}"),
                 ("random labels, no regularizer", "100% / 9.78%",
                  lambda r: f"{_mean(r, 'train_acc', cell='none', labels='random')} / "
                            f"{_mean(r, 'test_acc', cell='none', labels='random')}")]),
    "layer-robustness": CifarExperiment(
        figure="Zhang, Bengio & Singer 2019: VGG-11 heatmaps (Fig. 2) and the residual-block view (Fig. 10, "
               "ResNet-18 here, ResNet-50 in the paper)",
        preset=dict(networks=["vgg11", "resnet18"], dataset="cifar10", optimizer="sgd", lr=0.1, momentum=0.9,
                    weight_decay=5e-4, batch_size=128, epochs=100, schedule="cosine", augment="crop-flip",
                    zoo_init="paper", draws=3, seeds=[0]),
        settings=[("networks", "VGG-11 (BN), ResNets (paper: ResNet-50; genlab: ResNet-18, same block view)"),
                  ("optimizer", "SGD momentum 0.9 (lr, schedule, epochs not restated here: genlab lr 0.1, "
                                "cosine, 100 epochs, wd 5e-4, crop + flip (?))")],
        numbers=[("VGG-11: re-randomizing any layer", "test error ~90% (chance)", None),
                 ("VGG-11: re-initializing to epoch 0", "hurts only the first layer(s)", None),
                 ("ResNet: residual blocks", "robust except the first layer of some blocks", None)]),
    "lottery": CifarExperiment(
        figure="Frankle & Carbin 2019, Fig. 5 (Conv-2 on CIFAR-10: tickets vs random re-init and random pruning)",
        preset=dict(dataset="cifar10", model="conv2", init="paper", optimizer="adam", lr=2e-4, batch_size=60,
                    epochs=27, val_size=5000, rounds=15, prune_rate=0.2, conv_prune_rate=0.1, output_prune_rate=0.1,
                    pruning="layerwise", seeds=[0, 1, 2]),
        settings=[("Conv-2", "3x3 conv 64, 64, pool; FC 256-256-10; Gaussian Glorot init; 4.3M weights"),
                  ("training", "Adam 2e-4, batch 60, 20K iterations (= 27 epochs of 45,000), 5,000 validation "
                               "images, early stopping on validation loss"),
                  ("pruning", "conv 10%, fc 20%, output 10% per round, reset to initialization"),
                  ("Conv-4 / Conv-6", "--model conv4 --lr 3e-4 --epochs 34 / --model conv6 --lr 3e-4 --epochs 40 "
                                      "--conv-prune-rate 0.15"),
                  ("VGG-19 / ResNet-20 (Frankle et al. 2019)", "--model vgg19 | resnet20 --shortcut B --optimizer "
                   "sgd --lr 0.1 --batch-size 64|128 --weight-decay 1e-4 --pruning global --conv-prune-rate 0.2 "
                   "--rewind-epoch 1..2 --augment crop-flip (random 4-pixel crops and flips, as open_lth); the "
                   "paper's x0.1 at epochs 80/120 is not expressible (use --schedule cosine), nor its warmup")],
        numbers=[("Conv-2 dense test accuracy", "~65% (Fig. 5)",
                  lambda r: _mean(r, "test_acc_at_early_stop", round=0, arm="ticket")),
                 ("Conv-2 tickets", "reach higher accuracy down to ~10% of weights; random re-init degrades "
                                    "earlier", None)]),
    "intrinsic-dim": CifarExperiment(
        figure="Li et al. 2018, Table 1 (CIFAR-10 rows): d_int90 of FC 3072-200-200-10 and LeNet",
        preset=dict(datasets=["cifar10"], models=["mlp", "lenet-li"], widths=[200, 200], width_factors=[1],
                    optimizer="adam", lr=1e-3, batch_size=128, epochs=100, seeds=[0, 1], projection="fastfood",
                    d_start=1000, tolerance=1.15),
        settings=[("networks", "FC 3072-200-200-10 (D = 656,810), LeNet (D = 62,006)"),
                  ("training", "Adam 1e-3, batch 128, 100 epochs (?)"),
                  ("projection", "Fastfood for large D")],
        numbers=[("CIFAR-10 FC d_int90", "9,000", None), ("CIFAR-10 LeNet d_int90", "2,900", None)]),
    "double-descent": CifarExperiment(
        figure="Nakkiran et al. 2019, Fig. 1: model-wise double descent of ResNet-18 width k with 15% label noise",
        preset=dict(modes=["label_noise"], noise_dataset="cifar10", noise_n_train=50000, noise_model="resnet18",
                    noise_preact=True, noise_widths=[1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64],
                    noise_level=0.15, noise_mode="other", noise_optimizer="adam", noise_lr=1e-4,
                    noise_batch_size=128, noise_epochs=4000, noise_schedule="constant", noise_eval_every=50,
                    noise_augment="crop-flip", seeds=[0]),
        settings=[("network", "pre-activation ResNet-18, widths [k, 2k, 4k, 8k], k = 1..64"),
                  ("training", "Adam 1e-4, batch 128, 4K epochs, crop + flip, no weight decay"),
                  ("labels", "15% replaced by another class (train only; clean test labels)")],
        numbers=[("test error peak", "near k ~ 10-12 (where train error reaches ~0), falling again to k = 64",
                  None)]),
    "measures": CifarExperiment(
        figure="Jiang et al. 2019: Kendall tau of each measure with the generalization gap over NiNs trained to "
               "cross-entropy 0.01 on CIFAR-10 (their 3^7 grid here one axis at a time around the middle values)",
        preset=dict(dataset="cifar10", network="nin", base_width=192, sweep_widths=[96, 384], base_depth=3,
                    sweep_depths=[2, 4], optimizer="sgd", momentum=0.9, base_lr=0.032, sweep_lrs=[0.1, 0.01],
                    base_batch_size=64, sweep_batch_sizes=[32, 128], base_dropout=0.25, sweep_dropouts=[0.0, 0.5],
                    weight_decay=1e-4, sweep_weight_decays=[0.0, 5e-4], sweep_optimizers=["sgd_plain", "adam"],
                    plain_sgd_lr=0.1, adam_lr=1e-3, epochs=300, stop_loss=0.01, speed_loss=0.1,
                    sharpness_points=2000, worst_case_points=1000, worst_case_steps=10, worst_case_bisections=6,
                    seeds=[0, 1]),
        settings=[("network", "NiN: blocks of a 3x3 stride-2 conv and two 1x1 convs, each with BN and ReLU, then a "
                              "1x1 conv to 10 channels and global average pooling"),
                  ("axes (3 values each, 2,187 models)", "depth 2, 3, 4 NiN blocks (?); width: channels (values not "
                   "confirmed; genlab 96, 192, 384 (?)); lr 0.1, 0.032, 0.01; batch 32, 64, 128; dropout 0, 0.25, "
                   "0.5 (placement not stated: genlab at the end of each block (?)); weight decay 0, 1e-4, 5e-4; "
                   "optimizer SGD, SGD momentum 0.9, Adam"),
                  ("design", "full grid (genlab: one axis at a time around the middle values, 15 configurations "
                             "x 2 seeds; the Adam and plain-SGD models use lr 1e-3 (?) and 0.1 (?))"),
                  ("stopping", "training cross-entropy 0.01 (genlab: at most 300 epochs (?))")],
        numbers=[("best-correlated measures", "sharpness / PAC-Bayes flatness, magnitude-aware in particular; "
                                              "optimization speed", lambda r: _top_measures(r, 3)),
                 ("spectral-norm product vs the gap", "negative Kendall tau",
                  lambda r: _tau(r, "spectral_product"))]),
    "description-length": CifarExperiment(
        figure="Blier & Ollivier 2018: prequential description length of CIFAR-10 labels",
        preset=dict(dataset="cifar10", architectures=["mlp-512-512", "lenet-li", "vgg11"], optimizer="adam",
                    lr=1e-3, batch_size=64, epochs=50, first_block=64, seeds=[0]),
        settings=[("networks", "genlab's choice (?): MLP 512-512, LeNet, VGG-11"),
                  ("training", "Adam (?) per block, stopping chosen on held-out data")],
        numbers=[("uniform code of 50,000 labels", "166 kbits (50,000 log2 10)", None)]),
    "expressivity": CifarExperiment(
        figure="Zhang et al. 2017, Theorem 1 on CIFAR-10 inputs: 2n+d weights interpolate n images",
        preset=dict(datasets=["cifar10"], sizes=[1000, 2000, 5000, 10000, 20000, 50000], seeds=[0]),
        settings=[("construction", "one shared direction w, sorted projections, triangular solve")],
        numbers=[("max residual", "0 (exact interpolation)", None)]),
}


def cifar_preset(study: str) -> dict[str, Any]:
    """The flat settings of ``study``'s ``cifar`` preset."""
    return dict(EXPERIMENTS[study].preset)


def cifar_references(study: str, spec, results: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Rows for a summary's reference table when ``spec`` ran the cifar preset (else none): the
    paper's settings, and its numbers next to ours where the results table has them."""
    if getattr(spec, "preset", None) != "cifar" or study not in EXPERIMENTS:
        return []
    experiment = EXPERIMENTS[study]
    rows = [(f"setting: {name}", paper, "see the run's spec") for name, paper in experiment.settings]
    for quantity, paper, ours in experiment.numbers:
        rows.append((quantity, paper, ours(results) if ours is not None and len(results) else "in the figures"))
    return rows


def with_cifar_references(study, results: pd.DataFrame, curves: pd.DataFrame, spec):
    """``study.summarize(...)`` with the cifar preset's reference rows appended (the report and the CLI)."""
    summary = study.summarize(results, curves, spec)
    summary.references = [*summary.references, *cifar_references(study.name, spec, results)]
    return summary
