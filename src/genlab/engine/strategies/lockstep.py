"""The lockstep strategy: every model is its own ``nn.Module``, run by its ordinary forward and
backward (PyTorch's plain kernels: oneDNN/cuDNN convolutions, BatchNorm in train mode), one after
another at each step; data order, bookkeeping, stop rules, evaluation and snapshots stay shared.

This is the plain loop's computation, so it is the floor no workload falls below: what it saves
over the loop is the shared batch gather of models that see the same data, one fused optimizer
kernel for all models that share a learning rate, and the shared evaluation schedule. For 4-D
inputs the modules and batches can run in ``channels_last`` memory format, which oneDNN's
convolutions prefer on CPUs.

Dropout is drawn per model: before each forward the global generator is seeded from (the model's
seed, epoch, step), so a model's masks do not depend on which models it trains with.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from genlab.engine.evaluate import eval_rows
from genlab.engine.losses import model_loss
from genlab.engine.optim import PerModelOptimizer
from genlab.engine.precision import autocast
from genlab.engine.stack import own_region
from genlab.engine.strategies.base import Session, StepBatch

DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, DROPOUT) for m in module.modules())


def dropout_seed(seed: int, epoch: int, step: int) -> int:
    """A 63-bit seed of the dropout masks of (model seed, epoch, step) (splitmix64 mixing)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB + 1) & (2 ** 64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2 ** 64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2 ** 64 - 1)
    return (z ^ (z >> 31)) >> 1


class LockstepSession(Session):
    name = "lockstep"

    def __init__(self, trainer, idx, group_of, channels_last: bool = False):
        super().__init__(trainer, idx, group_of)
        stack = trainer.stack
        if stack.members is not None:
            raise ValueError("modules that loop over their members (_genlab_no_vmap) train in the stacked strategy")
        self.channels_last = channels_last
        self.name = f"{self.name}-cl" if channels_last else self.name
        self.modules: list[nn.Module] = []
        self.params: list[dict[str, torch.Tensor]] = []
        self.regions: list[dict[str, tuple]] = []
        masks = []
        for k in idx.tolist():
            net = copy.deepcopy(trainer.jobs[k].module).to(trainer.device)
            regions = {n: own_region(k, shape) for n, shape in stack.shapes[k].items()}
            with torch.no_grad():
                for n, p in net.named_parameters():
                    p.copy_(stack.params[n][regions[n]])
                for n, b in net.named_buffers():
                    b.copy_(stack.buffers[n][stack.buffer_region(k, n)])
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            net.train()
            self.modules.append(net)
            self.params.append(dict(net.named_parameters()))
            self.regions.append(regions)
            masks.append({n: trainer.masks[n][regions[n]] for n in trainer.masks})
        self.random = [has_dropout(m) for m in self.modules]
        self.seeds = [trainer.jobs[k].seed for k in idx.tolist()]
        self.opt = PerModelOptimizer(self.params, trainer.settings, masks)
        self.opt.steps = trainer.opt_state["steps"][idx.cpu()].clone()
        for pos, k in enumerate(idx.tolist()):
            for n, slots in trainer.opt_state["state"].items():
                for slot, tensor in slots.items():
                    self.opt.state[pos][n][slot] = tensor[self.regions[pos][n]].clone().contiguous(
                        memory_format=torch.channels_last if channels_last and tensor.dim() == 5 else torch.contiguous_format)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _train_one(self, pos: int, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int,
                   scale: torch.Tensor | None = None):
        """Forward and backward of the model at ``pos`` (products at the configured precision, the
        loss in float32, its gradient scaled by ``scale`` when given); its loss and number of
        correct predictions."""
        for p in self.params[pos].values():
            p.grad = None
        if self.random[pos]:
            torch.manual_seed(dropout_seed(self.seeds[pos], epoch, step))
        with autocast(self.trainer.config.precision, self.trainer.device):
            out = self.modules[pos](x)
        out = out.float()
        loss = model_loss(out, y, self.trainer.config.loss)
        if bool(torch.isfinite(loss)):
            (loss if scale is None else loss * scale).backward()
        return loss.detach(), (out.detach().argmax(-1) == y).sum()

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        xs = [self._input(x) for x in batch.xs]
        losses = torch.full((self.num_models,), float("nan"), device=batch.y.device)
        correct = torch.zeros(self.num_models, dtype=torch.long, device=batch.y.device)
        for pos in working.nonzero().flatten().tolist():
            scale = None if batch.loss_scale is None else batch.loss_scale[pos]
            losses[pos], correct[pos] = self._train_one(pos, xs[batch.group_of[pos]], batch.y[pos], batch.epoch,
                                                        batch.step, scale)
        return losses, correct

    def unscale_models(self, positions: list[int], scale: torch.Tensor) -> dict[int, bool]:
        """Unscale the gradients of the models at ``positions``; whether each is finite."""
        out = {}
        for pos in positions:
            grads = [p.grad for p in self.params[pos].values() if p.grad is not None]
            found = torch.zeros(1, device=scale.device)
            if grads:
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, (1.0 / scale[pos]).reshape(1))
            out[pos] = not bool(found.item())
        return out

    def unscale(self, scale):
        finite = self.unscale_models(list(range(self.num_models)), scale)
        return torch.tensor([finite[p] for p in range(self.num_models)], device=scale.device)

    def step(self, lr, weight_decay, working, uniform):
        self.opt.step(lr, weight_decay, working)

    def sync(self) -> None:
        trainer = self.trainer
        with torch.no_grad():
            for pos, (net, k) in enumerate(zip(self.modules, self.idx.tolist())):
                for n, p in self.params[pos].items():
                    trainer.stack.params[n][self.regions[pos][n]] = p
                for n, b in net.named_buffers():
                    trainer.stack.buffers[n][trainer.stack.buffer_region(k, n)] = b
                for n, slots in self.opt.state[pos].items():
                    full = trainer.opt_state["state"][n]
                    for slot, t in slots.items():
                        if slot not in full:
                            full[slot] = torch.zeros_like(trainer.stack.params[n])
                        full[slot][self.regions[pos][n]] = t
        trainer.opt_state["steps"][self.idx.cpu()] = self.opt.steps

    @torch.no_grad()
    def evaluate_one(self, pos: int, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy of the model at ``pos`` on ``x`` (eval mode, in chunks)."""
        cfg = self.trainer.config
        net = self.modules[pos]
        net.eval()
        loss_sum, correct = 0.0, 0.0
        rows = eval_rows(cfg.eval_batch_size, 1)
        for start in range(0, x.shape[0], rows):
            out = net(self._input(x[start:start + rows])).float()
            yb = y[start:start + rows]
            loss_sum += float(model_loss(out, yb, cfg.loss)) * len(yb)
            correct += float((out.argmax(-1) == yb).sum())
        net.train()
        return loss_sum / x.shape[0], correct / x.shape[0]

    @torch.no_grad()
    def evaluate(self, positions, x, y):
        results = [self.evaluate_one(int(pos), x, y[i]) for i, pos in enumerate(positions.tolist())]
        loss = torch.tensor([r[0] for r in results], dtype=torch.float64)
        acc = torch.tensor([r[1] for r in results], dtype=torch.float64)
        return loss, acc

    def describe(self) -> dict:
        return {**super().describe(), "channels_last": self.channels_last}
