"""The diagnosis page: the report's template set and figure embedding (:mod:`genlab.report`),
one section per view (question, reading from the numbers, figures, what each number means)."""
from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from torch import nn

from genlab.report.build import _data_uri
from genlab.run.store import environment, package_versions

MEASURES = {
    "params": "number of trainable parameters (a poor predictor of the gap in Jiang et al., if anything the wrong way)",
    "l2_norm": "||theta||_2 over all trainable parameters",
    "dist_from_init": "||W - W_0||_2 over the weight matrices only (convolution and linear kernels; biases and "
                      "normalization excluded), Jiang et al.'s dist.l2 (needs the record's epoch 0; Nagarajan & "
                      "Kolter 2019)",
    "spectral_product": "prod_i ||W_i||_2 over weight matrices (Bartlett et al. 2017)",
    "frobenius_product": "prod_i ||W_i||_F (Neyshabur et al. 2015)",
    "path_norm": "squared l2 path norm: sum over input-output paths of prod w^2 (Neyshabur et al. 2015)",
    "margin": "10th percentile of the training output margins (Jiang et al.)",
    "spectral_over_margin": "prod ||W_i||_2^2 / margin^2 (scale-invariant; NaN when the margin <= 0)",
    "sum_of_spectral_over_margin": "d (prod ||W_i||_2^2 / margin^2)^(1/d)",
    "frobenius_over_margin": "prod ||W_i||_F^2 / margin^2",
    "sum_of_frobenius_over_margin": "d (prod ||W_i||_F^2 / margin^2)^(1/d)",
    "path_norm_over_margin": "path norm / margin^2 (among the better predictors of the gap in Jiang et al.)",
    "sharpness_sigma": "largest isotropic weight-noise std whose mean training-error increase is <= 0.1",
    "pacbayes_sharpness": "1 / sigma^2 (Jiang et al. pacbayes.flatness: larger = sharper)",
    "magnitude_aware_sigma": "the same with noise std proportional to |theta_i| + 1e-3",
    "magnitude_aware_sharpness": "1 / sigma'^2 (Jiang et al. pacbayes.mag.flatness, their best predictor)",
}


LABELS = {"dist_from_init": "Jiang et al. dist_from_init, weight matrices"}
"""Names shown instead of a measure's key where the key alone would be ambiguous."""


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _figure(path: Path, root: Path) -> dict:
    return {"src": _data_uri(path), "name": path.stem, "svg": str(path.with_suffix(".svg").relative_to(root))}


def sections(result, figure_paths: list[Path], root: Path) -> list[dict]:
    figs = {p.stem: _figure(p, root) for p in figure_paths}
    perf, m = result.performance, result.measures
    out = [{
        "id": "performance", "title": "Train and test",
        "question": "How much better does the model do on the data it was trained on?",
        "reading": " ".join(f"{f.value}." for f in result.answer.findings
                            if f.name in ("generalization gap", "recorded training")),
        "figures": [figs[n] for n in ("trajectory", "performance") if n in figs],
        "table": {"header": ["", "loss", "accuracy", "examples"],
                  "rows": [["train", _fmt(perf["train_loss"]), _fmt(perf["train_acc"]), perf["n_train"]],
                           ["test", _fmt(perf["test_loss"]), _fmt(perf["test_acc"]), perf["n_test"]],
                           ["gap", _fmt(perf["loss_gap"]), _fmt(perf["acc_gap"]), ""]]},
        "meaning": [("accuracy", "fraction of examples whose arg-max output is the label (eval mode)"),
                    ("loss", "mean cross-entropy of the outputs as logits"),
                    ("gap", "train accuracy minus test accuracy; test loss minus train loss")]
                   + ([("distance from init, all parameters", "||theta_t - theta_0||_2 over every trainable "
                        "parameter (biases and normalization included) at each recorded epoch (the trajectory "
                        "figure; dist_from_init_all_params in diagnosis.json); not Jiang et al.'s dist_from_init, "
                        "which is over the weight matrices only")] if result.trajectory is not None else []),
    }, {
        "id": "margins", "title": "Margins",
        "question": "How confidently are training and test points classified?",
        "reading": f"10th-percentile training margin {_fmt(m['margin'])}; a test distribution shifted left of the "
                   f"training one is the gap seen point by point.",
        "figures": [figs["margins"]], "table": None, "meaning": [],
    }, {
        "id": "measures", "title": "Generalization measures (Jiang et al. 2019)",
        "question": "What do the complexity measures of the literature say about this network?",
        "reading": "These are relative numbers: Jiang et al. compared them across thousands of networks and found "
                   "sharpness and path norm ranking networks by their gap best, norm products worst. On one "
                   "network they describe it; to judge it, compare with another training run on the same data.",
        "figures": [], "table": {"header": ["measure", "value", "what it is"],
                                 "rows": [[LABELS.get(k, k), _fmt(m[k]), MEASURES.get(k, "")] for k in m]},
        "meaning": [],
    }]
    if not result.robustness.empty:
        verdicts = result.layers
        critical = int((verdicts["verdict"] == "critical").sum())
        out.append({
            "id": "layers", "title": "Layer robustness (Zhang, Bengio & Singer 2019)",
            "question": "Which layers does the trained network need, and which could be reset with little loss?",
            "reading": f"{critical} of {len(verdicts)} layers are critical (resetting one costs more than the "
                       f"threshold of test accuracy). " + (
                           "Each layer is re-initialized to every recorded epoch (columns) and re-drawn from the "
                           "initializer (last column); BatchNorm statistics stay trained."
                           if (result.robustness["operation"] == "reinit").any() else
                           "Without a record, layers are only re-drawn from the initializer; the verdict compares "
                           "the re-drawn accuracy with the trained one."),
            "figures": [figs[n] for n in ("layer_robustness_heatmaps", "layer_robustness") if n in figs],
            "table": {"header": ["layer", "", "params", "reset to epoch 0", "re-randomized", "rel. distance",
                                 "verdict"],
                      "rows": [[r.layer, r.label, r.params, _fmt(r.reinit0_test_acc), _fmt(r.rerandomized_test_acc),
                                _fmt(r.dist_rel), r.verdict] for r in verdicts.itertuples()]},
            "meaning": [("reset to epoch 0", "test accuracy with this layer at its initial value, the others trained"),
                        ("re-randomized", "mean test accuracy with this layer drawn afresh from the initializer"),
                        ("rel. distance", "||w_T - w_0|| / ||w_0|| of the layer")],
        })
    if not result.spectra.empty:
        out.append({
            "id": "spectra", "title": "Spectra of the weight matrices",
            "question": "How many directions does each layer effectively use?",
            "reading": next((f.value for f in result.answer.findings if f.name.startswith("spectra")), ""),
            "figures": [figs["spectra"]],
            "table": {"header": ["layer", "matrix", "spectral norm", "Frobenius norm", "stable rank"],
                      "rows": [[r.layer, r.shape, _fmt(r.spectral_norm), _fmt(r.frobenius_norm),
                                _fmt(r.stable_rank)] for r in result.spectra.itertuples()]},
            "meaning": [("stable rank", "||W||_F^2 / ||W||_2^2: between 1 and the rank, a robust count of the "
                                        "directions the matrix uses"),
                        ("matrix", "convolution kernels as out_channels x (in_channels x kernel)")],
        })
    if result.randomization:
        r = result.randomization
        out.append({
            "id": "randomization", "title": "Randomization test (Zhang et al. 2017), retrained",
            "question": "Can this architecture memorize this training set with random labels?",
            "reading": f"{r['value']}: {r['suggests']} Retrained with {r['optimizer']} lr {r['lr']}, batch "
                       f"{r['batch_size']}, at most {r['epochs']} epochs (genlab's recipe, not the user's).",
            "figures": [figs[n] for n in ("randomization",) if n in figs], "table": None, "meaning": [],
        })
    out += _retrained_sections(result, figs)
    return out


def _skipped_section(section: dict, part: dict) -> dict:
    return {**section, "reading": f"Skipped: {part['skipped']}.", "figures": [], "table": None, "meaning": []}


def _description_length_section(section: dict, dl: dict, figs: dict) -> dict:
    blocks = dl["blocks"]
    return {**section, "reading": f"{dl['value']}: {dl['suggests']} {dl['caveat']} Settings: {dl['n']} training "
                                  f"examples; {dl['settings']}.",
            "figures": [figs[n] for n in ("description_length",) if n in figs],
            "table": {"header": ["labels", "prequential bits", "of uniform", "last block, bits/label"],
                      "rows": [[labels, _fmt(dl[f"{labels}_bits"]), f"{dl[f'{labels}_ratio']:.1%}",
                                _fmt(float(blocks[blocks.labels == labels]["bits_per_label"].iloc[-1]))]
                               for labels in ("true", "random")]},
            "meaning": [("prequential bits", "the first block sent uniformly (log2 K bits per label), each later "
                         "block with -log2 p(y|x) of a fresh network trained on the labels already sent (its "
                         "stopping epoch chosen on a validation part of them)"),
                        ("of uniform", "the code over n log2 K; random labels cannot go below about 100%"),
                        ("32 bits x parameters", "the naive two-part code: sending the weights")]}


def _retrained_sections(result, figs: dict) -> list[dict]:
    out = []
    dl = result.retrained.get("description_length")
    if dl:
        section = {"id": "description_length", "title": "Description length (Blier & Ollivier 2018), retrained",
                   "question": "How many bits does this architecture need to send its training labels, against "
                               "random labels?"}
        out.append(_skipped_section(section, dl) if "skipped" in dl else _description_length_section(section, dl, figs))
    iid = result.retrained.get("intrinsic_dim")
    if iid:
        section = {"id": "intrinsic_dim", "title": "Intrinsic dimension (Li et al. 2018), retrained",
                   "question": "How many degrees of freedom does this architecture need to learn this data?"}
        if "skipped" in iid:
            out.append(_skipped_section(section, iid))
        else:
            runs = iid["runs"]
            out.append({**section, "reading": f"{iid['value']}: {iid['suggests']} {iid['caveat']} Settings: "
                                              f"{iid['settings']}.",
                        "figures": [figs[n] for n in ("intrinsic_dim",) if n in figs],
                        "table": {"header": ["training", "d", "validation accuracy", "test accuracy"],
                                  "rows": [[r.kind, r.d, _fmt(r.val_acc), _fmt(r.test_acc)]
                                           for r in runs.itertuples()]},
                        "meaning": [("d", "dimension of the random subspace theta_0 + P theta_d trained (direct: D, "
                                     "all parameters)"),
                                    ("d_int90", "smallest d reaching 90% of the direct validation accuracy, "
                                     "interpolated in log d")]})
    lt = result.retrained.get("lottery")
    if lt:
        section = {"id": "lottery", "title": "Lottery ticket (Frankle & Carbin 2019), retrained",
                   "question": "Does a sparse subnetwork, reset to its initial weights, train as well as the dense "
                               "network, and better than the same mask re-initialized?"}
        if "skipped" in lt:
            out.append(_skipped_section(section, lt))
        else:
            out.append({**section, "reading": f"{lt['value']}. {lt['suggests']} {lt['caveat']} Settings: "
                                              f"{lt['settings']}.",
                        "figures": [figs[n] for n in ("lottery",) if n in figs],
                        "table": {"header": ["round", "network", "weights remaining", "validation accuracy",
                                             "test accuracy"],
                                  "rows": [[r.round, r.arm, f"{100 * r.weights_remaining:.1f}%", _fmt(r.val_acc),
                                            _fmt(r.test_acc)] for r in lt["table"].itertuples()]},
                        "meaning": [("ticket", "the kept weights reset to their initial values, then trained"),
                                    ("reinit", "the same mask on a fresh initialization from the factory, trained as "
                                     "long (the control)"),
                                    ("weights remaining", "fraction of the prunable weights (linear and convolution "
                                     "kernels) kept")]})
    return out


def render(result, figure_paths: list[Path], root: Path, model: nn.Module, *, dataset: str, budget: str, record,
           command: str | None) -> str:
    env = Environment(loader=PackageLoader("genlab", "report/templates"), autoescape=select_autoescape(["html"]))
    has_record = result.trajectory is not None
    return env.get_template("diagnosis.html").render(
        title=f"genlab diagnose: is {type(model).__name__} overfitted?", model_class=type(model).__name__,
        params=int(sum(p.numel() for p in model.parameters())), dataset=dataset,
        n_train=result.performance["n_train"], n_test=result.performance["n_test"], budget=budget,
        record_text=f"record of {len(result.trajectory)} epochs" if has_record else "no record",
        seconds=result.seconds, answer=result.answer, notes=result.notes,
        sections=sections(result, figure_paths, root),
        command=command or "genlab.diagnose(model, (x_train, y_train), (x_test, y_test), record=..., out=...)",
        env=environment(), versions=package_versions(), python=platform.python_version(),
        built=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
