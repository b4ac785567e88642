"""The packed strategy: plain MLPs as a few large matrix products, in width buckets.

Models are split into *buckets* of similar widths, each packed on its own
(:class:`~genlab.engine.strategies.packed_mlp.PackedMLP`: first layers of models that see the same
batch as one GEMM, later layers block-diagonal or batched). One bucket for a whole width sweep pads
every later layer to the widest model (a sweep over h = 4..300 of MLP 40-h-h-10 would spend ~8x
the arithmetic it needs on zeros); one bucket per model is the plain loop's many small products.
The partition minimizes a cost model (:func:`bucket_cost`): the multiply-adds each bucket really
executes, plus a fixed price per matrix product that stands for the per-call overhead. It is
computed from shapes alone, so the same models always get the same layout (and the same numbers).
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch

from genlab.engine.evaluate import chunked_loss_and_accuracy, packed_eval_rows
from genlab.engine.losses import loss_gradient_correct, per_model_losses
from genlab.engine.optim import StackedOptimizer
from genlab.engine.precision import autocast, compute_dtype
from genlab.engine.strategies.base import Session, StepBatch, unscale_owned
from genlab.engine.strategies.packed_mlp import PackedMLP, layer_kinds, mlp_layers

if TYPE_CHECKING:  # pragma: no cover
    from genlab.engine.stack import StackedModels

CALL_COST_MACS = 1 << 20
"""What one matrix product's fixed overhead (dispatch, launch, memory passes) is worth in
multiply-adds of a batch: about 10 us at ~100 GMAC/s."""

BUCKET_COST_MACS = 10_000_000
"""What one more bucket costs a step besides its products, in multiply-adds of a batch: its ~20
other operations (activations and their gradients, bias gradients, moving its share of the inputs,
outputs and output gradients, handing over its gradients), ~0.1 ms at ~100 GMAC/s. Measured on a
2-core AMD EPYC (torch 2.13), alternating in one process, paired medians: the 8-MLP width sweep in
one bucket instead of two 1.14x faster, the 16-width label-noise sweep in 3 buckets instead of 4
(its widths 200 and 300 batched together) 1.07-1.20x, the 48-model sweep in 5 instead of 6 1.15x;
any value from 5 to 15 million gives these three partitions."""

STACKED_INPUT = True
"""Whether a bucket may stack its models' batches for a batched first layer (see ``layer_kinds``)."""

MAX_EXACT_CLASSES = 48
"""Above this many distinct width profiles, buckets are cut greedily instead of exactly."""


CONVERT_MACS_PER_ELEMENT = 400
"""What moving one activation entry from the segmented layout ``[B, S]`` to the padded one ``[K, B, H]`` of
models of unequal widths, and its gradient back, costs in multiply-adds: a gather forward, a
transposing copy and a scatter-add backward, measured in the training loop at ~560 us a step for the
127,000 entries of 27 models of widths 4..47 (batch 100, one core of an AMD EPYC), ~4.4 ns or ~440
multiply-adds each. With it, such a bucket stacks its batches (``bmm_in``) instead: 17% less time a
step for the 48 models of the label-noise sweep (16 widths 4..300 x 3 seeds) sharing one data order."""


def bucket_cost(widths: list[tuple[list[int], list[int]]], groups: int, batch: int,
                stacked_input: bool = False) -> float:
    """Cost of one bucket in multiply-adds of a batch of ``batch`` rows, forward and backward
    (x3): :data:`BUCKET_COST_MACS`, plus each layer's real work
    (:func:`~genlab.engine.strategies.packed_mlp.layer_kinds`), plus :data:`CALL_COST_MACS` for each
    of its ~4 products (for the first layer: 3 per input group, or 3 in all when the batches are
    stacked), plus :data:`CONVERT_MACS_PER_ELEMENT` for each entry of the activation that moves from
    the segmented to the padded layout (at the first ``bmm`` layer after segmented ones, when the
    models' widths there differ: equal widths are already ``[B, K, H]``)."""
    kinds = layer_kinds(widths, stacked_input)
    work = 3 * batch * sum(macs for _, macs in kinds)
    calls = 4 * (len(kinds) - 1) + (3 if stacked_input else 3 * groups)
    converted = sum(batch * len(widths[l][0]) * max(widths[l][0]) for l in range(1, len(kinds))
                    if kinds[l][0] == "bmm" and kinds[l - 1][0] in ("first", "blockdiag")
                    and len(set(widths[l][0])) > 1)
    return BUCKET_COST_MACS + work + calls * CALL_COST_MACS + converted * CONVERT_MACS_PER_ELEMENT


def best_layout(widths: list[tuple[list[int], list[int]]], groups: int, batch: int) -> tuple[float, bool]:
    """``(cost, stacked_input)`` of the cheaper first-layer layout of one bucket: one GEMM per batch
    group into the segmented layout, or the models' batches stacked into a batched matmul (which pays
    when most models have a batch of their own, or when the next layer would move the activations to
    the padded layout anyway)."""
    options = (False, True) if STACKED_INPUT else (False,)
    return min((bucket_cost(widths, groups, batch, stacked), stacked) for stacked in options)


def _widths(members: list[int], profiles, in_dim: int, classes: int) -> list[tuple[list[int], list[int]]]:
    sizes = [(in_dim,) + profiles[p] + (classes,) for p in members]
    return [([s[l] for s in sizes], [s[l + 1] for s in sizes]) for l in range(len(sizes[0]) - 1)]


def partition(profiles: list[tuple[int, ...]], in_dim: int, classes: int, groups: list[int], batch: int
              ) -> list[list[int]]:
    """Buckets (lists of positions) of models with hidden widths ``profiles[pos]`` that minimize
    the summed cost (:func:`best_layout`): models are sorted by width profile, models with equal
    profiles stay together (merging them never costs padding), and contiguous runs of profiles are
    chosen by dynamic programming."""
    by_profile: dict[tuple[int, ...], list[int]] = {}
    for pos, prof in enumerate(profiles):
        by_profile.setdefault(prof, []).append(pos)
    classes_sorted = sorted(by_profile)
    if len(classes_sorted) == 1:
        return [list(range(len(profiles)))]

    def cost(lo: int, hi: int) -> float:
        members = [p for prof in classes_sorted[lo:hi] for p in by_profile[prof]]
        return best_layout(_widths(members, profiles, in_dim, classes), len({groups[p] for p in members}), batch)[0]

    n = len(classes_sorted)
    if n > MAX_EXACT_CLASSES:  # greedy: extend the current bucket while that is cheaper than a new one
        cuts, lo = [], 0
        for hi in range(1, n):
            if cost(lo, hi + 1) > cost(lo, hi) + cost(hi, hi + 1):
                cuts.append((lo, hi))
                lo = hi
        cuts.append((lo, n))
    else:
        best = [0.0] + [float("inf")] * n
        start = [0] * (n + 1)
        for hi in range(1, n + 1):
            for lo in range(hi):
                c = best[lo] + cost(lo, hi)
                if c < best[hi]:
                    best[hi], start[hi] = c, lo
        cuts, hi = [], n
        while hi > 0:
            cuts.append((start[hi], hi))
            hi = start[hi]
        cuts.reverse()
    return [sorted(p for prof in classes_sorted[lo:hi] for p in by_profile[prof]) for lo, hi in cuts]


class PackedBuckets:
    """The packed layout of some models of a stack, in width buckets (see the module docstring).

    Positions are the order of the models given (the trainer's session order); ``groups[pos]`` is
    the batch group of position ``pos`` (models of one group see the same batch ``xs[group]``).
    Tensors are keyed ``name`` with one bucket, ``name#b`` with several.
    """

    def __init__(self, stack: "StackedModels", ids: list[int], groups: list[int], batch: int):
        layers = mlp_layers(stack.template)
        device = next(iter(stack.params.values())).device
        max_shapes = {n: p.shape[1:] for n, p in stack.params.items()}
        shapes = [{n: stack.shapes[i].get(n, max_shapes[n]) for n in stack.params} for i in ids]
        hidden = [name for name, _ in layers[:-1]]
        profiles = [tuple(int(s[f"{name}.weight"][0]) for name in hidden) for s in shapes]
        in_dims = {int(s[f"{layers[0][0]}.weight"][1]) for s in shapes}
        outs = {int(s[f"{layers[-1][0]}.weight"][0]) for s in shapes}
        if len(in_dims) != 1 or len(outs) != 1:
            raise ValueError("packed models must share their input size and number of outputs")
        self.buckets = partition(profiles, min(in_dims), min(outs), groups, batch)
        self.num_models = len(ids)
        self.plans: list[PackedMLP] = []
        self.bucket_groups: list[list[int]] = []        # bucket -> the batch groups it reads, in order
        in_dim, classes = in_dims.pop(), outs.pop()
        self.profiles, self.in_dim, self.classes, self.batch = profiles, in_dim, classes, batch
        self.costs: list[float] = []
        for members in self.buckets:
            own = sorted({groups[p] for p in members})
            self.bucket_groups.append(own)
            cost, stacked = best_layout(_widths(members, profiles, in_dim, classes), len(own), batch)
            self.costs.append(cost)
            self.plans.append(PackedMLP([shapes[p] for p in members], layers, [own.index(groups[p]) for p in members],
                                        max_shapes, device, set(stack.params), stacked_input=stacked))
        self.names = list(stack.params)
        self.single = len(self.buckets) == 1
        self.positions = [torch.tensor(m, device=device) for m in self.buckets]
        order = [p for m in self.buckets for p in m]
        self.inverse = None if order == list(range(len(ids))) else \
            torch.tensor([order.index(p) for p in range(len(ids))], device=device)
        self.owners = {self._key(n, b): pos[plan.owners[n]] for b, (plan, pos) in
                       enumerate(zip(self.plans, self.positions)) for n in self.names}
        # for a bmm_in bucket: which of the step's stacked batches each of its slots reads
        self.stack_index = [torch.tensor([self.bucket_groups[b][g] for g in plan.slot_groups], device=device)
                            if plan.stacks_input else None for b, plan in enumerate(self.plans)]

    @property
    def widest_units(self) -> int:
        """The hidden units of all models together in their widest layer: the width of the packed
        activation."""
        return max((sum(widths) for widths in zip(*self.profiles)), default=self.classes * self.num_models)

    def zero_padding_gradients(self) -> set[str]:
        """Packed tensors whose padding entries get exactly zero gradients, so that SGD and Adam
        keep them at zero without a mask (momentum, weight decay and Adam's state stay zero there
        too): the batched-matmul layers of ReLU nets, whose padded units compute relu(0) = 0 and
        pass back relu'(0) = 0. Block-diagonal layers always need their mask (the off-diagonal
        blocks see other models' activations)."""
        if not self.manual_backward:
            return set()
        out = set()
        for b, plan in enumerate(self.plans):
            for layer in plan.layers:
                if layer.kind in ("bmm", "bmm_in"):
                    out.add(self._key(layer.weight, b))
                    if layer.bias is not None:
                        out.add(self._key(layer.bias, b))
        return out

    def cost_of(self, members: list[int], groups: list[int]) -> float:
        """The cost model's price of a bucket of ``members`` (positions)."""
        return best_layout(_widths(members, self.profiles, self.in_dim, self.classes),
                           len({groups[p] for p in members}), self.batch)[0]

    def _key(self, name: str, bucket: int) -> str:
        return name if self.single else f"{name}#{bucket}"

    @property
    def manual_backward(self) -> bool:
        return all(plan.manual_backward for plan in self.plans)

    @property
    def kinds(self) -> list[list[str]]:
        """Each bucket's layer kinds (first / blockdiag / bmm), for the record."""
        return [[layer.kind for layer in plan.layers] for plan in self.plans]

    def pack(self, stacked: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Packed copies of stacked tensors ``[k, *max_shape]`` (session positions; parameters,
        optimizer state or boolean masks)."""
        out = {}
        for b, (plan, pos) in enumerate(zip(self.plans, self.positions)):
            for name, tensor in stacked.items():
                out[self._key(name, b)] = plan.pack_one(name, tensor if self.single else tensor[pos])
        return out

    def unpack(self, packed: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stacked ``[k, *max_shape]`` tensors (shaped like ``like``) from packed ones; padding is zero."""
        out = {}
        for name, ref in like.items():
            if self.single:
                out[name] = self.plans[0].unpack(name, packed[name], ref)
                continue
            full = torch.zeros_like(ref, dtype=packed[self._key(name, 0)].dtype)
            for b, (plan, pos) in enumerate(zip(self.plans, self.positions)):
                full[pos] = plan.unpack(name, packed[self._key(name, b)], ref[pos])
            out[name] = full
        return out

    def _bucket_params(self, params: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
        return params if self.single else {n: params[self._key(n, b)] for n in self.names}

    def forward(self, params: dict[str, torch.Tensor], xs: list[torch.Tensor], tapes: list | None = None,
                stacked: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Outputs ``[k, B, C]`` in position order; with ``tapes`` (a list), each bucket's tape is
        appended for :meth:`backward`. ``stacked``: ``xs`` as one tensor ``[G, B, ...]``, if at hand."""
        outs = []
        for b, plan in enumerate(self.plans):
            tape = None if tapes is None else []
            slots = None if stacked is None or self.stack_index[b] is None else \
                stacked.index_select(0, self.stack_index[b])
            outs.append(plan.forward(self._bucket_params(params, b), [xs[g] for g in self.bucket_groups[b]], tape,
                                     slots, dtype))
            if tapes is not None:
                tapes.append(tape)
        out = outs[0] if self.single else torch.cat(outs)
        return out if self.inverse is None else out.index_select(0, self.inverse)

    def backward(self, params: dict[str, torch.Tensor], tapes: list, d_out: torch.Tensor) -> None:
        """Set every parameter's ``.grad`` by the hand-written backward of each bucket."""
        for b, (plan, pos, tape) in enumerate(zip(self.plans, self.positions, tapes)):
            d = d_out if self.single else d_out.index_select(0, pos)
            for name, grad in plan.gradients(self._bucket_params(params, b), tape, d).items():
                params[self._key(name, b)].grad = grad


def packed_plan(stack: "StackedModels", models, groups: list[int] | None = None, batch: int = 128
                ) -> PackedBuckets | None:
    """The packed layout of ``models`` (stack indices; default all) of ``stack`` with batch
    ``groups`` (default: all share one batch), or ``None`` when the stack is not a plain MLP
    (:func:`~genlab.engine.strategies.packed_mlp.mlp_layers`). Plans are cached on the stack."""
    if stack.members is not None or stack.buffers or mlp_layers(stack.template) is None:
        return None
    ids = list(range(stack.num_models)) if models is None else [int(m) for m in (
        models.tolist() if isinstance(models, torch.Tensor) else models)]
    groups = [0] * len(ids) if groups is None else list(groups)
    key = (tuple(ids), tuple(groups), batch)
    cache = stack.__dict__.setdefault("_packed_plans", {})
    if key not in cache:
        try:
            cache[key] = PackedBuckets(stack, ids, groups, batch)
        except ValueError:
            cache[key] = None
        if len(cache) > 64:
            cache.pop(next(iter(cache)))
    return cache[key]


class PackedSession(Session):
    """Plain MLPs in the packed layout, with a hand-written backward for ReLU nets (autograd on the
    packed layout for other elementwise activations). Not exact per model under divergence: a
    model's non-finite values can reach others through the zero blocks of a block-diagonal layer."""

    name = "packed"
    exact_per_model = False

    def __init__(self, trainer, idx, group_of):
        super().__init__(trainer, idx, group_of)
        cfg = trainer.config
        self.plan = packed_plan(trainer.stack, idx, group_of, cfg.batch_size)
        if self.plan is None:
            raise ValueError("the packed strategy needs plain MLPs of one input size and class count")
        stacked = {n: p[idx] for n, p in trainer.stack.params.items()}
        self.like = stacked
        self.params = {n: p.requires_grad_(True) for n, p in self.plan.pack(stacked).items()}
        masks = self.plan.pack({n: m[idx] for n, m in trainer.stack.masks.items()})
        padding_only = not any(trainer.jobs[k].mask for k in idx.tolist())
        exact_zeros = self.plan.zero_padding_gradients() if padding_only else set()
        masks = {n: m for n, m in masks.items() if n not in exact_zeros and not bool(m.all())}
        self.opt = StackedOptimizer(self.params, trainer.settings, masks, owners=self.plan.owners,
                                    num_models=len(idx))
        self.opt.state = {n: {} for n in self.params}
        for name, slots in trainer.opt_state["state"].items():
            for slot, tensor in slots.items():
                for key, packed in self.plan.pack({name: tensor[idx]}).items():
                    self.opt.state[key][slot] = packed
        self.opt.steps = trainer.opt_state["steps"][idx.cpu()].clone()
        self.dtype = compute_dtype(trainer.config.precision)

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        for p in self.params.values():
            p.grad = None
        loss = self.trainer.config.loss
        scale = batch.loss_scale
        if self.plan.manual_backward:
            tapes: list = []
            with torch.no_grad():
                out = self.plan.forward(self.params, batch.xs, tapes, batch.stacked, self.dtype)
                losses, d_out, correct = loss_gradient_correct(out, batch.y, loss)
            if bool(torch.isfinite(losses).all()):
                self.plan.backward(self.params, tapes, d_out if scale is None else d_out * scale.view(-1, 1, 1))
            return losses, correct
        with autocast(self.trainer.config.precision, self.trainer.device):
            out = self.plan.forward(self.params, batch.xs, stacked=batch.stacked)
        losses = per_model_losses(out, batch.y, loss)
        if bool(torch.isfinite(losses).all()):
            (losses.sum() if scale is None else (losses * scale).sum()).backward()
        return losses.detach(), (out.detach().argmax(-1) == batch.y).sum(1)

    def unscale(self, scale):
        return unscale_owned([(p.grad, self.plan.owners[n]) for n, p in self.params.items() if p.grad is not None],
                             scale, self.num_models)

    def step(self, lr, weight_decay, working, uniform):
        self.opt.step(lr, weight_decay, working, uniform=uniform)

    def sync(self) -> None:
        trainer, idx = self.trainer, self.idx
        with torch.no_grad():
            for name, tensor in self.plan.unpack(self.params, self.like).items():
                trainer.stack.params[name][idx] = tensor
        trainer.opt_state["steps"][idx.cpu()] = self.opt.steps
        slots = {s for st in self.opt.state.values() for s in st}
        for slot in slots:
            packed = {key: st[slot] for key, st in self.opt.state.items() if slot in st}
            like = {n: t for n, t in self.like.items()
                    if all(self.plan._key(n, b) in packed for b in range(len(self.plan.plans)))}
            for name, tensor in self.plan.unpack(packed, like).items():
                full = trainer.opt_state["state"][name]
                if slot not in full:
                    full[slot] = torch.zeros_like(trainer.stack.params[name])
                full[slot][idx] = tensor

    @torch.no_grad()
    def evaluate(self, positions, x, y):
        """Every model of the session on ``x`` in its training layout, from the session's own
        parameters (no write-back, no repacking); a subset of the models (some diverged) is
        evaluated from the trainer's state instead, in a layout of its own, so that a diverged
        model's values cannot reach the others through a block-diagonal layer's zero blocks."""
        if not self.all_models(positions):
            return super().evaluate(positions, x, y)
        plan, groups = self.plan, max(self.group_of) + 1  # group numbers as in the training batches
        rows = packed_eval_rows(self.trainer.config.eval_batch_size, plan.widest_units)
        stacks_input = any(index is not None for index in plan.stack_index)

        def forward(xb: torch.Tensor) -> torch.Tensor:
            stacked = xb.unsqueeze(0).expand(groups, *xb.shape) if stacks_input else None
            return plan.forward(self.params, [xb] * groups, stacked=stacked)

        return chunked_loss_and_accuracy(forward, x, y, self.trainer.config.loss, rows, self.num_models)

    def describe(self) -> dict:
        return {**super().describe(), "buckets": [len(b) for b in self.plan.buckets], "layers": self.plan.kinds}


EXACT_SPLIT_ASSIGNMENTS = 1 << 12
"""Up to this many ways of dealing the buckets to the workers, the split is searched exhaustively."""


def split_for_workers(plan: PackedBuckets, groups: list[int], workers: int) -> list[list[int]]:
    """The positions each of ``workers`` threads trains: the plan's buckets (the costliest split in
    two, in width order, while there are fewer buckets than workers), dealt out so that the most
    loaded worker's cost is the least possible (searched over every assignment when there are few,
    see :func:`balanced_loads`)."""
    buckets = [(cost, sorted(members, key=lambda p: (plan.profiles[p], p)))
               for cost, members in zip(plan.costs, plan.buckets)]
    while len(buckets) < workers:
        cost, members = max(buckets, key=lambda b: b[0])
        if len(members) < 2:
            break
        buckets.remove((cost, members))
        half = len(members) // 2
        buckets += [(plan.cost_of(part, groups), part) for part in (members[:half], members[half:])]
    shares = balanced_loads([cost for cost, _ in buckets], min(workers, len(buckets)))
    return [sorted(p for b in share for p in buckets[b][1]) for share in shares]


def balanced_loads(costs: list[float], workers: int) -> list[list[int]]:
    """Indices of ``costs`` per worker, minimizing the largest sum: exhaustively when there are at most
    EXACT_SPLIT_ASSIGNMENTS assignments, else longest first to the least loaded worker (LPT, at most
    4/3 of the best). For six buckets of costs 21, 32, 106, 44, 39 and 57 on two workers, LPT's largest
    share is 7% above the best one (159 vs 150 of 299 cost units)."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    if workers ** len(costs) <= EXACT_SPLIT_ASSIGNMENTS:
        best, best_load = None, float("inf")
        for assignment in itertools.product(range(workers), repeat=len(costs) - 1):
            loads = [0.0] * workers
            loads[0] = costs[order[0]]  # the costliest on worker 0: the other assignments are relabelings
            for i, w in zip(order[1:], assignment):
                loads[w] += costs[i]
            if max(loads) < best_load:
                best, best_load = (0, *assignment), max(loads)
        shares = [[i for i, w in zip(order, best) if w == worker] for worker in range(workers)]
        return [share for share in shares if share]
    loads = [[0.0, []] for _ in range(workers)]
    for i in order:
        least = min(loads, key=lambda load: load[0])
        least[0] += costs[i]
        least[1].append(i)
    return [share for _, share in loads if share]


class PackedPartsSession(Session):
    """Packed buckets dealt to workers (:func:`split_for_workers`): ``parts[w]`` is the
    :class:`PackedSession` of worker w's share ``shares[w]`` (session positions). What the workers
    are - threads or processes - is the subclass's; this holds the split and merges the results."""

    exact_per_model = False

    def __init__(self, trainer, idx, group_of, workers: int):
        super().__init__(trainer, idx, group_of)
        plan = packed_plan(trainer.stack, idx, group_of, trainer.config.batch_size)
        if plan is None:
            raise ValueError("the packed strategy needs plain MLPs of one input size and class count")
        self.shares = [torch.tensor(share, device=idx.device)
                       for share in split_for_workers(plan, group_of, workers)]
        self.parts = [PackedSession(trainer, idx[share], [group_of[p] for p in share.tolist()])
                      for share in self.shares]

    def part_batch(self, batch: StepBatch, w: int) -> StepBatch:
        """The step's batch as worker ``w`` sees it: every input, its own models' labels and scales."""
        share = self.shares[w]
        return StepBatch(batch.xs, self.parts[w].group_of, batch.y[share], batch.epoch, batch.step, batch.stacked,
                         None if batch.loss_scale is None else batch.loss_scale[share])

    def merge_step(self, results: list[tuple[torch.Tensor, torch.Tensor]], device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(losses [k], correct [k])`` in session positions from each worker's ``(losses, correct)``."""
        losses = torch.full((self.num_models,), float("nan"), device=device)
        correct = torch.zeros(self.num_models, dtype=torch.long, device=device)
        for share, (part_losses, part_correct) in zip(self.shares, results):
            losses[share], correct[share] = part_losses, part_correct
        return losses, correct

    def merge_evaluation(self, results: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [k], acc [k])`` (float64, CPU) in session positions from each worker's evaluation."""
        loss = torch.empty(self.num_models, dtype=torch.float64)
        acc = torch.empty(self.num_models, dtype=torch.float64)
        for share, (part_loss, part_acc) in zip(self.shares, results):
            loss[share.cpu()], acc[share.cpu()] = part_loss.cpu().double(), part_acc.cpu().double()
        return loss, acc

    def sync(self) -> None:
        for part in self.parts:
            part.sync()

    def describe(self) -> dict:
        return {**super().describe(), "workers": [p.describe()["buckets"] for p in self.parts]}


class PackedThreadsSession(PackedPartsSession):
    """Packed buckets spread over worker threads, one intra-op thread each.

    A packed step of small models is dozens of short operations; with one intra-op thread per
    worker each runs without the thread-team synchronization that dominates short operations, and
    the workers run side by side (PyTorch releases the GIL in its kernels). Each worker owns the
    buckets of its share of the models (:func:`split_for_workers`): their forward, loss, backward
    and optimizer step."""

    name = "packed-threads"

    def __init__(self, trainer, idx, group_of, workers: int):
        super().__init__(trainer, idx, group_of, workers)
        from genlab.engine.strategies.threads import worker_pool

        self.pool = worker_pool(len(self.parts))

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        def run(w):
            return self.parts[w].forward_backward(self.part_batch(batch, w), working[self.shares[w]])

        results = [f.result() for f in [self.pool.submit(run, w) for w in range(len(self.parts))]]
        losses, correct = self.merge_step(results, batch.y.device)
        if not bool(torch.isfinite(losses[working]).all()):  # no model of any part takes this step
            for part in self.parts:
                for p in part.params.values():
                    p.grad = None
        return losses, correct

    def unscale(self, scale):
        finite = torch.ones(self.num_models, dtype=torch.bool, device=scale.device)
        for part, share in zip(self.parts, self.shares):
            finite[share] = part.unscale(scale[share])
        return finite

    def step(self, lr, weight_decay, working, uniform):
        for f in [self.pool.submit(part.step, lr[share], weight_decay[share], working[share], uniform)
                  for part, share in zip(self.parts, self.shares)]:
            f.result()

    @torch.no_grad()
    def evaluate(self, positions, x, y):
        """Every model evaluated by its worker from the worker's own parameters (see
        :meth:`PackedSession.evaluate`); a subset from the trainer's state."""
        if not self.all_models(positions):
            return super().evaluate(positions, x, y)
        jobs = [self.pool.submit(part.evaluate, torch.arange(len(share), device=positions.device), x, y[share])
                for part, share in zip(self.parts, self.shares)]
        return self.merge_evaluation([job.result() for job in jobs])

    def close(self) -> None:
        self.pool.shutdown(wait=True)
