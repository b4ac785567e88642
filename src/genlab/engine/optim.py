"""Optimizers for K stacked models, with per-model hyperparameters and freezing.

Each update is the exact per-element rule of ``torch.optim.SGD`` / ``torch.optim.Adam`` /
``torch.optim.AdamW`` applied to every model at once; per-model learning rates and weight decays
are ``[K]`` tensors broadcast over the model dimension. Two masks keep models independent:

* ``active[k] = False`` freezes model k (stopped or diverged): its weights and state do not move;
* ``mask[name]`` (bool, like the parameter) keeps masked entries at exactly zero - used for
  padding to a common width and for pruned lottery-ticket weights, under momentum, Adam state
  and weight decay alike.

Parameters are stacked ``[K, ...]`` (model k owns row k) unless ``owners`` says otherwise: in the
packed layout (:mod:`genlab.engine.packed`) ``owners[name]`` is a long tensor broadcastable to the
parameter giving the model of each entry.
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
                 masks: dict[str, torch.Tensor] | None = None, owners: dict[str, torch.Tensor] | None = None,
                 num_models: int | None = None):
        if settings.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {settings.name!r}")
        self.params = params
        self.settings = settings
        self.masks = masks or {}
        self.owners = owners or {}
        k = next(iter(params.values())).shape[0] if num_models is None else num_models
        self.steps = torch.zeros(k, dtype=torch.float64)
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor,
             uniform: bool | None = None) -> None:
        """One update of every active model; ``lr`` and ``weight_decay`` are ``[K]`` tensors.
        ``uniform`` (computed when not given): every model is active and all share one learning
        rate and weight decay - the update then runs through PyTorch's fused kernels."""
        s = self.settings
        if uniform is None:
            uniform = bool(active.all()) and bool((lr == lr[0]).all()) and bool((weight_decay == weight_decay[0]).all())
        if uniform:
            self.steps += 1
            self._fused_step(float(lr[0]), float(weight_decay[0]))
            return
        self.steps += active.to(torch.float64).cpu()
        for name, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            spread = self._spreader(name, p)
            act = spread(active)
            lr_k = spread(lr.to(p.dtype))
            wd_k = spread(weight_decay.to(p.dtype))
            state = self.state[name]
            if s.name == "sgd":
                if bool((weight_decay != 0).any()):
                    g = g + wd_k * p
                if s.momentum:
                    buf = state.get("momentum", torch.zeros_like(p))
                    buf = torch.where(act, s.momentum * buf + g, buf)
                    self._keep(state, "momentum", buf)
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
                self._keep(state, "exp_avg", m)
                self._keep(state, "exp_avg_sq", v)
                t = spread(self.steps.clamp(min=1).to(p.device))
                bc1 = (1 - b1 ** t).to(p.dtype)
                bc2 = (1 - b2 ** t).to(p.dtype)
                base = p * (1 - lr_k * wd_k) if s.name == "adamw" else p
                update = base - lr_k * (m / bc1) / ((v / bc2).sqrt() + s.eps)
            if name in self.masks:
                update = update * self.masks[name]
            p.copy_(torch.where(act, update, p))

    @staticmethod
    def _keep(state: dict[str, torch.Tensor], slot: str, value: torch.Tensor) -> None:
        """Store ``value`` as ``state[slot]``, into the existing tensor when there is one: a state
        tensor keeps its storage for good (the packed-procs workers share it with the parent)."""
        if slot in state:
            state[slot].copy_(value)
        else:
            state[slot] = value

    def create_state(self) -> None:
        """Create every state tensor the optimizer will use, as zeros (what a first step would
        create), so that they exist before the tensors are moved elsewhere (shared memory)."""
        slots = {"sgd": ("momentum",) if self.settings.momentum else (),
                 "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq")}[self.settings.name]
        for name in self.params:
            for slot in slots:
                self._state(name, slot)

    def _spreader(self, name: str, p: torch.Tensor):
        """Per-model values ``[K]`` -> a tensor broadcastable to parameter ``name``."""
        owner = self.owners.get(name)
        if owner is None:
            return lambda v: _per_model(v, p)
        return lambda v: v.to(p.device)[owner]

    def _fused_step(self, lr: float, weight_decay: float) -> None:
        """The same update through PyTorch's fused single-pass kernels, when every model is active
        and shares one learning rate and weight decay (the common case of a sweep)."""
        s = self.settings
        names = [n for n, p in self.params.items() if p.grad is not None]
        params = [self.params[n] for n in names]
        grads = [p.grad for p in params]
        if s.name == "sgd":
            if s.momentum:
                bufs = [self._state(n, "momentum") for n in names]
                torch._fused_sgd_(params, grads, bufs, weight_decay=weight_decay, momentum=s.momentum, lr=lr,
                                  dampening=0.0, nesterov=s.nesterov, maximize=False, is_first_step=False)
            else:
                torch._fused_sgd_(params, grads, [], weight_decay=weight_decay, momentum=0.0, lr=lr,
                                  dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
        else:
            m = [self._state(n, "exp_avg") for n in names]
            v = [self._state(n, "exp_avg_sq") for n in names]
            steps = [torch.tensor(float(self.steps[0]), dtype=torch.float32, device=params[0].device)] * len(params)
            kernel = torch._fused_adamw_ if s.name == "adamw" else torch._fused_adam_
            kernel(params, grads, m, v, [], steps, amsgrad=False, lr=lr, beta1=s.betas[0], beta2=s.betas[1],
                   weight_decay=weight_decay, eps=s.eps, maximize=False)
        for n in names:
            if n in self.masks:
                self.params[n].mul_(self.masks[n])

    def _state(self, name: str, slot: str) -> torch.Tensor:
        """Optimizer state ``slot`` of parameter ``name``, created as zeros on first use."""
        state = self.state[name]
        if slot not in state:
            state[slot] = torch.zeros_like(self.params[name])
        return state[slot]

    def state_dict(self) -> dict:
        return {"steps": self.steps.clone(),
                "state": {n: {k: v.clone() for k, v in st.items()} for n, st in self.state.items()}}

    def load_state_dict(self, data: dict) -> None:
        self.steps = data["steps"].clone()
        self.state = {n: {k: v.clone() for k, v in st.items()} for n, st in data["state"].items()}


class PerModelOptimizer:
    """The same updates for models held as separate tensors (one ``nn.Module`` each): ``params[k]``
    maps parameter names to model k's leaf tensors, ``masks[k]`` to its boolean masks (entries kept
    at exactly zero), ``state[k][name][slot]`` holds its optimizer state and ``steps[k]`` its count.

    Working models that share a learning rate and weight decay take one fused multi-tensor kernel
    (PyTorch's ``_fused_sgd_`` / ``_fused_adam_`` / ``_fused_adamw_``) for all their tensors; each
    model's Adam bias correction uses its own step count.
    """

    def __init__(self, params: list[dict[str, torch.Tensor]], settings: OptimizerSettings,
                 masks: list[dict[str, torch.Tensor]] | None = None):
        if settings.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {settings.name!r}")
        self.params = params
        self.settings = settings
        self.masks = masks or [{} for _ in params]
        self.steps = torch.zeros(len(params), dtype=torch.float64)
        self.state: list[dict[str, dict[str, torch.Tensor]]] = [{n: {} for n in p} for p in params]

    def _slot(self, k: int, name: str, slot: str) -> torch.Tensor:
        state = self.state[k][name]
        if slot not in state:
            state[slot] = torch.zeros_like(self.params[k][name])
        return state[slot]

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor, active: torch.Tensor,
             uniform: bool | None = None) -> None:
        """One update of every ``active`` model (``lr``, ``weight_decay``, ``active``: ``[K]``)."""
        s = self.settings
        lrs, wds, act = lr.tolist(), weight_decay.tolist(), active.tolist()
        groups: dict[tuple[float, float], list[int]] = {}
        for k in range(len(self.params)):
            if act[k]:
                groups.setdefault((lrs[k], wds[k]), []).append(k)
        for (lr_g, wd_g), models in groups.items():
            entries = [(k, n, p) for k in models for n, p in self.params[k].items() if p.grad is not None]
            if not entries:
                continue
            params = [p for _, _, p in entries]
            grads = [p.grad for p in params]
            if s.name == "sgd":
                bufs = [self._slot(k, n, "momentum") for k, n, _ in entries] if s.momentum else []
                torch._fused_sgd_(params, grads, bufs, weight_decay=wd_g, momentum=s.momentum, lr=lr_g,
                                  dampening=0.0, nesterov=s.nesterov, maximize=False, is_first_step=False)
            else:
                steps = {k: torch.tensor(float(self.steps[k]) + 1.0, dtype=torch.float32, device=params[0].device)
                         for k in models}
                kernel = torch._fused_adamw_ if s.name == "adamw" else torch._fused_adam_
                kernel(params, grads, [self._slot(k, n, "exp_avg") for k, n, _ in entries],
                       [self._slot(k, n, "exp_avg_sq") for k, n, _ in entries], [],
                       [steps[k] for k, _, _ in entries], amsgrad=False, lr=lr_g, beta1=s.betas[0],
                       beta2=s.betas[1], weight_decay=wd_g, eps=s.eps, maximize=False)
            for k, n, p in entries:
                mask = self.masks[k].get(n)
                if mask is not None:
                    p.mul_(mask)
        self.steps += active.to(torch.float64).cpu()
