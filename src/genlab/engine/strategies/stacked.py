"""The stacked strategy: one ``torch.func.vmap`` over the models' stacked parameters and buffers.

Any module whose forward is a function of its parameters and buffers works; BatchNorm statistics
are updated per model (each model's slice of the session's stacked buffers), as PyTorch updates
them in the plain loop. Modules that cannot run under vmap (``_genlab_no_vmap``) loop over their
members instead (see :func:`genlab.engine.stack.stacked_forward`). Models with dropout are not
eligible: vmap draws all models' masks from one generator, so a model's draws would depend on
the models it is trained with.
"""
from __future__ import annotations

import torch

from genlab.engine.losses import per_model_losses
from genlab.engine.optim import StackedOptimizer
from genlab.engine.precision import autocast, compute_dtype
from genlab.engine.stack import stacked_forward
from genlab.engine.strategies.base import Session, StepBatch, unscale_owned


class StackedSession(Session):
    name = "stacked"

    def __init__(self, trainer, idx, group_of):
        super().__init__(trainer, idx, group_of)
        stack = trainer.stack
        self.params = {n: p[idx].detach().requires_grad_(True) for n, p in stack.params.items()}
        self.buffers = {n: b[idx].clone() for n, b in stack.buffers.items()}
        masks = {n: m[idx] for n, m in trainer.masks.items()}
        self.opt = StackedOptimizer(self.params, trainer.settings, masks)
        self.opt.state = {n: {s: t[idx] for s, t in st.items()} for n, st in trainer.opt_state["state"].items()}
        self.opt.steps = trainer.opt_state["steps"][idx.cpu()].clone()
        self.shared = len(set(group_of)) == 1
        # vmap ignores torch.autocast: under vmap the low precision is cast explicitly (parameters and
        # inputs), which normalization layers with float32 statistics do not accept
        self.dtype = compute_dtype(trainer.config.precision)
        if self.dtype is not None and self.buffers:
            raise ValueError(f"the stacked strategy cannot train models with buffers (BatchNorm) at "
                             f"{trainer.config.precision}; use lockstep")

    def _inputs(self, batch: StepBatch) -> torch.Tensor:
        if self.shared:
            return batch.xs[0]
        return torch.stack([batch.xs[g] for g in batch.group_of])

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        for p in self.params.values():
            p.grad = None
        stack = self.trainer.stack
        stack.template.train()
        params, x = self.params, self._inputs(batch)
        # modules that loop over their members run outside vmap, where autocast works: their own
        # float32 parts (a subspace model's projection of theta_d) stay float32, their products do not
        looped = stack.members is not None
        if self.dtype is not None and not looped:
            params = {n: p.to(self.dtype) for n, p in params.items()}
            x = x.to(self.dtype)
        with autocast(self.trainer.config.precision if looped else "fp32", self.trainer.device):
            out = stacked_forward(stack, params, x, shared_input=self.shared, models=self.idx,
                                  buffers=self.buffers).float()
        losses = per_model_losses(out, batch.y, self.trainer.config.loss)
        finite = torch.isfinite(losses)
        scaled = losses if batch.loss_scale is None else losses * batch.loss_scale
        torch.where(working & finite, scaled, torch.zeros_like(losses)).sum().backward()
        return losses.detach(), (out.detach().argmax(-1) == batch.y).sum(1)

    def unscale(self, scale):
        return unscale_owned([(p.grad, None) for p in self.params.values() if p.grad is not None], scale,
                             self.num_models)

    def step(self, lr, weight_decay, working, uniform):
        self.opt.step(lr, weight_decay, working, uniform=uniform)

    def sync(self) -> None:
        trainer, idx = self.trainer, self.idx
        with torch.no_grad():
            for n, p in self.params.items():
                trainer.stack.params[n][idx] = p.detach()
            for n, b in self.buffers.items():
                trainer.stack.buffers[n][idx] = b
        trainer.opt_state["steps"][idx.cpu()] = self.opt.steps
        for n, st in self.opt.state.items():
            full = trainer.opt_state["state"][n]
            for s, t in st.items():
                if s not in full:
                    full[s] = torch.zeros_like(trainer.stack.params[n])
                full[s][idx] = t
