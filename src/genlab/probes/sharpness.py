"""Sharpness of a trained network: the largest Gaussian weight perturbation its training error
tolerates (PAC-Bayes flatness, Dziugaite & Roy 2017 / Neyshabur et al. 2017; magnitude-aware as
in Jiang et al. 2019), found by bracketing then bisection on sigma, every draw seeded; and the
worst-case sharpness (Keskar et al. 2017; Jiang et al. 2019 "sharpness.orig"), the largest loss or
error increase an adversarial perturbation inside a box finds, by projected sign-gradient ascent."""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
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


# --------------------------------------------------------------------------------------------
# Worst-case (adversarial) sharpness: Keskar et al. 2017; Jiang et al. 2019 sharpness.orig / .mag.orig
# --------------------------------------------------------------------------------------------


def worst_case_increase(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radii: list[torch.Tensor],
    *,
    steps: int,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """The largest training cross-entropy found inside the box |delta_i| <= radii_i around theta.

    Projected sign-gradient ascent (an l-infinity PGD): from a uniform random start in the box,
    ``steps`` times delta <- clip(delta + 2.5 r / steps * sign(grad_delta CE), -r, r), the ascent
    Keskar et al. 2017 run with L-BFGS-B and Jiang et al. 2019 with SGD on the loss. ``model``
    must be an eval-mode copy owned by the caller (its parameters are restored on return);
    ``radii`` are aligned with its trainable parameters. Returns (CE at theta, CE at the worst
    delta found, 0-1 error at theta, 0-1 error at that delta); the worst CE is the max over the
    start and every iterate, so more steps never find less.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    centers = [p.detach().clone() for p in parameters]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    deltas = [(torch.rand(c.shape, generator=generator, dtype=c.dtype, device=c.device) * 2 - 1) * r
              for c, r in zip(centers, radii)]
    step_sizes = [2.5 * r / max(steps, 1) for r in radii]

    def evaluate(shift: list[torch.Tensor] | None, grad: bool):
        with torch.no_grad():
            for p, c, d in zip(parameters, centers, shift or [None] * len(centers)):
                p.copy_(c if d is None else c + d)
        with torch.set_grad_enabled(grad):
            out = model(x)
            loss = F.cross_entropy(out.double(), y)
        error = float((out.argmax(dim=1) != y).double().mean())
        return loss, error

    try:
        base_loss, base_error = evaluate(None, grad=False)
        worst_loss, worst_error = -math.inf, base_error
        for step in range(steps + 1):
            loss, error = evaluate(deltas, grad=step < steps)
            value = float(loss.detach())
            if value > worst_loss:
                worst_loss, worst_error = value, error
            if step == steps:
                break
            grads = torch.autograd.grad(loss, parameters)
            with torch.no_grad():
                for d, g, s, r in zip(deltas, grads, step_sizes, radii):
                    d.add_(s * g.sign())
                    torch.maximum(torch.minimum(d, r), -r, out=d)
    finally:
        with torch.no_grad():
            for p, c in zip(parameters, centers):
                p.copy_(c)
    return float(base_loss), worst_loss, base_error, worst_error


def keskar_sharpness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 5e-4, steps: int = 10, seed: int = 0,
    device: str = "cpu",
) -> float:
    """Keskar et al. 2017's sharpness phi(eps) = 100 (max_{delta in C_eps} L(theta + delta) - L(theta))
    / (1 + L(theta)), C_eps the box |delta_i| <= eps (|theta_i| + 1) (their "full space" variant), L the training
    cross-entropy on (x, y); the max by :func:`worst_case_increase` (a lower bound on the true max)."""
    if not eps > 0:
        raise UserError(f"eps: must be > 0, got {eps}")
    work = eval_copy(model, device)
    x, y = x.to(device), y.to(device)
    radii = [eps * (p.detach().abs() + 1.0) for p in work.parameters() if p.requires_grad]
    base, worst, _, _ = worst_case_increase(work, x, y, radii, steps=steps, seed=seed)
    return 100.0 * max(worst - base, 0.0) / (1.0 + base)


def worst_case_alpha(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target_increase: float = 0.1,
    magnitude_aware: bool = False,
    magnitude_eps: float = 1e-3,
    steps: int = 5,
    bisections: int = 4,
    alpha_init: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Largest box radius alpha whose worst perturbation found raises the training 0-1 error by at most
    ``target_increase`` (Jiang et al. 2019, "sharpness.orig": box |delta_i| <= alpha; magnitude-aware
    "sharpness.mag.orig": |delta_i| <= alpha (|theta_i| + eps)). The measure is 1 / alpha^2.

    The worst perturbation is searched by :func:`worst_case_increase` (ascent on the cross-entropy,
    the 0-1 error read at the worst point found); alpha by factors of 4 from ``alpha_init``
    (0.005, magnitude-aware 0.05) until bracketed, then ``bisections`` bisections in log alpha.
    Cost: about (3 + bisections) x (steps + 1) forward/backward passes over x.
    """
    if not target_increase > 0:
        raise UserError(f"target_increase: must be > 0, got {target_increase}")
    if steps < 0 or bisections < 0:
        raise UserError(f"steps and bisections must be >= 0, got {steps} and {bisections}")
    work = eval_copy(model, device)
    x, y = x.to(device), y.to(device)
    centers = [p.detach() for p in work.parameters() if p.requires_grad]
    shapes = [c.abs() + magnitude_eps if magnitude_aware else torch.ones_like(c) for c in centers]

    def increase(alpha: float) -> float:
        _, _, base_error, worst_error = worst_case_increase(work, x, y, [alpha * s for s in shapes], steps=steps,
                                                            seed=seed)
        return worst_error - base_error

    start = alpha_init if alpha_init is not None else (0.05 if magnitude_aware else 0.005)
    return _largest_sigma_within(increase, target_increase, start, bisections)
