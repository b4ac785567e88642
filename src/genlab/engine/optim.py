"""Optimizers for K stacked models, with per-model hyperparameters and freezing.

Each update is the exact per-element rule of ``torch.optim.SGD`` / ``torch.optim.Adam`` /
``torch.optim.AdamW`` applied to every model at once; per-model learning rates and weight decays
are ``[K]`` tensors broadcast over the model dimension. Two masks keep models independent:

* ``active[k] = False`` freezes model k (stopped or diverged): its weights and state do not move;
* ``mask[name]`` (bool, like the parameter) keeps masked entries at exactly zero - used for
  padding to a common width and for pruned lottery-ticket weights, under momentum, Adam state
  and weight decay alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _per_model(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class OptimizerSettings:
    name: str = "sgd"            # sgd | adam | adamw
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


class StackedOptimizer:
    """SGD (momentum, Nesterov) and Adam/AdamW over stacked parameters ``[K, ...]``."""

    def __init__(self, params: dict[str, torch.Tensor], settings: OptimizerSettings,
                 masks: dict[str, torch.Tensor] | None = None):
        if settings.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {settings.name!r}")
        self.params = params
        self.settings = settings
        self.masks = masks or {}
        k = next(iter(params.values())).shape[0]
        self.steps = torch.zeros(k, dtype=torch.float64)
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor) -> None:
        """One update of every active model; ``lr`` and ``weight_decay`` are ``[K]`` tensors."""
        s = self.settings
        self.steps += active.to(torch.float64).cpu()
        if bool(active.all()) and bool((lr == lr[0]).all()) and bool((weight_decay == weight_decay[0]).all()):
            self._fused_step(float(lr[0]), float(weight_decay[0]))
            return
        for name, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            act = _per_model(active, p)
            lr_k = _per_model(lr.to(p.dtype), p)
            wd_k = _per_model(weight_decay.to(p.dtype), p)
            state = self.state[name]
            if s.name == "sgd":
                if bool((weight_decay != 0).any()):
                    g = g + wd_k * p
                if s.momentum:
                    buf = state.get("momentum", torch.zeros_like(p))
                    buf = torch.where(act, s.momentum * buf + g, buf)
                    state["momentum"] = buf
                    g = g + s.momentum * buf if s.nesterov else buf
                update = p - lr_k * g
            else:
                b1, b2 = s.betas
                if s.name == "adam" and bool((weight_decay != 0).any()):
                    g = g + wd_k * p
                m = state.get("exp_avg", torch.zeros_like(p))
                v = state.get("exp_avg_sq", torch.zeros_like(p))
                m = torch.where(act, b1 * m + (1 - b1) * g, m)
                v = torch.where(act, b2 * v + (1 - b2) * g * g, v)
                state["exp_avg"], state["exp_avg_sq"] = m, v
                t = _per_model(self.steps.clamp(min=1).to(p.device), p)
                bc1 = (1 - b1 ** t).to(p.dtype)
                bc2 = (1 - b2 ** t).to(p.dtype)
                base = p * (1 - lr_k * wd_k) if s.name == "adamw" else p
                update = base - lr_k * (m / bc1) / ((v / bc2).sqrt() + s.eps)
            if name in self.masks:
                update = update * self.masks[name]
            p.copy_(torch.where(act, update, p))

    def _fused_step(self, lr: float, weight_decay: float) -> None:
        """The same update through PyTorch's fused single-pass kernels, when every model is active
        and shares one learning rate and weight decay (the common case of a sweep)."""
        s = self.settings
        names = [n for n, p in self.params.items() if p.grad is not None]
        params = [self.params[n] for n in names]
        grads = [p.grad for p in params]
        if s.name == "sgd":
            if s.momentum:
                bufs = [self.state[n].setdefault("momentum", torch.zeros_like(self.params[n])) for n in names]
                torch._fused_sgd_(params, grads, bufs, weight_decay=weight_decay, momentum=s.momentum, lr=lr,
                                  dampening=0.0, nesterov=s.nesterov, maximize=False, is_first_step=False)
            else:
                torch._fused_sgd_(params, grads, [], weight_decay=weight_decay, momentum=0.0, lr=lr,
                                  dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
        else:
            m = [self.state[n].setdefault("exp_avg", torch.zeros_like(self.params[n])) for n in names]
            v = [self.state[n].setdefault("exp_avg_sq", torch.zeros_like(self.params[n])) for n in names]
            step = float(self.steps[0])
            steps = [torch.tensor(step, dtype=torch.float32, device=p.device) for p in params]
            kernel = torch._fused_adamw_ if s.name == "adamw" else torch._fused_adam_
            kernel(params, grads, m, v, [], steps, amsgrad=False, lr=lr, beta1=s.betas[0], beta2=s.betas[1],
                   weight_decay=weight_decay, eps=s.eps, maximize=False)
        for n in names:
            if n in self.masks:
                self.params[n].mul_(self.masks[n])

    def state_dict(self) -> dict:
        return {"steps": self.steps.clone(),
                "state": {n: {k: v.clone() for k, v in st.items()} for n, st in self.state.items()}}

    def load_state_dict(self, data: dict) -> None:
        self.steps = data["steps"].clone()
        self.state = {n: {k: v.clone() for k, v in st.items()} for n, st in data["state"].items()}
