"""Sharpness of a trained network: the largest Gaussian weight perturbation its training error
tolerates (PAC-Bayes flatness, Dziugaite & Roy 2017 / Neyshabur et al. 2017; magnitude-aware as
in Jiang et al. 2019), found by bracketing then bisection on sigma, every draw seeded."""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from genlab.errors import UserError
from genlab.seeding import spawn_seeds

_BRACKET_FACTOR = 4.0


_MAX_BRACKET_STEPS = 15


def sharpness_sigma(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    target_increase: float,
    magnitude_aware: bool = False,
    magnitude_eps: float = 1e-3,
    draws: int = 4,
    steps: int = 6,
    sigma_init: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 1024,
) -> float:
    """Largest noise scale sigma whose mean loss increase stays within ``target_increase``.

    The perturbation-robustness search behind the PAC-Bayes flatness measures of Jiang et al. 2019
    (sec. on sharpness/PAC-Bayes; cf. Keskar et al. 2017, Neyshabur et al. 2017). Every trainable
    parameter theta_i is replaced by theta_i + u_i with

    * isotropic noise:        u_i = sigma * z_i,
    * magnitude-aware noise:  u_i = sigma * (|theta_i| + eps) * z_i,   z_i ~ N(0, 1) i.i.d.

    (Jiang et al.'s magnitude-aware variant uses variance sigma^2 theta_i^2 + eps^2; here the std is
    proportional to |theta_i| + eps so that sigma is a pure scale, with eps = ``magnitude_eps``).

    Returns the largest sigma with  mean_{j=1..draws} L(theta + u_j(sigma)) - L(theta) <= target,
    L = ``loss_fn`` on (x, y). The draws use common random numbers: draw j always uses the same
    z_j (seeded from ``seed``), only scaled by sigma, so the Monte-Carlo estimate is a smooth,
    deterministic function of sigma and the bisection is well defined. Search: from
    ``sigma_init`` multiply or divide by 4 until the target is bracketed, then ``steps`` bisections
    in log sigma; the result is the geometric midpoint of the final bracket, so its relative
    precision is 4 ** (2 ** -(steps + 1)) (about 1% for steps = 6). Cost: about
    (steps + 3) * draws forward passes over x. A NaN loss counts as exceeding the target.
    """
    if not target_increase > 0:
        raise UserError(f"target_increase: must be > 0, got {target_increase}")
    if draws < 1:
        raise UserError(f"draws: must be >= 1, got {draws}")
    if steps < 0:
        raise UserError(f"steps: must be >= 0, got {steps}")
    if not sigma_init > 0:
        raise UserError(f"sigma_init: must be > 0, got {sigma_init}")
    work = eval_copy(model, device)
    x, y = x.to(device), y.to(device)
    parameters = [p for p in work.parameters() if p.requires_grad]
    centers = [p.detach().clone() for p in parameters]
    scales = [c.abs() + magnitude_eps if magnitude_aware else None for c in centers]
    draw_seeds = spawn_seeds(seed, draws)
    base_loss = float(loss_fn(predict(work, x, batch_size), y))

    def mean_increase(sigma: float) -> float:
        total = 0.0
        for draw_seed in draw_seeds:
            _set_perturbed(parameters, centers, scales, sigma, draw_seed, device)
            total += float(loss_fn(predict(work, x, batch_size), y))
        return total / draws - base_loss

    return _largest_sigma_within(mean_increase, target_increase, sigma_init, steps)


def _set_perturbed(
    parameters: list[nn.Parameter],
    centers: list[torch.Tensor],
    scales: list[torch.Tensor | None],
    sigma: float,
    draw_seed: int,
    device: str,
) -> None:
    """theta <- theta_0 + sigma * scale * z, with z drawn from a generator seeded by draw_seed."""
    generator = torch.Generator(device=device).manual_seed(draw_seed)
    with torch.no_grad():
        for parameter, center, scale in zip(parameters, centers, scales):
            noise = torch.randn(center.shape, generator=generator, dtype=center.dtype, device=device)
            noise.mul_(sigma if scale is None else sigma * scale)
            parameter.copy_(center + noise)


def _largest_sigma_within(
    increase: Callable[[float], float], target: float, sigma_init: float, steps: int
) -> float:
    """Bracket by factors of 4 from sigma_init, then bisect in log sigma for ``steps`` steps."""

    def within(sigma: float) -> bool:
        return increase(sigma) <= target  # False for NaN

    if within(sigma_init):
        low, high = sigma_init, None
        for _ in range(_MAX_BRACKET_STEPS):
            candidate = low * _BRACKET_FACTOR
            if not within(candidate):
                high = candidate
                break
            low = candidate
        if high is None:
            warnings.warn(f"sharpness: loss stays within target up to sigma={low:.3g}; reporting that", stacklevel=3)
            return low
    else:
        low, high = None, sigma_init
        for _ in range(_MAX_BRACKET_STEPS):
            candidate = high / _BRACKET_FACTOR
            if within(candidate):
                low = candidate
                break
            high = candidate
        if low is None:
            warnings.warn(f"sharpness: target exceeded even at sigma={high:.3g}; reporting that", stacklevel=3)
            return high
    for _ in range(steps):
        middle = math.sqrt(low * high)
        if within(middle):
            low = middle
        else:
            high = middle
    return math.sqrt(low * high)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eval_copy(model: nn.Module, device: str) -> nn.Module:
    """A deep copy on ``device`` in eval mode; the caller's model is never touched."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model).to(device)
    work.eval()
    return work


def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
