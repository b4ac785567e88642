"""The answer at the top of a diagnosis: "is this model overfitted?", from the measured numbers.

"Overfitted" is read in the two senses the literature measures directly: a large generalization
gap (train accuracy far above test accuracy, Zhang et al. 2017), and, when a record shows the
training, a test loss that rose while the training loss kept falling (the classical sign, which
early stopping acts on). The other measures do not decide it: Jiang et al. 2019 found that
no complexity measure predicts the gap across all the hyperparameter changes they tried, that
sharpness (PAC-Bayes flatness, magnitude-aware) and path norm predicted it best, and that norm
products such as the spectral product often ranked models the wrong way; a measure is a relative
number, meaningful when comparing networks on the same data. Each finding says what it suggests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

LARGE_GAP = 0.10
"""A train-test accuracy gap above this (10 points) is called large."""
SMALL_GAP = 0.03
"""A gap below this (3 points) shows no measurable overfitting on a test set of a few thousand."""
LOSS_RISE = 0.10
"""A final test loss this fraction above its recorded minimum counts as having risen."""


@dataclass
class Finding:
    name: str
    value: str
    suggests: str


@dataclass
class Answer:
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


RETRAINED_NAMES = {"description_length": "description length (retrained; Blier & Ollivier 2018)",
                   "intrinsic_dim": "intrinsic dimension (retrained; Li et al. 2018)",
                   "lottery": "lottery ticket (retrained; Frankle & Carbin 2019)"}
"""The summary's name of each retraining result beside the randomization test."""


def answer(perf: dict, measures: dict, trajectory: pd.DataFrame | None, layers: pd.DataFrame,
           spectra: pd.DataFrame, randomization: dict | None, has_init: bool, retrained: dict | None = None,
           retrain: bool = False) -> Answer:
    out = Answer(verdict=_verdict(perf, trajectory))
    out.findings.append(_gap_finding(perf))
    if trajectory is not None and len(trajectory) >= 2:
        out.findings.append(_trajectory_finding(trajectory))
    out.findings.append(_margin_finding(measures))
    out.findings.append(_sharpness_finding(measures))
    if has_init and not math.isnan(measures.get("dist_from_init", math.nan)):
        out.findings.append(Finding(
            "Jiang et al. dist_from_init, weight matrices", f"||W - W_0|| = {measures['dist_from_init']:.3g} over "
            f"the weight matrices (||W|| = {measures['l2_norm']:.3g})",
            "how far training moved the weight matrices (Nagarajan & Kolter 2019); in Jiang et al. a moderate "
            "predictor of the gap across networks trained alike (farther usually meaning more capacity used), with no "
            "absolute threshold. The trajectory's distance from init, all parameters, also counts biases and "
            "normalization parameters"))
    if not layers.empty:
        out.findings.append(_layers_finding(layers))
    if not spectra.empty:
        out.findings.append(_spectra_finding(spectra))
    if randomization:
        out.findings.append(_randomization_finding(randomization))
    for name, part in (retrained or {}).items():
        out.findings.append(Finding(RETRAINED_NAMES[name], part["value"], part["suggests"]))
    out.caveats = [
        "No single measure decides whether a network is overfitted (Jiang et al. 2019): the gap is the direct "
        "measurement, the other numbers are hints about why, each valid only relative to other networks on the "
        "same data.",
        "The test set must be data the model never saw in training or model selection; otherwise the gap is "
        "underestimated.",
        "A gap measured on n test examples has a standard error of about sqrt(acc (1 - acc) / n) "
        f"(here {100 * _standard_error(perf):.1f} points).",
        "Fitting the training set perfectly is not by itself overfitting: Zhang et al. 2017 show networks that "
        "interpolate and still generalize.",
    ]
    if trajectory is None:
        out.missing.append("A record of the training (genlab.Recorder: two lines in the training loop) would add "
                           "the test loss across epochs (the direct sign of overfitting in time), distances from "
                           "initialization, and the re-initialization heatmap of each layer to each epoch.")
    if not retrain:
        out.missing.append("A retraining budget (budget='retrain' with the model's factory) would add the "
                           "randomization test (whether this architecture memorizes random labels on this data, and "
                           "how much slower), the prequential description length of its labels against random "
                           "labels, its intrinsic dimension, and a lottery ticket at a few sparsities.")
    return out


def _verdict(perf: dict, trajectory: pd.DataFrame | None) -> str:
    gap, train, test = perf["acc_gap"], perf["train_acc"], perf["test_acc"]
    numbers = f"train accuracy {100 * train:.1f}%, test {100 * test:.1f}%, gap {100 * gap:.1f} points"
    if gap > LARGE_GAP:
        text = f"Overfitted in the sense of a large generalization gap ({numbers})."
    elif gap > SMALL_GAP:
        text = f"A moderate generalization gap ({numbers})."
    elif train < 0.9:
        text = f"Not overfitted: it fits its training set little better than the test set ({numbers}); if " \
               f"accuracy is too low, it underfits."
    else:
        text = f"No measurable overfitting in accuracy ({numbers})."
    rise = _loss_rise(trajectory)
    if rise is not None:
        epoch, best, last = rise
        text += (f" The recorded test loss reached its minimum {best:.3f} at epoch {epoch} and ended at {last:.3f}: "
                 f"training beyond epoch {epoch} overfitted in the classical sense.")
    return text


def _loss_rise(trajectory: pd.DataFrame | None) -> tuple[int, float, float] | None:
    if trajectory is None or len(trajectory) < 2:
        return None
    best = trajectory.loc[trajectory["test_loss"].idxmin()]
    last = trajectory.iloc[-1]
    if int(best.epoch) < int(last.epoch) and last.test_loss > (1 + LOSS_RISE) * best.test_loss:
        return int(best.epoch), float(best.test_loss), float(last.test_loss)
    return None


def _standard_error(perf: dict) -> float:
    n = perf.get("n_test", 0)
    acc = perf["test_acc"]
    return math.sqrt(acc * (1 - acc) / n) if n else math.nan


def _gap_finding(perf: dict) -> Finding:
    return Finding("generalization gap", f"{100 * perf['acc_gap']:.1f} points of accuracy; test loss "
                   f"{perf['test_loss']:.3f} vs train {perf['train_loss']:.3f}",
                   "the direct measure: how much better the model does on the data it was trained on. A test loss "
                   "far above the training loss with a small accuracy gap means confident mistakes on test data "
                   "(over-confidence) rather than wrong answers.")


def _trajectory_finding(trajectory: pd.DataFrame) -> Finding:
    best_acc = trajectory.loc[trajectory["test_acc"].idxmax()]
    best_loss = trajectory.loc[trajectory["test_loss"].idxmin()]
    last = trajectory.iloc[-1]
    return Finding("recorded training", f"best test accuracy {100 * best_acc.test_acc:.1f}% at epoch "
                   f"{int(best_acc.epoch)}, lowest test loss {best_loss.test_loss:.3f} at epoch "
                   f"{int(best_loss.epoch)}; last recorded epoch {int(last.epoch)}: {100 * last.test_acc:.1f}%, "
                   f"loss {last.test_loss:.3f}",
                   "a test loss that rises while the training loss falls is the classical sign of overfitting; "
                   "stopping at the lowest test loss would have chosen that epoch (on a validation set, not the "
                   "test set, to keep the test honest).")


def _margin_finding(measures: dict) -> Finding:
    gamma = measures["margin"]
    if gamma <= 0:
        return Finding("margin", f"10th-percentile training margin {gamma:.3g} <= 0",
                       "more than 10% of training points are misclassified or on the boundary: the margin-normalized "
                       "bounds are undefined; the model underfits part of its training set.")
    return Finding("margin-normalized norms", f"margin {gamma:.3g}; spectral product / margin^2 "
                   f"{measures['spectral_over_margin']:.3g}; path norm / margin^2 "
                   f"{measures['path_norm_over_margin']:.3g}",
                   "capacity relative to how confidently the training set is separated (Bartlett et al. 2017; "
                   "Neyshabur et al. 2015). Larger values allow a larger gap. In Jiang et al.'s study path norm "
                   "ranked models fairly well, the spectral product poorly: use them to compare networks.")


def _sharpness_finding(measures: dict) -> Finding:
    sigma, sigma_mag = measures.get("sharpness_sigma", math.nan), measures.get("magnitude_aware_sigma", math.nan)
    if math.isnan(sigma):
        return Finding("sharpness", "not measured", "")
    return Finding("sharpness (PAC-Bayes flatness)", f"sigma = {sigma:.3g} (isotropic), {sigma_mag:.3g} "
                   f"(magnitude-aware)",
                   "the largest Gaussian weight noise that raises the training error by at most the target; "
                   "a larger sigma is a flatter minimum. The best single predictors of the gap in Jiang et al. "
                   "2019, and still only relative: compare with other networks on the same data.")


def _layers_finding(layers: pd.DataFrame) -> Finding:
    critical = layers[layers["verdict"] == "critical"]
    names = ", ".join(critical["layer"].astype(str)) or "none"
    return Finding("layer robustness", f"{len(critical)} of {len(layers)} layers critical ({names})",
                   "a robust layer can be reset to its initial value (or redrawn) with little loss of test "
                   "accuracy: it learned little the network needs. Zhang, Bengio & Singer 2019 found most layers "
                   "of large networks robust; a count to compare with other networks on the same data, not a "
                   "verdict by itself.")


def _spectra_finding(spectra: pd.DataFrame) -> Finding:
    ratio = (spectra["stable_rank"] / spectra["rank_max"]).to_numpy()
    low = spectra.loc[ratio < 0.1, "layer"].astype(str).tolist()
    return Finding("spectra of the weight matrices", f"stable rank / full rank from {ratio.min():.2f} to "
                   f"{ratio.max():.2f}" + (f"; below 0.1 in {', '.join(low)}" if low else ""),
                   "a low stable rank means a few directions dominate the layer (an effectively smaller layer). It "
                   "describes the weights, not the data: it says nothing about the gap by itself.")


def _randomization_finding(result: dict) -> Finding:
    return Finding("randomization test (retrained)", result["value"], result["suggests"])
