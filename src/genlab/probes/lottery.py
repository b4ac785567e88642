"""Pruning masks and iterative magnitude pruning (IMP) for any ``nn.Module``.

Lottery-ticket procedure (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis", Algorithm 1;
rewinding: Frankle, Dziugaite, Roy & Carbin 2019, "Stabilizing the Lottery Ticket Hypothesis"):

1. initialize a network f(x; theta_0) and train it to theta_T;
2. prune p% of the *remaining* weights of smallest magnitude |theta_T|, giving a mask m
   (layer-wise: p per layer, the output layer at p/2 by default; or global: one threshold over
   the pooled weights);
3. reset the survivors to theta_0 (or rewind them to theta_k, the weights after k epochs of the
   dense run): the ticket is f(x; m * theta_0);
4. train the ticket and repeat 2-3 for N rounds; after r rounds a fraction ~(1-p)^r remains.

Controls, trained alongside the ticket in each round: the same mask with a random
re-initialization (``reinit``), and a random mask with the same per-layer sparsity applied to the
ticket's starting weights (``random_prune``).

Only weights of dimension >= 2 (linear / convolution kernels) are pruned: biases and
normalization parameters never are. Pruned weights stay exactly zero during training because the
engine multiplies every optimizer update by the mask (``ModelJob.mask``), which holds under
momentum, Adam moments and weight decay alike.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from genlab.engine import Augment, InputGroup, ModelJob, TrainConfig, TrainOutcome, train_models
from genlab.errors import UserError
from genlab.seeding import derive_seed

PruningMode = Literal["layerwise", "global"]
ARMS = ("ticket", "reinit", "random_prune")
CONTROLS = ("reinit", "random_prune")
REWOUND_ARMS = ("ticket", "random_prune")  # start from the rewind point theta_k (reinit: from a fresh init)
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def prunable_weights(model: nn.Module) -> list[str]:
    """Names of the parameters IMP prunes: every weight of dimension >= 2 (linear, convolution,
    embedding kernels) outside normalization layers, in registration order. Biases (1-D) and
    normalization scales/shifts are never pruned."""
    names, seen = [], set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_LAYERS):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() >= 2 and id(param) not in seen:  # a shared weight is listed once
                seen.add(id(param))
                names.append(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def output_weight(model: nn.Module) -> str:
    """The output layer's weight: the last prunable weight in registration order."""
    names = prunable_weights(model)
    if not names:
        raise UserError(f"{type(model).__name__} has no prunable weights (no parameter of dimension >= 2)")
    return names[-1]


class Mask:
    """Which weights of a network are kept: parameter name -> boolean tensor (True = kept).

    Parameters not named in the mask are dense (never pruned). ``density`` is the fraction of the
    masked weights that are kept, i.e. the paper's "percent of weights remaining" / 100.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        for name, t in tensors.items():
            if t.dtype != torch.bool:
                raise UserError(f"mask entry {name!r} must be a boolean tensor, got dtype {t.dtype}")
        self._tensors = {name: t.detach().clone() for name, t in tensors.items()}

    @classmethod
    def dense(cls, model: nn.Module, names: Sequence[str] | None = None, device: str = "cpu") -> "Mask":
        """An all-True mask over ``names`` (default: :func:`prunable_weights` of ``model``)."""
        params = dict(model.named_parameters())
        names = prunable_weights(model) if names is None else list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise UserError(f"mask names {unknown} are not parameters of {type(model).__name__}")
        return cls({n: torch.ones(params[n].shape, dtype=torch.bool, device=device) for n in names})

    # ----- mapping interface ---------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def items(self):
        return self._tensors.items()

    def names(self) -> list[str]:
        return list(self._tensors)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Mask) and self.names() == other.names()
                and all(torch.equal(self[n], other[n]) for n in self))

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, {self.kept():,}/{self.total():,} kept = {self.density():.2%})"

    # ----- counts ---------------------------------------------------------------------------
    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._tensors.values()))

    def total(self) -> int:
        return int(sum(t.numel() for t in self._tensors.values()))

    def density(self) -> float:
        """Fraction of masked weights kept (1.0 for a dense mask)."""
        return self.kept() / max(1, self.total())

    def layer_density(self) -> dict[str, float]:
        return {n: float(t.float().mean()) for n, t in self._tensors.items()}

    # ----- use ------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> "Mask":
        return Mask({n: t.to(device) for n, t in self._tensors.items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors, for ``ModelJob(mask=...)`` and for saving (``Mask(d)`` rebuilds it)."""
        return {n: t.clone() for n, t in self._tensors.items()}

    def apply(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of ``weights`` (a state dict) with the pruned entries set to exactly zero."""
        out = {}
        for name, w in weights.items():
            out[name] = w.detach() * self._tensors[name].to(w.device) if name in self._tensors else w.detach().clone()
        return out

    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero ``model``'s pruned weights in place and return it."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, m in self._tensors.items():
                if name not in params:
                    raise UserError(f"mask entry {name!r} is not a parameter of {type(model).__name__}")
                params[name].mul_(m.to(params[name].device))
        return model


# ----- pruning rules --------------------------------------------------------------------------
def layer_rates(model: nn.Module, rate: float, output_rate: float | None = None,
                conv_rate: float | None = None, output_layer: str | None = None) -> dict[str, float]:
    """Per-weight pruning rates of the paper's layer-wise scheme: ``rate`` for fully connected
    weights, ``conv_rate`` (default ``rate``) for convolution kernels, and ``output_rate``
    (default ``rate / 2``, as in Frankle & Carbin 2019) for the output layer."""
    for what, value in (("rate", rate), ("output_rate", output_rate), ("conv_rate", conv_rate)):
        if value is not None and not 0.0 <= value < 1.0:
            raise UserError(f"pruning {what}={value} must be in [0, 1)")
    output_layer = output_layer or output_weight(model)
    names = prunable_weights(model)
    if output_layer not in names:
        raise UserError(f"output_layer {output_layer!r} is not a prunable weight; choose one of {names}")
    modules = dict(model.named_modules())
    rates = {}
    for name in names:
        owner = modules[name.rpartition(".")[0]] if "." in name else model
        rates[name] = conv_rate if conv_rate is not None and isinstance(owner, nn.modules.conv._ConvNd) else rate
    rates[output_layer] = rate / 2 if output_rate is None else output_rate
    return rates


def _count_to_prune(rate: float, remaining: int) -> int:
    """round(rate * remaining), halves rounded up."""
    return min(remaining, int(math.floor(rate * remaining + 0.5)))


def _smallest_survivors(magnitudes: torch.Tensor, kept: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the ``count`` kept entries of smallest magnitude (ties: lower index first)."""
    survivors = kept.nonzero().flatten()
    order = torch.argsort(magnitudes[survivors], stable=True)
    return survivors[order[:count]]


def magnitude_prune(weights: Mapping[str, torch.Tensor] | nn.Module, mask: Mask, rate: float,
                    mode: PruningMode = "layerwise", layer_rates: Mapping[str, float] | None = None) -> Mask:
    """Prune the fraction ``rate`` of the *remaining* weights with the smallest |w|.

    ``layer_rates`` gives some (or all) tensors their own rate (see :func:`layer_rates`, e.g. the
    output layer at rate/2); the others use ``rate``.
    ``layerwise``: each tensor loses ``round(r * kept)`` of its own survivors, r its rate.
    ``global``: the tensors at ``rate`` are pooled and lose together ``round(rate * pooled
    survivors)`` of smallest |w| wherever they are; tensors with another rate are pruned
    layer-wise at that rate. Already pruned weights stay pruned; the result is a new :class:`Mask`.
    """
    if mode not in ("layerwise", "global"):
        raise UserError(f"pruning mode {mode!r} must be 'layerwise' or 'global'")
    source = dict(weights.named_parameters()) if isinstance(weights, nn.Module) else dict(weights)
    per_name = {n: float(rate) for n in mask}
    per_name.update({n: float(r) for n, r in (layer_rates or {}).items() if n in mask})
    missing = [n for n in mask if n not in source]
    if missing:
        raise UserError(f"no weights given for mask entries {missing}")
    for name, r in per_name.items():
        if not 0.0 <= r < 1.0:
            raise UserError(f"pruning rate {r} for {name!r} must be in [0, 1)")
    magnitudes = {n: source[n].detach().abs().flatten().to(mask[n].device) for n in mask}
    new = {n: mask[n].flatten().clone() for n in mask}
    pooled = [n for n in mask if per_name[n] == float(rate)] if mode == "global" else []
    if pooled:
        kept = torch.cat([new[n] for n in pooled])
        flat = _smallest_survivors(torch.cat([magnitudes[n] for n in pooled]), kept,
                                   _count_to_prune(rate, int(kept.sum())))
        offsets = torch.cumsum(torch.tensor([0] + [new[n].numel() for n in pooled]), 0)
        for i, n in enumerate(pooled):
            local = flat[(flat >= offsets[i]) & (flat < offsets[i + 1])] - offsets[i]
            new[n][local] = False
    for n in mask:
        if n not in pooled:
            count = _count_to_prune(per_name[n], int(new[n].sum()))
            new[n][_smallest_survivors(magnitudes[n], new[n], count)] = False
    return Mask({n: new[n].view(mask[n].shape) for n in mask})


def random_prune(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask with the same number of kept weights as ``mask`` in every tensor, the kept
    positions drawn uniformly without replacement (the random-pruning control)."""
    out = {}
    for name, m in mask.items():
        order = torch.randperm(m.numel(), generator=generator)
        fresh = torch.zeros(m.numel(), dtype=torch.bool)
        fresh[order[:int(m.sum())]] = True
        out[name] = fresh.view(m.shape).to(m.device)
    return Mask(out)


def reset_weights(trained: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor],
                  mask: Mask) -> dict[str, torch.Tensor]:
    """The ticket's weights: every parameter of ``trained`` set back to its value in ``start``
    (initialization, or the rewind point), pruned entries exactly zero."""
    missing = [n for n in trained if n not in start]
    if missing:
        raise UserError(f"start weights lack parameters {missing}")
    return mask.apply({n: start[n] for n in trained})


def module_with(template: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``template`` holding ``weights`` (parameters and, if given, buffers)."""
    net = copy.deepcopy(template)
    state = net.state_dict()
    state.update({n: w.detach().clone() for n, w in weights.items()})
    net.load_state_dict(state)
    return net


def parameters_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s parameters by name."""
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def default_reinit(module: nn.Module, seed: int) -> nn.Module:
    """A fresh initialization of ``module``'s architecture from ``seed``, with the scheme the module was
    initialized with (:func:`genlab.models.init.init_scheme`: the one :func:`genlab.models.build_model` used;
    PyTorch's default for a module genlab did not initialize), so the reinit control differs from the ticket
    only in its weights' values, not in their distribution (Frankle & Carbin 2019, Sec. 2)."""
    from genlab.models.init import init_scheme, initialize

    return initialize(copy.deepcopy(module), init_scheme(module), seed)


# ----- the iterative procedure ----------------------------------------------------------------
@dataclass
class PruningPlan:
    """How IMP prunes: ``rounds`` prunings after the dense round 0, each removing ``rate`` of the
    remaining weights per layer (``conv_rate`` for convolutions, ``output_rate``, default rate/2,
    for the output layer) or pooled (``mode='global'``); survivors reset to initialization
    (``rewind_epoch=0``) or rewound to the dense run's weights after ``rewind_epoch`` epochs."""

    rounds: int
    rate: float = 0.2
    output_rate: float | None = None
    conv_rate: float | None = None
    mode: PruningMode = "layerwise"
    rewind_epoch: int = 0
    controls: tuple[str, ...] = CONTROLS
    output_layer: str | None = None

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise UserError(f"rounds={self.rounds} must be >= 0")
        if not 0.0 < self.rate < 1.0:
            raise UserError(f"pruning rate={self.rate} must be in (0, 1)")
        if self.mode not in ("layerwise", "global"):
            raise UserError(f"pruning mode {self.mode!r} must be 'layerwise' or 'global'")
        if self.rewind_epoch < 0:
            raise UserError(f"rewind_epoch={self.rewind_epoch} must be >= 0")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise UserError(f"unknown controls {unknown}; choose from {list(CONTROLS)}")

    def rates(self, model: nn.Module) -> dict[str, float]:
        return layer_rates(model, self.rate, self.output_rate, self.conv_rate, self.output_layer)

    def epochs_after_start(self, arm: str, round_number: int, epochs: int) -> int:
        """Epochs an arm trains from its starting weights, so that every arm gets ``epochs`` from
        initialization: with rewinding to theta_k (k = ``rewind_epoch``), the ticket and the random-pruning
        control start from weights already trained k epochs, so they train epochs - k more; the reinit control
        and the dense round 0 start from an initialization and train all ``epochs``."""
        if self.rewind_epoch and round_number >= 1 and arm in REWOUND_ARMS:
            return epochs - self.rewind_epoch
        return epochs


@dataclass
class ArmInfo:
    """One trained network of a round: which arm, which seed, and its sparsity."""

    key: str
    arm: str
    seed: int
    round: int
    density: float
    layer_density: dict[str, float]
    epochs: int  # epochs it trains from its starting weights (`PruningPlan.epochs_after_start`)


@dataclass
class RoundResult:
    round: int
    arms: list[ArmInfo]
    outcome: TrainOutcome
    ticket_masks: dict[int, Mask]   # the ticket mask each seed trained with this round


@dataclass
class _Lineage:
    """What one seed carries from round to round."""

    seed: int
    init: dict[str, torch.Tensor]
    start: dict[str, torch.Tensor]
    mask: Mask


class IterativePruning:
    """Iterative magnitude pruning of ``modules`` (one initialized network per seed) with controls.

    Each call of :meth:`run_round` trains, in ONE batched engine call, the tickets of every seed
    and (from round 1 on) their controls; then prunes each ticket for the next round. Round 0 is
    the dense network (its controls would be dense networks too, so they are not trained).

    Example::

        imp = IterativePruning([net0, net1], [0, 1], InputGroup(xtr, xte, yte, xval, yval), ytr,
                               TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60, epochs=20),
                               PruningPlan(rounds=10, rate=0.2))
        results = imp.run()
    """

    def __init__(self, modules: Sequence[nn.Module], seeds: Sequence[int], inputs: InputGroup,
                 y_train: torch.Tensor, config: TrainConfig, plan: PruningPlan,
                 reinit: Callable[[nn.Module, int], nn.Module] = default_reinit, augment: Augment | None = None):
        if len(modules) != len(seeds) or not modules:
            raise UserError(f"give one module per seed (got {len(modules)} modules, {len(seeds)} seeds)")
        if plan.rewind_epoch >= config.epochs:
            raise UserError(f"rewind_epoch={plan.rewind_epoch} must be below the epoch budget {config.epochs}")
        self.template = modules[0]
        self.inputs, self.y_train, self.config, self.plan, self.reinit = inputs, y_train, config, plan, reinit
        self.augment = augment
        self.rates = plan.rates(self.template)
        self.lineages = [_Lineage(s, parameters_of(m), parameters_of(m), Mask.dense(m)) for m, s in zip(modules, seeds)]
        self.modules = list(modules)
        self.round = 0

    # ----- one round ------------------------------------------------------------------------
    def _job(self, arm: str, lineage: _Lineage, module: nn.Module, weights: dict,
             mask: Mask) -> tuple[ModelJob, ArmInfo]:
        key = f"r{self.round}/{arm}/s{lineage.seed}"
        job = ModelJob(key, module_with(module, mask.apply(weights)), seed=lineage.seed, y_train=self.y_train,
                       mask=mask.as_dict(), augment=self.augment)
        return job, ArmInfo(key, arm, lineage.seed, self.round, mask.density(), mask.layer_density(),
                            self.plan.epochs_after_start(arm, self.round, self.config.epochs))

    def round_jobs(self) -> tuple[list[ModelJob], list[ArmInfo]]:
        """The networks trained this round: tickets of every seed, then each control."""
        pairs = []
        for lin, module in zip(self.lineages, self.modules):
            pairs.append(self._job("ticket", lin, module, lin.start, lin.mask))
            if self.round == 0:
                continue
            if "reinit" in self.plan.controls:
                fresh = self.reinit(module, derive_seed(lin.seed, self.round, "reinit"))
                pairs.append(self._job("reinit", lin, module, parameters_of(fresh), lin.mask))
            if "random_prune" in self.plan.controls:
                gen = torch.Generator().manual_seed(derive_seed(lin.seed, self.round, "random_prune"))
                pairs.append(self._job("random_prune", lin, module, lin.start, random_prune(lin.mask, gen)))
        order = sorted(range(len(pairs)), key=lambda i: ARMS.index(pairs[i][1].arm))
        return [pairs[i][0] for i in order], [pairs[i][1] for i in order]

    def run_round(self, on_epoch=None, snapshot=None) -> RoundResult:
        """Train this round's networks together, then prune every ticket for the next round.

        Every network trains ``config.epochs`` in the engine call; an arm whose budget
        (``ArmInfo.epochs``) is shorter - the rewound arms, see `PruningPlan.epochs_after_start` - is
        read at that epoch: its curve is to be cut there (the lottery study does) and the ticket is pruned
        from its checkpoint there, exactly as if it had stopped (models do not interact in the engine)."""
        jobs, arms = self.round_jobs()
        config = self.config
        extra = {arm.epochs for arm in arms if arm.epochs < config.epochs}
        if self.round == 0 and self.plan.rewind_epoch > 0:
            extra.add(self.plan.rewind_epoch)
        if extra:
            config = dataclasses.replace(config, checkpoint_epochs=tuple(sorted({*config.checkpoint_epochs, *extra})))
        outcome = train_models(jobs, [self.inputs], config, on_epoch=on_epoch, snapshot=snapshot)
        result = RoundResult(self.round, arms, outcome, {lin.seed: lin.mask for lin in self.lineages})
        for lin in self.lineages:
            k = next(i for i, a in enumerate(arms) if a.arm == "ticket" and a.seed == lin.seed)
            if self.round == 0 and self.plan.rewind_epoch > 0:
                lin.start = _unpadded(outcome, self.plan.rewind_epoch, k)
            if arms[k].epochs < config.epochs:
                trained = _unpadded(outcome, arms[k].epochs, k)
            else:
                trained = outcome.stack.state_dict(k)
            trained = {n: t for n, t in trained.items() if n in lin.init}
            lin.mask = magnitude_prune(trained, lin.mask, self.plan.rate, self.plan.mode, self.rates)
        self.round += 1
        return result

    def run(self, on_round: Callable[[RoundResult], None] | None = None, on_epoch=None) -> list[RoundResult]:
        """Run the remaining rounds (0..plan.rounds) and return their results."""
        results = []
        while self.round <= self.plan.rounds:
            result = self.run_round(on_epoch=on_epoch)
            if on_round:
                on_round(result)
            results.append(result)
        return results

    # ----- resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What the next round needs: its number, each seed's mask and starting weights."""
        return {"round": self.round,
                "lineages": [{"seed": lin.seed, "mask": lin.mask.as_dict(),
                              "start": lin.start} for lin in self.lineages]}

    def load_state_dict(self, state: dict) -> None:
        seeds = [entry["seed"] for entry in state["lineages"]]
        if seeds != [lin.seed for lin in self.lineages]:
            raise ValueError(f"pruning state is for seeds {seeds}, not {[lin.seed for lin in self.lineages]}")
        self.round = int(state["round"])
        for lin, entry in zip(self.lineages, state["lineages"]):
            lin.mask = Mask(entry["mask"])
            lin.start = {n: t.clone() for n, t in entry["start"].items()}


def _unpadded(outcome: TrainOutcome, epoch: int, k: int) -> dict[str, torch.Tensor]:
    """Model ``k``'s parameters at checkpoint ``epoch``, cut back to its own shapes."""
    return outcome.stack.unpadded(k, outcome.checkpoints[epoch])
