"""The numbers of a diagnosis, computed on the trained network without retraining it.

* performance: loss and accuracy on the training and the test set, and their gaps;
* trajectory (with a record): the same at every recorded epoch, and ||theta_t - theta_0||_2 over
  all parameters (``dist_from_init_all_params``; not Jiang et al.'s weight-matrix distance);
* spectra: singular values of every weight matrix and its stable rank ||W||_F^2 / ||W||_2^2
  (Sanyal, Torr & Dokania 2020; the matrix convention of :mod:`genlab.probes.measures`);
* margins: output margins f_y(x) - max_{j != y} f_j(x) on both sets (Bartlett et al. 2017);
* layer robustness (Zhang, Bengio & Singer 2019) through :mod:`genlab.probes.layer_robustness`:
  re-initialization to every recorded epoch when the record holds epoch 0, re-randomization from
  the initializer always.

Every evaluation runs on a copy of the model in eval mode (dropout off, BatchNorm on its running
statistics); the caller's model is never changed.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UserError
from genlab.probes.layer_robustness import (
    LayerGroup,
    default_models_per_pass,
    draw_generator,
    evaluate_param_sets,
    fresh_draw,
    layer_groups,
    robustness_table,
)
from genlab.probes.measures import output_margins, zero_one_error
from genlab.probes.sharpness import eval_copy, predict

Data = tuple[torch.Tensor, torch.Tensor]
Params = dict[str, torch.Tensor]


def loss_and_accuracy(model: nn.Module, data: Data, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``data``."""
    x, y = data
    outputs = predict(eval_copy(model, str(x.device)), x, batch_size)
    return float(F.cross_entropy(outputs.double(), y)), 1.0 - float(zero_one_error(outputs, y))


def performance(model: nn.Module, train: Data, test: Data) -> dict[str, float]:
    train_loss, train_acc = loss_and_accuracy(model, train)
    test_loss, test_acc = loss_and_accuracy(model, test)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "acc_gap": train_acc - test_acc, "loss_gap": test_loss - train_loss}


def margins(model: nn.Module, data: Data, batch_size: int = 1000) -> np.ndarray:
    x, y = data
    outputs = predict(eval_copy(model, str(x.device)), x, batch_size)
    return output_margins(outputs.double(), y).cpu().numpy()


def parameters(model: nn.Module) -> Params:
    """The model's parameters by name (a weight shared by several modules appears once)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def parameter_distance(a: Params, b: Params) -> float:
    return math.sqrt(sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in a))


def trajectory(model: nn.Module, record: dict[int, Params], train: Data, test: Data) -> pd.DataFrame:
    """Loss and accuracy on both sets at every recorded epoch (each epoch's full state, BatchNorm
    statistics included), with ``dist_from_init_all_params``, the distance ||theta_t - theta_0||_2
    over all trainable parameters (biases and normalization parameters included) from epoch 0's
    when recorded. Jiang et al.'s ``dist_from_init`` (:mod:`genlab.probes.measures`) is over the
    weight matrices only."""
    work = copy.deepcopy(model)
    names = list(parameters(model))
    start = {n: record[0][n] for n in names} if 0 in record else None
    rows = []
    for epoch, state in record.items():
        work.load_state_dict(state)
        row = {"epoch": epoch, **performance(work, train, test)}
        row["dist_from_init_all_params"] = (parameter_distance({n: state[n] for n in names}, start) if start
                                            else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def spectra(model: nn.Module) -> pd.DataFrame:
    """One row per weight matrix (Linear, Conv reshaped to out x in*kernel): its singular values,
    spectral and Frobenius norms, stable rank ||W||_F^2 / ||W||_2^2 and the matrix's smaller side."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            matrix = module.weight.detach().reshape(module.weight.shape[0], -1).double().cpu()
            values = torch.linalg.svdvals(matrix).numpy()
            frobenius_sq = float((values ** 2).sum())
            rows.append({"layer": name, "shape": "x".join(map(str, matrix.shape)), "rank_max": min(matrix.shape),
                         "spectral_norm": float(values[0]), "frobenius_norm": math.sqrt(frobenius_sq),
                         "stable_rank": frobenius_sq / float(values[0]) ** 2 if values[0] > 0 else math.nan,
                         "singular_values": values})
    return pd.DataFrame(rows)


def robustness_groups(model: nn.Module, init: str) -> tuple[list[LayerGroup], list[str]]:
    """The layers to reset and a note for each one left out: a layer whose weight is shared with
    an earlier one is reset with it, and a layer with parameters other than weight and bias
    cannot be drawn from an initializer."""
    canonical: dict[str, str] = {}
    owner: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical[name] = owner.setdefault(id(p), name)
    kept, notes = [], []
    for group in layer_groups(model, "layer"):
        shared = [n for n in group.param_names if canonical[n] != n]
        if shared:
            notes.append(f"{group.name} shares {', '.join(shared)} with {', '.join(canonical[n] for n in shared)} "
                         f"and is reset with it")
            continue
        try:
            fresh_draw(model, group, init, torch.Generator().manual_seed(0))
        except UserError as exc:
            notes.append(f"{group.name} left out: {exc}")
            continue
        kept.append(group)
    return kept, notes


def layer_robustness_rows(model: nn.Module, record: dict[int, Params] | None, test: Data, *, init: str,
                          draws: int, threshold: float, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """The layer-robustness table of the trained ``model`` (rows as
    :func:`genlab.probes.layer_robustness.robustness_table`), and notes on layers left out.

    With a record holding epoch 0, every layer is re-initialized to every recorded epoch and
    re-randomized ``draws`` times; without one, only re-randomized (the verdict then compares the
    re-randomized accuracy with the trained one). BatchNorm statistics stay at their trained values.
    """
    groups, notes = robustness_groups(model, init)
    if not groups:
        return pd.DataFrame(), notes + ["no layer could be reset"]
    work = copy.deepcopy(model).eval()
    final = parameters(work)
    buffers = {name: b.detach() for name, b in work.named_buffers()}
    x, y = test
    if record and 0 in record:
        checkpoints = {epoch: {n: state[n].to(x.device) for n in final} for epoch, state in record.items()}
        table = robustness_table(work, final, checkpoints, buffers, x, y, groups=groups, init=init, draws=draws,
                                 threshold=threshold, seed=seed)
        return table, notes
    if draws < 1:
        return pd.DataFrame(), notes + ["without a record holding epoch 0, layers can only be re-randomized, "
                                        "and draws=0"]
    return _rerandomized_only(work, final, buffers, x, y, groups, init=init, draws=draws, threshold=threshold,
                              seed=seed), notes


def _rerandomized_only(work: nn.Module, final: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
                       groups: list[LayerGroup], *, init: str, draws: int, threshold: float,
                       seed: int) -> pd.DataFrame:
    sets, plan = [final], []
    for gi, group in enumerate(groups):
        for d in range(draws):
            fresh = fresh_draw(work, group, init, draw_generator(seed, gi, d))
            sets.append({**final, **{n: v.to(final[n].device) for n, v in fresh.items()}})
            plan.append((gi, d))
    losses, accs = evaluate_param_sets(work, buffers, sets, x, y, models_per_pass=default_models_per_pass(
        work, x.device), reference=final)
    trained = float(accs[0])
    rows = [{"layer": groups[gi].name, "layer_index": gi, "layer_kind": groups[gi].kind,
             "layer_type": groups[gi].module_type, "layer_label": groups[gi].label,
             "params": int(sum(final[n].numel() for n in groups[gi].param_names)), "operation": "rerandomize",
             "checkpoint_epoch": None, "draw": d, "test_acc": float(acc), "test_err": 1.0 - float(acc),
             "test_loss": float(loss), "trained_test_acc": trained, "acc_drop": trained - float(acc)}
            for (gi, d), loss, acc in zip(plan, losses[1:], accs[1:])]
    table = pd.DataFrame(rows)
    drop = table.groupby("layer_index")["acc_drop"].mean()
    table["verdict"] = table["layer_index"].map(lambda gi: "critical" if drop[gi] > threshold else "robust")
    table["dist_l2"] = math.nan
    table["dist_rel"] = math.nan
    table["checkpoint_epoch"] = table["checkpoint_epoch"].astype("Int64")
    return table


def per_layer(table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer: verdict, accuracy re-initialized to epoch 0 (when measured), mean
    accuracy re-randomized, distance from initialization."""
    if table.empty:
        return table
    rows = []
    for _, sub in table.groupby("layer_index", sort=True):
        first = sub.iloc[0]
        reinit0 = sub[(sub.operation == "reinit") & (sub.checkpoint_epoch == 0)]
        rerand = sub[sub.operation == "rerandomize"]
        rows.append({"layer": first.layer, "label": first.layer_label, "params": int(first.params),
                     "reinit0_test_acc": float(reinit0.test_acc.iloc[0]) if len(reinit0) else math.nan,
                     "rerandomized_test_acc": float(rerand.test_acc.mean()) if len(rerand) else math.nan,
                     "dist_rel": float(first.dist_rel), "verdict": first.verdict})
    return pd.DataFrame(rows)
