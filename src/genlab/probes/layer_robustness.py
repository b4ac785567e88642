"""Layer robustness to re-initialization and re-randomization (Zhang, Bengio & Singer 2019,
"Are all layers created equal?", JMLR 23(67) 2022; arXiv:1902.01996).

A network is trained, keeping its parameters theta^(t) at a few checkpoint epochs t (t = 0 is the
initialization, t = T the end of training). Then, for each layer l, one layer at a time:

* **re-initialization** to checkpoint t: the network with layer l set to theta_l^(t) and every
  other layer at its final value theta^(T); its test accuracy shows how much of what layer l
  learned after epoch t the trained network still needs. t = T gives back the trained network.
* **re-randomization**: layer l drawn afresh from the model's own initializer (the distribution
  theta_l^(0) came from, not its value), every other layer final; several independent draws.

A layer is *critical* when re-initializing it to t = 0 costs more than ``threshold`` of test
accuracy, and *robust* otherwise. Each layer's distance from its initialization,
||theta_l^(T) - theta_l^(0)||_2 and the relative ||theta_l^(T) - theta_l^(0)|| / ||theta_l^(0)||,
is reported alongside.

The many modified networks (layers x (checkpoints + draws)) are evaluated together: their
parameter sets are stacked along a model dimension and run through the engine's batched,
vmapped forward (:func:`genlab.engine.evaluate_stacked`), in eval mode (dropout off).
Buffers (e.g. batch-norm running statistics) are not checkpointed by the engine and stay at their
final values in every modified network.

Layers are named by their module path. ``granularity="layer"`` treats every parameterised leaf
module (Linear, Conv, normalization layers, ...) as one layer; ``"block"`` groups the leaves of a
residual block (the nearest enclosing module that is not a plain container such as
``nn.Sequential``) and resets them together; ``"both"`` reports layers and blocks.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from genlab.data.tensors import as_labelled_tensors
from genlab.engine import InputGroup, ModelJob, StackedModels, TrainConfig, evaluate_stacked, train_models
from genlab.errors import UserError
from genlab.models import INITIALIZERS, init_layer
from genlab.seeding import seeded_generator

Granularity = Literal["layer", "block", "both"]
Params = dict[str, torch.Tensor]

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
CHECKPOINT_SERIES = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class LayerGroup:
    """Parameters that are reset together: one layer, or all layers of a residual block."""

    name: str                    # module path, e.g. "blocks.0.conv1" or "blocks.0"
    kind: str                    # "layer" or "block"
    module_type: str             # class name of the module, e.g. "Linear"
    label: str                   # short description, e.g. "Linear 784->256" or "BasicBlock (2 layers)"
    leaves: tuple[str, ...]      # module paths of the parameterised leaf modules it holds
    param_names: tuple[str, ...]  # qualified parameter names (keys of the model's state dict)


# ----- checkpoints --------------------------------------------------------------------------

def default_checkpoint_epochs(epochs: int) -> list[int]:
    """Epochs 0, 1, 2, 3, 5, 10, 20, 50, 100, ... up to ``epochs``, and ``epochs`` itself."""
    if epochs < 1:
        raise UserError(f"epochs={epochs} must be at least 1")
    return sorted({e for e in CHECKPOINT_SERIES if e < epochs} | {epochs})


def resolve_checkpoint_epochs(checkpoint_epochs: Sequence[int] | None, epochs: int) -> list[int]:
    """The sorted checkpoint epochs; 0 (the initialization) and ``epochs`` are always included."""
    if checkpoint_epochs is None:
        return default_checkpoint_epochs(epochs)
    bad = [e for e in checkpoint_epochs if not 0 <= int(e) <= epochs]
    if bad:
        raise UserError(f"checkpoint_epochs {bad} must lie in [0, epochs={epochs}]")
    return sorted({int(e) for e in checkpoint_epochs} | {0, epochs})


# ----- naming layers ------------------------------------------------------------------------

def _leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning parameters directly, in registration order (the forward order of most models)."""
    return [(name, m) for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def _enclosing_block(model: nn.Module, leaf: str) -> str | None:
    """The nearest ancestor of ``leaf`` that is neither the root nor a plain container."""
    parts = leaf.split(".")
    modules = dict(model.named_modules())
    for cut in range(len(parts) - 1, 0, -1):
        path = ".".join(parts[:cut])
        if not isinstance(modules[path], CONTAINERS):
            return path
    return None


def describe(module: nn.Module, leaves: int = 1) -> str:
    """``"Linear 784->256"``, ``"Conv2d 6->16 5x5"``, ``"BasicBlock (2 layers)"``, ``"LayerNorm"``."""
    kind = type(module).__name__
    if leaves > 1:
        return f"{kind} ({leaves} layers)"
    if isinstance(module, nn.Linear):
        return f"{kind} {module.in_features}->{module.out_features}"
    if isinstance(module, nn.modules.conv._ConvNd):
        return f"{kind} {module.in_channels}->{module.out_channels} {'x'.join(map(str, module.kernel_size))}"
    return kind


def _group(model: nn.Module, name: str, kind: str, leaves: Sequence[str]) -> LayerGroup:
    modules = dict(model.named_modules())
    params = tuple(f"{leaf}.{p}" for leaf in leaves for p, _ in modules[leaf].named_parameters(recurse=False))
    return LayerGroup(name, kind, type(modules[name]).__name__, describe(modules[name], len(leaves)),
                      tuple(leaves), params)


def layer_groups(model: nn.Module, granularity: Granularity = "layer",
                 layers: Sequence[str] | None = None) -> list[LayerGroup]:
    """The groups of parameters to reset, in forward order.

    ``layers`` (module paths) overrides ``granularity``: each named module, with every
    parameterised module inside it, is one group.
    """
    if granularity not in ("layer", "block", "both"):
        raise UserError(f"granularity {granularity!r} must be 'layer', 'block' or 'both'")
    leaves = [name for name, _ in _leaf_layers(model)]
    if not leaves:
        raise UserError("the model has no parameterised layers to reset")
    if layers is not None:
        return [_named_group(model, name, leaves) for name in layers]
    singles = [_group(model, leaf, "layer", [leaf]) for leaf in leaves]
    blocks: dict[str, list[str]] = {}
    for leaf in leaves:
        block = _enclosing_block(model, leaf)
        if block is not None:
            blocks.setdefault(block, []).append(leaf)
    block_groups = {b: _group(model, b, "block", members) for b, members in blocks.items() if len(members) > 1}
    if granularity == "layer":
        return singles
    if granularity == "both":
        return singles + list(block_groups.values())
    out, seen = [], set()
    for leaf, single in zip(leaves, singles):
        block = _enclosing_block(model, leaf)
        if block in block_groups:
            if block not in seen:
                out.append(block_groups[block])
                seen.add(block)
        else:
            out.append(single)
    return out


def _named_group(model: nn.Module, name: str, leaves: Sequence[str]) -> LayerGroup:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise UserError(f"layers: the model has no submodule named {name!r}; "
                        f"its parameterised layers are: {', '.join(leaves)}")
    inside = [leaf for leaf in leaves if leaf == name or leaf.startswith(name + ".")]
    if not inside:
        raise UserError(f"layers: module {name!r} has no parameters")
    return _group(model, name, "layer" if inside == [name] else "block", inside)


# ----- the modified parameter sets ----------------------------------------------------------

def reinitialized(final: Params, checkpoint: Params, group: LayerGroup) -> Params:
    """``final`` with the parameters of ``group`` taken from ``checkpoint`` (no copies made)."""
    chosen = set(group.param_names)
    return {name: (checkpoint[name] if name in chosen else value) for name, value in final.items()}


def fresh_draw(model: nn.Module, group: LayerGroup, scheme: str, generator: torch.Generator) -> Params:
    """New values of ``group``'s parameters drawn from initializer ``scheme`` (``model`` is untouched)."""
    modules = dict(model.named_modules())
    drawn: Params = {}
    for leaf in group.leaves:
        layer = copy.deepcopy(modules[leaf])
        own = [p for p, _ in layer.named_parameters(recurse=False)]
        unknown = [p for p in own if p not in ("weight", "bias")]
        if unknown:
            raise UserError(f"layer {leaf!r} ({type(layer).__name__}) has parameters {unknown} that the "
                            f"initializer cannot draw (only weight and bias); leave it out with `layers=`")
        init_layer(layer, scheme, generator)
        for p in own:
            drawn[f"{leaf}.{p}"] = getattr(layer, p).detach()
    return drawn


def draw_generator(seed: int, group_index: int, draw: int) -> torch.Generator:
    """The generator of draw ``draw`` of group ``group_index``: independent streams per (seed, group, draw)."""
    return seeded_generator(seed, group_index, draw)


def distance_from_init(final: Params, init: Params, group: LayerGroup) -> tuple[float, float]:
    """``(||w_T - w_0||_2, ||w_T - w_0|| / ||w_0||)`` over all parameters of ``group``."""
    diff = sum(float(((final[n].double() - init[n].double()) ** 2).sum()) for n in group.param_names)
    base = sum(float((init[n].double() ** 2).sum()) for n in group.param_names)
    l2 = diff ** 0.5
    return l2, (l2 / base ** 0.5 if base > 0 else float("inf"))


# ----- batched evaluation -------------------------------------------------------------------

def default_models_per_pass(model: nn.Module, device: str | torch.device) -> int:
    """How many modified networks to stack in one forward pass.

    Stacking pays for dense layers (one batched matmul: about 1.5x faster than model by model on
    a CPU for an MLP 3x256), but under ``vmap`` a convolution of K stacked models becomes one
    grouped convolution, which CPU kernels run 2-3x slower than K separate convolutions (measured
    with torch 2.13 for LeNet and a small ResNet). So: 16 at a time, one at a time for
    convolutional networks on a CPU.
    """
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return 1 if has_conv and torch.device(device).type == "cpu" else 8


PREFIX_CACHE_BYTES = 1 << 29
"""Largest cached activation (bytes) :func:`evaluate_param_sets` keeps to share a network's unchanged prefix."""


def evaluate_param_sets(template: nn.Module, buffers: Params, param_sets: Sequence[Params],
                        x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce", batch_size: int = 1000,
                        models_per_pass: int | None = None, reference: Params | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Test loss and accuracy of ``template`` under each parameter set, many models per pass.

    ``models_per_pass`` parameter sets (default: :func:`default_models_per_pass`) are stacked
    along a leading model dimension and evaluated in one batched forward
    (:func:`genlab.engine.evaluate_stacked`, eval mode: dropout off); ``buffers`` are shared by all.

    ``reference``: parameters that most sets share - a set holding the very tensors of
    ``reference`` (``is``) for all layers before layer l, as a set with only layer l reset does.
    For an ``nn.Sequential`` template the activation entering layer l is then the same for all
    such sets: it is computed once from ``reference`` and only the rest of the network is
    evaluated per set (exactly the same numbers, a fraction of the work for later layers).
    """
    if reference is not None and isinstance(template, nn.Sequential) and len(param_sets) > 1:
        return _evaluate_sharing_prefixes(template, buffers, param_sets, x, y, reference, loss=loss,
                                          batch_size=batch_size, models_per_pass=models_per_pass)
    if models_per_pass is None:
        models_per_pass = default_models_per_pass(template, x.device)
    if models_per_pass < 1:
        raise UserError(f"models_per_pass={models_per_pass} must be at least 1")
    losses, accs = [], []
    for start in range(0, len(param_sets), models_per_pass):
        chunk = param_sets[start:start + models_per_pass]
        params = {name: torch.stack([p[name] for p in chunk]) for name in chunk[0]}
        stacked_buffers = {name: b.unsqueeze(0).expand(len(chunk), *b.shape) for name, b in buffers.items()}
        stack = StackedModels(template, params, stacked_buffers, {}, [{} for _ in chunk])
        loss_k, acc_k = evaluate_stacked(stack, params, x, y, loss, batch_size)
        losses.append(loss_k.cpu().numpy())
        accs.append(acc_k.cpu().numpy())
    return np.concatenate(losses), np.concatenate(accs)


def _evaluate_sharing_prefixes(template: nn.Sequential, buffers: Params, param_sets: Sequence[Params],
                               x: torch.Tensor, y: torch.Tensor, reference: Params, **options
                               ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_param_sets` where sets that keep ``reference``'s first layers share them."""
    children = list(template.named_children())
    position = {name: i for i, (name, _) in enumerate(children)}

    def first_changed(params: Params) -> int:
        changed = [position[n.split(".", 1)[0]] for n, t in params.items() if t is not reference.get(n)]
        return min(changed, default=0)

    by_start: dict[int, list[int]] = {}
    for index, params in enumerate(param_sets):
        by_start.setdefault(first_changed(params), []).append(index)
    losses, accs = np.zeros(len(param_sets)), np.zeros(len(param_sets))
    for start, members in by_start.items():
        model, inputs = template, x
        if start > 0:
            prefix = nn.Sequential(OrderedDict(children[:start])).eval()
            names = {n for n in reference if position[n.split(".", 1)[0]] < start}
            with torch.no_grad():
                inputs = torch.cat([functional_call(prefix, ({n: reference[n] for n in names},
                                                             _own_buffers(buffers, prefix)), (x[i:i + 1000],))
                                    for i in range(0, len(x), 1000)])
            if inputs.numel() * inputs.element_size() > PREFIX_CACHE_BYTES:
                model, inputs = template, x
            else:
                model = nn.Sequential(OrderedDict(children[start:]))
        kept = {n for n, _ in model.named_parameters()}
        sets = [{n: t for n, t in param_sets[i].items() if n in kept} for i in members]
        loss_k, acc_k = evaluate_param_sets(model, _own_buffers(buffers, model), sets, inputs, y, **options)
        losses[members], accs[members] = loss_k, acc_k
    return losses, accs


def _own_buffers(buffers: Params, module: nn.Module) -> Params:
    names = {n for n, _ in module.named_buffers()}
    return {n: b for n, b in buffers.items() if n in names}


# ----- the table ----------------------------------------------------------------------------

def robustness_table(template: nn.Module, final: Params, checkpoints: dict[int, Params], buffers: Params,
                     x_test: torch.Tensor, y_test: torch.Tensor, *, groups: Sequence[LayerGroup],
                     init: str = "default", draws: int = 3, threshold: float = 0.10, seed: int = 0,
                     loss: str = "ce", batch_size: int = 1000, models_per_pass: int | None = None) -> pd.DataFrame:
    """Re-initialize and re-randomize every group of a trained network; one row per evaluation.

    ``final`` and ``checkpoints[t]`` are parameter dicts of one model (``checkpoints`` must hold
    epoch 0, the initialization). Columns: ``layer, layer_index, layer_kind, layer_type, layer_label, params,
    operation`` (reinit | rerandomize), ``checkpoint_epoch, draw, test_acc, test_err, test_loss,
    trained_test_acc, acc_drop, dist_l2, dist_rel, verdict``.
    """
    if 0 not in checkpoints:
        raise UserError("checkpoints must include epoch 0 (the initialization) to judge layers")
    if init not in INITIALIZERS:
        raise UserError(f"unknown init {init!r}; choose one of: {', '.join(INITIALIZERS)}")
    epochs = sorted(checkpoints)
    plan: list[dict] = [{"layer": None}]
    sets: list[Params] = [final]
    for gi, group in enumerate(groups):
        for t in epochs:
            plan.append({"group": gi, "operation": "reinit", "checkpoint_epoch": t, "draw": None})
            sets.append(reinitialized(final, checkpoints[t], group))
        for d in range(draws):
            fresh = fresh_draw(template, group, init, draw_generator(seed, gi, d))
            plan.append({"group": gi, "operation": "rerandomize", "checkpoint_epoch": None, "draw": d})
            sets.append({**final, **{n: v.to(final[n].device) for n, v in fresh.items()}})
    net = copy.deepcopy(template).eval()
    losses, accs = evaluate_param_sets(net, buffers, sets, x_test, y_test, loss=loss, batch_size=batch_size,
                                       models_per_pass=models_per_pass, reference=final)
    trained_acc = float(accs[0])
    rows = []
    for entry, test_loss, acc in zip(plan[1:], losses[1:], accs[1:]):
        group = groups[entry["group"]]
        rows.append({"layer": group.name, "layer_index": entry["group"], "layer_kind": group.kind,
                     "layer_type": group.module_type, "layer_label": group.label,
                     "params": int(sum(final[n].numel() for n in group.param_names)),
                     "operation": entry["operation"], "checkpoint_epoch": entry["checkpoint_epoch"],
                     "draw": entry["draw"], "test_acc": float(acc), "test_err": 1.0 - float(acc),
                     "test_loss": float(test_loss), "trained_test_acc": trained_acc,
                     "acc_drop": trained_acc - float(acc)})
    table = pd.DataFrame(rows)
    for gi, group in enumerate(groups):
        l2, rel = distance_from_init(final, checkpoints[0], group)
        at_init = table[(table.layer_index == gi) & (table.operation == "reinit") & (table.checkpoint_epoch == 0)]
        drop = float(at_init["acc_drop"].iloc[0])
        mask = table.layer_index == gi
        table.loc[mask, "dist_l2"] = l2
        table.loc[mask, "dist_rel"] = rel
        table.loc[mask, "verdict"] = "critical" if drop > threshold else "robust"
    table["checkpoint_epoch"] = table["checkpoint_epoch"].astype("Int64")
    table["draw"] = table["draw"].astype("Int64")
    return table


def layer_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer: its verdict, accuracy after re-initializing it to epoch 0, mean accuracy
    after re-randomizing it, and its distance from initialization."""
    keys = [c for c in ("model", "seed") if c in table.columns]
    reinit0 = table[(table.operation == "reinit") & (table.checkpoint_epoch == 0)]
    rerand = table[table.operation == "rerandomize"].groupby(keys + ["layer"], sort=False)["test_acc"].mean()
    columns = ["layer", "layer_index", "layer_kind", "layer_type", "layer_label", "params", "trained_test_acc",
               "test_acc", "acc_drop", "dist_l2", "dist_rel", "verdict"]
    out = reinit0[keys + columns].rename(
        columns={"test_acc": "reinit0_test_acc", "acc_drop": "reinit0_acc_drop"})
    out = out.join(rerand.rename("rerandomized_test_acc"), on=keys + ["layer"])
    return out.reset_index(drop=True)


# ----- the public API -----------------------------------------------------------------------



def layer_robustness(model: nn.Module, train_data: tuple[torch.Tensor, torch.Tensor],
                     test_data: tuple[torch.Tensor, torch.Tensor], *, epochs: int,
                     checkpoint_epochs: Sequence[int] | None = None, optimizer: str = "sgd", lr: float = 0.01,
                     momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
                     batch_size: int = 128, schedule: str = "constant", loss: str = "ce",
                     threshold: float = 0.10, draws: int = 3, init: str = "default", seed: int = 0,
                     granularity: Granularity = "layer", layers: Sequence[str] | None = None,
                     models_per_pass: int | None = None, device: str = "cpu") -> pd.DataFrame:
    """Train ``model`` and measure each layer's robustness to re-initialization and re-randomization.

    The protocol needs the layers' values at checkpoints during training, so ``model`` must be
    given *initialized, not trained*: a copy of it is trained here through the batched engine
    (``genlab.engine.train_models``) for ``epochs`` epochs on ``train_data`` with the optimizer
    settings given, saving checkpoints at ``checkpoint_epochs`` (default 0, 1, 2, 3, 5, 10, 20, 50,
    ..., final; 0 and the final epoch are always included). ``model`` itself is left unchanged.

    Then every layer (see :func:`layer_groups` for ``granularity`` and ``layers``) is reset to each
    checkpoint, and re-drawn ``draws`` times from initializer ``init`` - the scheme ``model`` was
    initialized with (``genlab.models.INITIALIZERS``) - and the network is evaluated on
    ``test_data`` (eval mode). A layer is ``critical`` when resetting it to its initial value costs
    more than ``threshold`` (a fraction: 0.10 = 10 points) of test accuracy, else ``robust``.

    ``train_data`` and ``test_data`` are ``(inputs, labels)`` tensor pairs; labels are class indices.
    ``models_per_pass`` modified networks are evaluated per batched forward pass
    (default: :func:`default_models_per_pass`).
    Returns one row per (layer, operation, checkpoint or draw), see :func:`robustness_table`, plus
    ``seed``, ``epochs`` and the trained model's ``trained_train_acc``; :func:`layer_verdicts`
    condenses it to one row per layer.

    Example::

        net = genlab.models.build_model("mlp", (1, 28, 28), 10, widths=[256, 256, 256], seed=0)
        table = genlab.layer_robustness(net, (x_train, y_train), (x_test, y_test), epochs=20, lr=0.05)
        print(genlab.probes.layer_robustness.layer_verdicts(table)[["layer", "verdict", "reinit0_test_acc"]])
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if epochs < 1:
        raise UserError(f"epochs={epochs} must be at least 1")
    if not 0.0 < threshold < 1.0:
        raise UserError(f"threshold={threshold} must be a fraction of accuracy in (0, 1), e.g. 0.10 for 10 points")
    if draws < 0:
        raise UserError(f"draws={draws} must be non-negative")
    if init not in INITIALIZERS:
        raise UserError(f"unknown init {init!r}; choose one of: {', '.join(INITIALIZERS)}")
    x_train, y_train = as_labelled_tensors(train_data, "train_data")
    x_test, y_test = as_labelled_tensors(test_data, "test_data")
    groups = layer_groups(model, granularity, layers)
    saved = resolve_checkpoint_epochs(checkpoint_epochs, epochs)
    config = TrainConfig(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, batch_size=batch_size, epochs=epochs, schedule=schedule,
                         eval_every=epochs, checkpoint_epochs=tuple(saved), device=device)
    job = ModelJob("model", copy.deepcopy(model).to(device), seed=seed, y_train=y_train)
    outcome = train_models([job], [InputGroup(x_train, x_test, y_test)], config)
    if outcome.outcomes[0].diverged:
        raise UserError(f"training diverged (non-finite loss) at step {outcome.outcomes[0].diverged_step}; "
                        f"lower lr={lr}")
    table = trained_model_table(outcome, 0, model, x_test.to(device), y_test.to(device), groups=groups, init=init,
                                draws=draws, threshold=threshold, seed=seed, loss=loss,
                                models_per_pass=models_per_pass)
    table.insert(0, "seed", seed)
    table["epochs"] = epochs
    table["trained_train_acc"] = outcome.outcomes[0].train_acc
    return table


def trained_model_table(outcome, k: int, architecture: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor,
                        **options) -> pd.DataFrame:
    """:func:`robustness_table` of model ``k`` of an engine :class:`~genlab.engine.TrainOutcome`
    (trained with ``checkpoint_epochs`` including 0); ``architecture`` is an unpadded module of it."""
    stack = outcome.stack
    final = stack.state_dict(k)
    buffers = {name: final.pop(name) for name in list(final) if name in stack.buffers}
    checkpoints = {t: {name: tensor.to(x_test.device) for name, tensor in stack.unpadded(k, params).items()}
                   for t, params in outcome.checkpoints.items()}
    return robustness_table(architecture, final, checkpoints, buffers, x_test, y_test, **options)
