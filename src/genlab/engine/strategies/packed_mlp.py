"""K multilayer perceptrons as a few large matrix products: the packed layout of one bucket.

Under ``vmap`` (:mod:`genlab.engine.stack`) K MLPs of different widths are zero-padded to the widest,
so a sweep over widths 5..200 spends most of its arithmetic on zeros, and every layer is K small
matmuls. The packed layout concatenates the models' units instead: hidden layer l of all K models is
one activation ``[B, S_l]`` with ``S_l = sum_k h_k^l``, model k's units in a contiguous segment.

* First layer: the models that see the same batch (same data order and inputs) share ``X_g [B, d]``,
  so their first layers are one GEMM ``X_g @ W_g^T`` with ``W_g = [W_1; W_2; ...]`` (``[S_g, d]``).
* A later layer between segmented activations is one GEMM with a block-diagonal ``[S_l, S_{l-1}]``
  weight whose off-diagonal blocks are masked to exactly zero (the optimizer's mask), when that is
  cheap; otherwise the activations move to the padded layout ``[K, B, H]`` and the layer is one
  batched matmul, as under vmap, but without vmap's per-call machinery.

Packing only re-arranges the same numbers: the loss is the sum of the models' own losses, and
the gradient with respect to model k's block is model k's own gradient. A width-h model holds
exactly its h units (no padding), so even activations with f(0) != 0 are exact.

:meth:`PackedMLP.pack` / :meth:`PackedMLP.unpack` convert between the stacked (padded) tensors of
:class:`~genlab.engine.stack.StackedModels` - parameters, optimizer state and masks alike - and the
packed ones, block by block (one reshape or transpose for all models when none is padded).
Segmented layers keep PyTorch's ``[out, in]`` weight orientation, bmm layers hold ``W^T``, except a
last layer with few outputs, computed transposed (:data:`OUT_MAJOR_BELOW`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Softplus, nn.Identity)
"""Activations applied unit by unit, hence identically in the packed layout."""

OUT_MAJOR_BELOW = 32
"""A batched last layer with fewer outputs than this is computed transposed, ``out^T = W h^T``
(``[K, C, B]``), and its weight kept in PyTorch's ``[out, in]`` orientation: matrix products whose
result has fewer than ~16-32 columns run 2-4x slower than the same arithmetic transposed (measured
for 10 classes on an AMD EPYC with torch 2.13: 217 vs 72 us for the three products of
``[3, 100, 300] -> 10``; equal from 32 outputs on)."""

FIRST_OUT_MAJOR = True
"""A first layer (``first``) followed by a block-diagonal layer or a batched one of equal widths is
computed transposed, ``h^T = W x^T + b`` (``[S, B]``), and used as its transposed view ``[B, S]``
(the gradient passed down to it likewise): with the batch as the product's ~128 result rows MKL ran
``[128, 784] x [784, 2048]`` at 110-120 GFLOP/s, transposed at 160-185 (AMD EPYC, 2 threads, torch
2.13)."""

BLOCKDIAG_MIN_MACS = 1 << 18
"""A block-diagonal layer this small (multiply-adds per example) is always one GEMM: the waste on
its zero blocks costs less than moving activations to the padded layout."""


@dataclass
class _Layer:
    weight: str
    bias: str | None
    activation: nn.Module | None
    kind: str                               # first | bmm_in | blockdiag | bmm
    to_padded: torch.Tensor | None = None   # gather index [K * H] from segmented to padded (bmm layers)
    equal_widths: bool = False              # the input segments already form [B, K, H]
    segmented_width: int = 0                # S of the segmented input (with to_padded)
    out_major: bool = False                 # bmm layer computed transposed (see OUT_MAJOR_BELOW)


@dataclass
class _Map:
    """Where the models' entries of one parameter sit in its packed tensor: ``regions`` lists
    ``(position, packed index, index within the position's stacked row)``; ``transpose`` when the
    packed block is the stacked block transposed. ``flat``: no model is padded, so packing is one
    reshape (after picking the rows in slot ``order``, when given)."""

    shape: torch.Size
    regions: list
    transpose: bool
    flat: bool
    order: torch.Tensor | None = None


def prefers_blockdiag(blockdiag_macs: int, padded_macs: int) -> bool:
    """One block-diagonal GEMM rather than the padded layout's batched matmul, per example:
    unless its zero blocks cost more than twice the padding (and the layer is not tiny)."""
    return blockdiag_macs <= max(2 * padded_macs, BLOCKDIAG_MIN_MACS)


def layer_kinds(widths: list[tuple[list[int], list[int]]], stacked_input: bool = False) -> list[tuple[str, int]]:
    """How each layer of packed models runs, and its multiply-adds per example: ``widths[l]`` is
    ``(inputs, outputs)`` of layer l, one entry per model. The first layer is ``first`` (one GEMM per
    input group, no padding), or with ``stacked_input`` ``bmm_in`` (the models' batches stacked
    ``[K, B, d]``, one batched matmul, padded to the widest: cheaper when most models have a batch of
    their own); a later layer is one block-diagonal GEMM (``blockdiag``) while the activations are
    segmented, unless its zero blocks cost more than twice the padding of the batched-matmul layout
    (and it is not tiny); from the first ``bmm`` layer on, activations stay padded."""
    kinds, segmented = [], not stacked_input
    for index, (ins, outs) in enumerate(widths):
        if index == 0:
            kinds.append(("bmm_in", len(outs) * ins[0] * max(outs)) if stacked_input else ("first", ins[0] * sum(outs)))
            continue
        blockdiag = sum(ins) * sum(outs)
        padded = len(ins) * max(ins) * max(outs)
        if segmented and prefers_blockdiag(blockdiag, padded):
            kinds.append(("blockdiag", blockdiag))
        else:
            kinds.append(("bmm", padded))
            segmented = False
    return kinds


def mlp_layers(template: nn.Module) -> list[tuple[str, nn.Module | None]] | None:
    """``[(linear's name, activation after it or None)]`` when ``template`` is a plain MLP:
    an ``nn.Sequential`` of an optional leading ``Flatten``, then ``Linear`` layers each followed by
    at most one elementwise activation. ``None`` for anything else (dropout, normalization, convs)."""
    if not isinstance(template, nn.Sequential) or any(True for _ in template.buffers()):
        return None
    layers: list[list] = []
    children = list(template.named_children())
    for pos, (name, child) in enumerate(children):
        if isinstance(child, nn.Flatten) and pos == 0:
            continue
        if isinstance(child, nn.Linear):
            layers.append([name, None])
        elif isinstance(child, ELEMENTWISE) and layers and layers[-1][1] is None:
            layers[-1][1] = child
        else:
            return None
    return [(n, a) for n, a in layers] if layers else None


class PackedMLP:
    """The packed layout of some models of a stack (see the module docstring).

    ``groups[p]`` is the input group of the model at position ``p`` of ``models``: models of one
    group see the same batch, given to :meth:`forward` as ``xs[group]``. Positions are the order of
    ``models`` (the trainer's active models); outputs come back in that order.
    """

    def __init__(self, shapes: list[dict[str, torch.Size]], layers: list[tuple[str, nn.Module | None]],
                 groups: list[int], max_shapes: dict[str, torch.Size], device: torch.device,
                 names: set[str], stacked_input: bool = False):
        k = len(shapes)
        self.num_models = k
        self.order = sorted(range(k), key=lambda p: groups[p])          # packed slot -> position
        self.inverse = None if self.order == list(range(k)) else \
            torch.tensor([self.order.index(p) for p in range(k)], device=device)
        order_t = torch.tensor(self.order, device=device)
        self.order_t = order_t
        self.maps: dict[str, _Map] = {}
        self.owners: dict[str, torch.Tensor] = {}
        self.layers: list[_Layer] = []
        self.first_groups: list[tuple[int, int, int]] = []
        layout = "seg"
        widths = [([shapes[p][f"{name}.weight"][1] for p in self.order],
                   [shapes[p][f"{name}.weight"][0] for p in self.order]) for name, _ in layers]
        if len(set(widths[0][0])) != 1:
            raise ValueError("packed models must share their input size")
        self.slot_groups = [groups[p] for p in self.order]
        for index, ((name, act), (kind, _)) in enumerate(zip(layers, layer_kinds(widths, stacked_input))):
            wname, bname = f"{name}.weight", f"{name}.bias"
            bname = bname if bname in names else None
            ins, outs = widths[index]
            out_off = _offsets(outs)
            if kind == "first":
                self._seg_weight(wname, ins, [0] * k, outs, out_off, max_shapes[wname], ins[0], device)
                for g in sorted(set(groups)):
                    slots = [q for q, p in enumerate(self.order) if groups[p] == g]
                    self.first_groups.append((g, out_off[slots[0]], out_off[slots[-1]] + outs[slots[-1]]))
                layer = _Layer(wname, bname, act, kind)
            elif kind == "bmm_in":
                layer = _Layer(wname, bname, act, "bmm_in")
                layout = "pad"
                self._pad_weight(wname, ins, outs, max_shapes[wname], device, order_t)
            elif kind == "blockdiag":
                self._seg_weight(wname, ins, _offsets(ins), outs, out_off, max_shapes[wname], sum(ins), device)
                layer = _Layer(wname, bname, act, "blockdiag")
            else:
                layer = _Layer(wname, bname, act, "bmm")
                if layout == "seg":
                    layer.equal_widths = len(set(ins)) == 1
                    if not layer.equal_widths:
                        hmax, in_off = max(ins), _offsets(ins)
                        layer.segmented_width = sum(ins)
                        layer.to_padded = torch.tensor(
                            [in_off[q] + i if i < ins[q] else sum(ins) for q in range(k) for i in range(hmax)],
                            device=device)
                layout = "pad"
                layer.out_major = index == len(layers) - 1 and max(outs) < OUT_MAJOR_BELOW
                self._pad_weight(wname, ins, outs, max_shapes[wname], device, order_t, layer.out_major)
            if bname is not None:
                if layer.out_major:
                    self._out_major_bias(bname, outs, max_shapes[bname], order_t)
                elif layer.kind in ("bmm", "bmm_in"):
                    self._pad_bias(bname, outs, max_shapes[bname], device, order_t)
                else:
                    self._seg_bias(bname, outs, out_off, max_shapes[bname], device)
            self.layers.append(layer)
        self.output_layout = layout
        self.first_out_major = FIRST_OUT_MAJOR and self.layers[0].kind == "first" and len(self.layers) > 1 and (
            self.layers[1].kind == "blockdiag" or self.layers[1].equal_widths)
        self.classes = [shapes[p][self.layers[-1].weight][0] for p in self.order]
        if len(set(self.classes)) != 1:
            raise ValueError("packed models must share their number of outputs")

    # ----- where each model's numbers go ------------------------------------------------------
    def _seg_weight(self, name, ins, in_off, outs, out_off, max_shape, cols, device):
        """Weight of a segmented layer: packed ``[S_out, cols]``; model at slot q fills rows
        ``out_off[q]:+outs[q]`` and columns ``in_off[q]:+ins[q]``."""
        regions = [(p, (slice(out_off[q], out_off[q] + outs[q]), slice(in_off[q], in_off[q] + ins[q])),
                    (slice(0, outs[q]), slice(0, ins[q]))) for q, p in enumerate(self.order)]
        flat = self.inverse is None and all(o == max_shape[0] for o in outs) and \
            all(i == max_shape[1] == cols for i in ins)  # [K, H, d] -> [K*H, d] is a reshape
        self.maps[name] = _Map(torch.Size([sum(outs), cols]), regions, transpose=False, flat=flat)
        owner = [p for q, p in enumerate(self.order) for _ in range(outs[q])]
        self.owners[name] = torch.tensor(owner, device=device).view(-1, 1)

    def _pad_weight(self, name, ins, outs, max_shape, device, order_t, out_major: bool = False):
        """Weight of a bmm layer: packed ``[K, H_in, H_out]`` (input-major, so that its gradient
        ``h^T @ dout`` is computed in place), slot q holding model p's ``W^T``; ``out_major``:
        ``[K, H_out, H_in]`` holding ``W`` (see :data:`OUT_MAJOR_BELOW`)."""
        def block(q):
            return (slice(0, outs[q]), slice(0, ins[q])) if out_major else (slice(0, ins[q]), slice(0, outs[q]))

        regions = [(p, (q, *block(q)), (slice(0, outs[q]), slice(0, ins[q]))) for q, p in enumerate(self.order)]
        flat = all(o == max_shape[0] for o in outs) and all(i == max_shape[1] for i in ins)
        shape = (len(ins), max(outs), max(ins)) if out_major else (len(ins), max(ins), max(outs))
        self.maps[name] = _Map(torch.Size(shape), regions, transpose=not out_major, flat=flat, order=order_t)
        self.owners[name] = order_t.view(-1, 1, 1)

    def _out_major_bias(self, name, outs, max_shape, order_t):
        regions = [(p, (q, slice(0, outs[q]), 0), (slice(0, outs[q]),)) for q, p in enumerate(self.order)]
        flat = all(o == max_shape[0] for o in outs)
        self.maps[name] = _Map(torch.Size([len(outs), max(outs), 1]), regions, transpose=False, flat=flat,
                               order=order_t)
        self.owners[name] = order_t.view(-1, 1, 1)

    def _seg_bias(self, name, outs, out_off, max_shape, device):
        regions = [(p, (slice(out_off[q], out_off[q] + outs[q]),), (slice(0, outs[q]),))
                   for q, p in enumerate(self.order)]
        flat = self.inverse is None and all(o == max_shape[0] for o in outs)
        self.maps[name] = _Map(torch.Size([sum(outs)]), regions, transpose=False, flat=flat)
        self.owners[name] = self.owners[name.rsplit(".", 1)[0] + ".weight"].view(-1)

    def _pad_bias(self, name, outs, max_shape, device, order_t):
        regions = [(p, (q, 0, slice(0, outs[q])), (slice(0, outs[q]),)) for q, p in enumerate(self.order)]
        flat = all(o == max_shape[0] for o in outs)
        self.maps[name] = _Map(torch.Size([len(outs), 1, max(outs)]), regions, transpose=False, flat=flat,
                               order=order_t)
        self.owners[name] = order_t.view(-1, 1, 1)

    # ----- conversion ------------------------------------------------------------------------
    def pack(self, stacked: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Packed copies of stacked tensors ``[K, *max_shape]`` (parameters, optimizer state or
        boolean masks); entries outside every model's block are zero (False)."""
        return {name: self.pack_one(name, tensor) for name, tensor in stacked.items()}

    def pack_one(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The packed copy of one stacked tensor of parameter ``name`` (see :meth:`pack`)."""
        m = self.maps[name]
        tensor = tensor.detach()
        if m.flat:
            if m.order is None:
                return tensor.reshape(m.shape).clone()
            picked = tensor.index_select(0, m.order)
            return (picked.transpose(1, 2) if m.transpose else picked).reshape(m.shape).contiguous().clone()
        packed = tensor.new_zeros(m.shape)
        for p, packed_region, stacked_region in m.regions:
            block = tensor[p][stacked_region]
            packed[packed_region] = block.t() if m.transpose else block
        return packed

    def unpack(self, name: str, packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The stacked ``[K, *max_shape]`` tensor (shaped like ``like``) holding ``packed``; padding is zero."""
        m = self.maps[name]
        packed = packed.detach()
        if m.flat and m.order is None:
            return packed.reshape(like.shape).clone()
        out = torch.zeros_like(like, dtype=packed.dtype)
        if m.flat:
            rows = packed.transpose(1, 2) if m.transpose else packed
            out[m.order] = rows.reshape(out[m.order].shape)
            return out
        for p, packed_region, stacked_region in m.regions:
            block = packed[packed_region]
            out[p][stacked_region] = block.t() if m.transpose else block
        return out

    # ----- forward and backward ----------------------------------------------------------------
    @property
    def manual_backward(self) -> bool:
        """True when :meth:`backward` applies: every activation is a ReLU (or none)."""
        return all(layer.activation is None or type(layer.activation) is nn.ReLU for layer in self.layers)

    @property
    def stacks_input(self) -> bool:
        return self.layers[0].kind == "bmm_in"

    def forward(self, params: dict[str, torch.Tensor], xs: list[torch.Tensor], tape: list | None = None,
                stacked: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Outputs ``[K, B, C]`` (positions in the order the plan was built with, float32) for the
        inputs ``xs[group]`` (``[B, ...]``, flattened to ``[B, d]``). With a ``tape`` (a list), each
        layer's input, output and weight are recorded on it for :meth:`backward`. ``stacked``: the
        inputs of the slots already stacked ``[K, B, ...]`` (for a ``bmm_in`` first layer). ``dtype``:
        compute the products in this precision (bfloat16, float16) from float32 parameters."""
        h = None
        cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
        for layer in self.layers:
            w = cast(params[layer.weight])
            b = cast(params[layer.bias]) if layer.bias is not None else None
            if layer.kind == "first":
                h_in = [cast(xs[g].flatten(1)) for g, _, _ in self.first_groups]
                parts = []
                for x, (g, start, stop) in zip(h_in, self.first_groups):
                    ws = w[start:stop] if len(self.first_groups) > 1 else w
                    bs = None if b is None else (b[start:stop] if len(self.first_groups) > 1 else b)
                    if self.first_out_major:  # h^T = W x^T + b: [S, B]
                        parts.append(torch.mm(ws, x.t()) if bs is None else torch.addmm(bs.unsqueeze(1), ws, x.t()))
                    else:
                        parts.append(torch.mm(x, ws.t()) if bs is None else torch.addmm(bs, x, ws.t()))
                if self.first_out_major:  # used as its transposed view [B, S]
                    h = (parts[0] if len(parts) == 1 else torch.cat(parts, 0)).t()
                else:
                    h = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            elif layer.kind == "bmm_in":
                h_in = cast(stacked.flatten(2) if stacked is not None else
                            torch.stack([xs[g].flatten(1) for g in self.slot_groups]))
                h = torch.bmm(h_in, w) if b is None else torch.baddbmm(b, h_in, w)
            elif layer.kind == "blockdiag":
                h_in = h
                h = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
            else:
                if h.dim() == 2:  # segmented [B, S] -> padded [K, B, H]
                    batch = h.shape[0]
                    if not layer.equal_widths:
                        h = torch.cat([h, h.new_zeros(batch, 1)], 1).index_select(1, layer.to_padded)
                    h = h.view(batch, self.num_models, -1).transpose(0, 1)
                h_in = h
                if layer.out_major:  # [K, C, B], returned as its transposed view [K, B, C]
                    h_t = h.transpose(1, 2)
                    h = (torch.bmm(w, h_t) if b is None else torch.baddbmm(b, w, h_t)).transpose(1, 2)
                else:
                    h = torch.bmm(h, w) if b is None else torch.baddbmm(b, h, w)
            if layer.activation is not None:
                h = layer.activation(h)
            if tape is not None:
                tape.append((h_in, h, w))
        out = self._positions(self._models_first(h))
        return out if out.dtype == torch.float32 else out.float()

    def _models_first(self, out: torch.Tensor) -> torch.Tensor:
        """Network outputs (segmented ``[B, K*C]`` or padded ``[K, B, C]``) as ``[K, B, C]`` (slot order)."""
        if out.dim() == 2:
            return out.view(out.shape[0], self.num_models, self.classes[0]).transpose(0, 1)
        return out

    def _positions(self, per_slot: torch.Tensor) -> torch.Tensor:
        return per_slot if self.inverse is None else per_slot.index_select(0, self.inverse)

    def backward(self, params: dict[str, torch.Tensor], tape: list, d_out: torch.Tensor) -> None:
        """Set ``params[n].grad`` to :meth:`gradients`."""
        for name, grad in self.gradients(params, tape, d_out).items():
            params[name].grad = grad

    @torch.no_grad()
    def gradients(self, params: dict[str, torch.Tensor], tape: list, d_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The gradients (float32) of the loss whose gradient with respect to the outputs (``[K, B, C]``,
        positions order) is ``d_out``, by the chain rule through the layers recorded on ``tape`` by
        :meth:`forward` (requires :attr:`manual_backward`), in the precision the forward ran in: for
        ``h = relu(a)``, ``a = h_in W^T + b``: ``da = dh * [a > 0]``, ``dW = da^T h_in``,
        ``db = sum_batch da`` (accumulated in float32), ``dh_in = da W`` (bmm layers: the same per model)."""
        grads = {}
        if self.inverse is not None:
            d_out = d_out.index_select(0, self.order_t)
        dtype = tape[-1][1].dtype
        if d_out.dtype != dtype:
            d_out = d_out.to(dtype)
        d = d_out.transpose(0, 1).reshape(d_out.shape[1], -1) if tape[-1][1].dim() == 2 else d_out
        f32 = (lambda t: t) if dtype == torch.float32 else (lambda t: t.float())
        for index in reversed(range(len(self.layers))):
            layer, (h_in, h, w) = self.layers[index], tape[index]
            # the gradient passed down to an out-major first layer is computed transposed too, so that
            # it matches that layer's [B, S] view (d^T = W^T d_out^T), and every product stays a plain one
            below_out_major = index == 1 and self.first_out_major
            if layer.activation is not None:
                d = torch.ops.aten.threshold_backward(d, h, 0)  # d * [h > 0], one pass
            if layer.kind == "first":
                grad = torch.empty(w.shape, dtype=dtype, device=w.device)
                for x, (g, start, stop) in zip(h_in, self.first_groups):
                    torch.mm(d[:, start:stop].t(), x, out=grad[start:stop])
                grads[layer.weight] = f32(grad)
                if layer.bias is not None:
                    grads[layer.bias] = d.sum(0, dtype=torch.float32)
            elif layer.kind == "bmm_in":
                grads[layer.weight] = f32(torch.bmm(h_in.transpose(1, 2), d))
                if layer.bias is not None:
                    grads[layer.bias] = d.sum(1, keepdim=True, dtype=torch.float32)
            elif layer.kind == "blockdiag":
                grads[layer.weight] = f32(torch.mm(d.t(), h_in))
                if layer.bias is not None:
                    grads[layer.bias] = d.sum(0, dtype=torch.float32)
                d = torch.mm(w.t(), d.t()).t() if below_out_major else torch.mm(d, w)
            else:
                if layer.out_major:  # w is [K, C, H]: dW = d^T h_in
                    grads[layer.weight] = f32(torch.bmm(d.transpose(1, 2), h_in))
                    if layer.bias is not None:
                        grads[layer.bias] = d.sum(1, dtype=torch.float32).unsqueeze(-1)
                else:
                    grads[layer.weight] = f32(torch.bmm(h_in.transpose(1, 2), d))
                    if layer.bias is not None:
                        grads[layer.bias] = d.sum(1, keepdim=True, dtype=torch.float32)
                w_in_out = w.transpose(1, 2) if layer.out_major else w  # [K, H_in, H_out]: dh_in = d w_in_out^T
                if below_out_major:  # dh_in^T [K, H, B] is the segmented [S, B], the first layer reads as [B, S]
                    d = torch.bmm(w_in_out, d.transpose(1, 2)).flatten(0, 1).t()
                    continue
                d = torch.bmm(d, w_in_out.transpose(1, 2))
                if layer.to_padded is not None or layer.equal_widths:  # back to segmented [B, S]
                    batch = d.shape[1]
                    d = d.transpose(0, 1).reshape(batch, -1)
                    if layer.to_padded is not None:
                        seg = d.new_zeros(batch, layer.segmented_width + 1)
                        d = seg.index_add_(1, layer.to_padded, d)[:, :-1]
        return grads


def _offsets(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for s in sizes:
        out.append(total)
        total += s
    return out


