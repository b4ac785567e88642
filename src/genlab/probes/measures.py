"""Generalization and complexity measures of a trained classifier, and how well they rank models.

Works on any ``torch.nn.Module`` classifier and a training set ``(x_train, y_train)``. The
measures follow Jiang et al. 2019, "Fantastic Generalization Measures and Where to Find Them"
(ICLR 2020, arXiv:1912.02178), which compared them by Kendall's tau with the generalization gap
over thousands of trained networks; the norm- and margin-based ones come from Neyshabur et al.
2015 ("Norm-based capacity control", path norm) and 2017 ("Exploring generalization in deep
learning"; "A PAC-Bayesian approach to spectrally-normalized margin bounds"), Bartlett et al.
2017, and the sharpness ones from Keskar et al. 2017 and the PAC-Bayes view of Dziugaite & Roy
2017 / Neyshabur et al. 2017. The sharpness search is :mod:`genlab.probes.sharpness`, the
ranking of measures by Kendall's tau :mod:`genlab.probes.ranking` (both importable from here).

Conventions used by every function here:

* "weight layers" are the ``nn.Linear`` and ``nn.Conv*`` modules of the network; the weight of a
  convolution (out_channels, in_channels/groups, *kernel) is reshaped to the matrix
  (out_channels, in_channels/groups * prod(kernel)). The spectral norm of that reshaped kernel is
  what Jiang et al. use; it is NOT the operator norm of the convolution as a linear map of the
  whole feature map (which is larger, up to a factor sqrt(number of kernel positions)).
* "parameters" are the trainable parameters (``requires_grad``), weights and biases of every
  module, including normalization layers; only ``params`` (the count) and the sharpness searches
  use them. The norms (``l2_norm``, ``dist_from_init``, the products, the path norm) are over the
  weight layers' weights only, biases left out, as Jiang et al. define them.
* Nothing is ever done to the caller's model: every function works on a deep copy, in
  ``eval()`` mode (dropout off, batch-norm running statistics used and not updated) and under
  ``torch.no_grad``. All randomness comes from the ``seed`` argument; the global RNG is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UserError
from genlab.probes.ranking import rank_measures
from genlab.probes.sharpness import (
    LossFn,
    eval_copy,
    keskar_sharpness,
    predict,
    sharpness_sigma,
    worst_case_alpha,
)

__all__ = [
    "MARGIN_PERCENTILE", "compute_measures", "frobenius_product", "keskar_sharpness", "margin", "output_margins",
    "path_norm", "rank_measures", "sharpness_sigma", "spectral_product", "weight_matrices", "worst_case_alpha",
    "zero_one_error",
]

"""A loss of (outputs, targets) returning the mean over the examples as a 0-d tensor."""

MARGIN_PERCENTILE = 10.0
"""Jiang et al. take the 10th percentile of the training margins, a robust stand-in for the min."""


# --------------------------------------------------------------------------------------------
# Public building blocks
# --------------------------------------------------------------------------------------------


def zero_one_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of examples whose arg-max output differs from the integer label."""
    return (outputs.argmax(dim=1) != targets).to(torch.float64).mean()


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weight of every ``nn.Linear`` / ``nn.Conv*`` layer as a matrix, in module order.

    A convolution kernel (out, in/groups, *k) becomes the (out, in/groups * prod(k)) matrix used by
    Jiang et al. for the spectral and Frobenius norms of convolutional layers.
    """
    matrices = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            weight = module.weight.detach()
            matrices.append(weight.reshape(weight.shape[0], -1))
    return matrices


def spectral_product(model: nn.Module) -> float:
    """prod_i ||W_i||_2 over the weight layers (largest singular value of each matrix).

    The norm-product term of the spectral bounds of Bartlett et al. 2017 and Neyshabur et al.
    2017 (Jiang et al. 2019, "spec.orig" is its square). NaN when the model has no weight layer.
    """
    norms = spectral_norms(model)
    return math.prod(norms) if norms else math.nan


def spectral_norms(model: nn.Module) -> list[float]:
    """||W_i||_2 (largest singular value, in float64) of every weight matrix, in module order."""
    return [float(torch.linalg.matrix_norm(w.double(), ord=2)) for w in weight_matrices(model)]


def frobenius_product(model: nn.Module) -> float:
    """prod_i ||W_i||_F over the weight layers (Neyshabur et al. 2015; Jiang et al. "prod.of.fro"
    is its square). NaN when the model has no weight layer."""
    matrices = weight_matrices(model)
    if not matrices:
        return math.nan
    return math.prod(float(torch.linalg.matrix_norm(w.double(), ord="fro")) for w in matrices)


def path_norm(model: nn.Module, input_shape: Sequence[int], *, device: str = "cpu", biases: bool = False) -> float:
    """Squared l2 path norm: sum over all paths p of prod_{edges e in p} w_e^2.

    Neyshabur, Tomioka & Srebro 2015 define the l2 path norm phi_2(theta) as the square root of
    the sum, over every path from an input unit to an output unit, of the product of the squared
    weights on the path. This function returns phi_2(theta)^2 (no square root), which is the
    "path.norm" of Jiang et al. 2019 (their eq. for mu_path-norm = sum_i f_{w^2}(1)[i]); it scales
    like the other squared norm products, so ``path_norm / margin^2`` is scale invariant.

    By default the biases are left out (set to zero in the squared network), as Jiang et al.
    define the measures on the weights only: for f(x) = Wx + b the value is sum_ij W_ij^2. With
    ``biases=True`` they count as weights on edges leaving a constant unit of value 1 (paths that
    start at a bias unit are included): sum_ij W_ij^2 + sum_k b_k^2.

    Computed exactly by one forward pass: every parameter is squared (in float64) and the squared
    network is run on an all-ones input; the sum of its outputs is the path sum. This is exact for
    networks built from Linear / Conv layers (any padding, stride, groups) and activations that
    are the identity on nonnegative inputs (ReLU, LeakyReLU), since all pre-activations of the
    squared network are nonnegative. For other layers (pooling, normalization, saturating
    activations) the value is the squared network's output on ones, as in Jiang et al., not an
    exact path sum.
    """
    squared = eval_copy(model, device).to(torch.float64)
    with torch.no_grad():
        for parameter in squared.parameters():
            parameter.pow_(2)
        if not biases:
            for module in squared.modules():
                if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module.bias is not None:
                    module.bias.zero_()
        ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
        return float(squared(ones).sum())


def output_margins(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example output margin f_y(x) - max_{j != y} f_j(x) (negative when misclassified)."""
    true_scores = outputs.gather(1, targets.unsqueeze(1)).squeeze(1)
    others = outputs.scatter(1, targets.unsqueeze(1), float("-inf"))
    return true_scores - others.max(dim=1).values


def margin(outputs: torch.Tensor, targets: torch.Tensor, percentile: float = MARGIN_PERCENTILE) -> float:
    """The ``percentile``-th percentile (default 10, as Jiang et al.) of the output margins.

    Linear interpolation between order statistics (``torch.quantile``'s default).
    """
    margins = output_margins(outputs, targets).to(torch.float64)
    return float(torch.quantile(margins, percentile / 100.0))


# --------------------------------------------------------------------------------------------
# compute_measures
# --------------------------------------------------------------------------------------------


def compute_measures(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    init_model: nn.Module | None = None,
    seed: int = 0,
    device: str = "cpu",
    sharpness: bool = True,
    sharpness_criterion: Literal["error", "loss"] = "error",
    sharpness_target: float = 0.1,
    sharpness_points: int | None = 1000,
    sharpness_draws: int = 4,
    sharpness_steps: int = 6,
    magnitude_eps: float = 1e-3,
    batch_size: int = 1024,
    worst_case: bool = True,
    worst_case_points: int | None = 250,
    worst_case_steps: int = 5,
    worst_case_bisections: int = 4,
    keskar_eps: float = 5e-4,
    keskar_steps: int = 10,
    keskar_points: int | None = None,
) -> dict[str, float]:
    """Complexity / generalization measures of a trained classifier on its training set.

    ``data = (x_train, y_train)`` with integer class labels; the model maps x to logits (n, C).
    ``init_model`` is the same architecture at initialization (for ``dist_from_init`` and
    ``spectral_init``). W_i are the d weight-layer matrices (see module docstring; biases are
    not part of any norm), W_i^0 their initial values, gamma the margin. Names in quotes are
    Jiang et al. 2019's (their measures are logs of these, with constant terms; Kendall's tau is
    unchanged by the log). Keys of the result (NaN where a measure is undefined):

    * ``train_loss``: mean cross-entropy on the training set; ``train_acc``: its accuracy.
    * ``params``: number of trainable parameters, biases included ("params").
    * ``l2_norm``: sqrt(sum_i ||W_i||_F^2), weights only ("l2" is its square).
    * ``dist_from_init``: sqrt(sum_i ||W_i - W_i^0||_F^2) ("dist.l2"; Nagarajan & Kolter 2019);
      NaN without ``init_model``.
    * ``spectral_product``: prod_i ||W_i||_2 (Bartlett et al. 2017; "prod.of.spec" is its
      square; convolutions use the reshaped kernel matrix, not the convolution operator norm).
    * ``frobenius_product``: prod_i ||W_i||_F (Neyshabur et al. 2015; "prod.of.fro" is its square).
    * ``path_norm``: sum over input->output paths of prod w_e^2 (biases left out), the squared
      l2 path norm of Neyshabur et al. 2015 = "path.norm"; see ``path_norm``.
    * ``margin``: gamma = 10th percentile over training points of f_y(x) - max_{j!=y} f_j(x)
      (Jiang et al. sec. 7). Margin-normalized measures are NaN when gamma <= 0 (fewer than ~90%
      of training points correctly classified).
    * ``spectral_over_margin``: prod_i ||W_i||_2^2 / gamma^2 ("prod.of.spec/margin"; the SQUARED
      product, so it is invariant to rescaling the layers of a ReLU net).
    * ``spectral_orig``: prod_i ||W_i||_2^2 * sum_i ||W_i||_F^2 / ||W_i||_2^2 / gamma^2 ("spec.orig",
      the bound of Bartlett et al. 2017 / Neyshabur et al. 2018: the product times the summed
      stable ranks).
    * ``spectral_init``: prod_i ||W_i||_2^2 * sum_i ||W_i - W_i^0||_F^2 / ||W_i||_2^2 / gamma^2
      ("spec.init"); NaN without ``init_model``.
    * ``sum_of_spectral_over_margin``: d * (prod_i ||W_i||_2^2 / gamma^2)^(1/d) ("sum.of.spec/margin").
    * ``frobenius_over_margin``: prod_i ||W_i||_F^2 / gamma^2 ("prod.of.fro/margin").
    * ``sum_of_frobenius_over_margin``: d * (prod_i ||W_i||_F^2 / gamma^2)^(1/d) ("sum.of.fro/margin").
    * ``path_norm_over_margin``: path_norm / gamma^2 ("path.norm/margin").
    * ``pacbayes_sharpness``: 1 / sigma^2, sigma the largest isotropic Gaussian noise std on all
      parameters whose mean training-criterion increase is <= ``sharpness_target``
      ("pacbayes.flatness"; search in ``sharpness_sigma``).
    * ``magnitude_aware_sharpness``: 1 / sigma'^2, the same with noise std
      sigma' * (|theta_i| + ``magnitude_eps``) ("pacbayes.mag.flatness").
    * ``worst_case_sharpness``: 1 / alpha^2, alpha the largest box radius |delta_i| <= alpha whose
      worst perturbation found (ascent on the cross-entropy) raises the training 0-1 error by at
      most ``sharpness_target`` ("sharpness.flatness" / sharpness.orig); ``worst_case_mag_sharpness``
      the same in the box |delta_i| <= alpha (|theta_i| + ``magnitude_eps``) ("sharpness.mag.flatness");
      ``worst_case_alpha``, ``worst_case_mag_alpha`` the radii (see ``worst_case_alpha``).
    * ``keskar_sharpness``: Keskar et al. 2017's phi(eps) = 100 (max L(theta + delta) - L(theta)) /
      (1 + L(theta)) over the box |delta_i| <= eps (|theta_i| + 1), L the training cross-entropy,
      eps = ``keskar_eps`` (see ``keskar_sharpness``).
    * ``sharpness_sigma``, ``magnitude_aware_sigma``: the two Gaussian sigmas themselves.

    Sharpness criterion of the Gaussian searches: ``"error"`` (default, as Jiang et al.: training
    0-1 error may rise by ``sharpness_target`` = 0.1) or ``"loss"`` (cross-entropy may rise by it).
    For speed the searches run on fixed random subsamples of the training points (seeded by
    ``seed``; ``None`` = all points): ``sharpness_points`` for the Gaussian ones (with
    ``sharpness_draws`` noise draws and ``sharpness_steps`` bisection steps), ``worst_case_points``
    for the worst-case ones (``worst_case_steps`` ascent steps, ``worst_case_bisections``
    bisections), ``keskar_points`` for Keskar's (``keskar_steps`` ascent steps); all other measures
    use the full training set. ``sharpness=False`` skips every search, ``worst_case=False`` the
    worst-case and Keskar ones (their keys are then NaN).
    """
    x, y = _check_data(data)
    work = eval_copy(model, device)
    x, y = x.to(device), y.to(device)
    outputs = predict(work, x, batch_size)
    _check_outputs(outputs, y)

    measures: dict[str, float] = {
        "train_loss": float(F.cross_entropy(outputs.double(), y)),
        "train_acc": 1.0 - float(zero_one_error(outputs, y)),
    }
    spectral = spectral_norms(work)
    measures.update(_norm_measures(work, init_model, spectral))
    measures["path_norm"] = (
        path_norm(work, x.shape[1:], device=device) if x.is_floating_point() else math.nan
    )
    measures["margin"] = margin(outputs, y)
    measures.update(_margin_normalized(measures, work, init_model, spectral))
    measures.update(
        _sharpness_measures(
            work, x, y,
            enabled=sharpness, criterion=sharpness_criterion, target=sharpness_target,
            points=sharpness_points, draws=sharpness_draws, steps=sharpness_steps,
            magnitude_eps=magnitude_eps, seed=seed, device=device, batch_size=batch_size,
        )
    )
    wanted = sharpness and worst_case
    measures.update(_worst_case_measures(
        work, x, y, enabled=wanted, target=sharpness_target, points=worst_case_points, steps=worst_case_steps,
        bisections=worst_case_bisections, magnitude_eps=magnitude_eps, keskar_eps=keskar_eps,
        keskar_steps=keskar_steps, keskar_points=keskar_points, seed=seed, device=device))
    return measures


def _norm_measures(work: nn.Module, init_model: nn.Module | None, spectral: list[float]) -> dict[str, float]:
    """The weights-only norms; ``spectral`` holds ||W_i||_2 of every weight matrix (one SVD each,
    shared with the margin-normalized measures)."""
    trainable = [p for p in work.parameters() if p.requires_grad]
    weights = weight_matrices(work)
    return {
        "params": float(sum(p.numel() for p in trainable)),
        "l2_norm": math.sqrt(sum(float(w.double().pow(2).sum()) for w in weights)),
        "dist_from_init": _distance_from_init(weights, init_model),
        "spectral_product": math.prod(spectral) if spectral else math.nan,
        "frobenius_product": frobenius_product(work),
    }


def _initial_weights(weights: list[torch.Tensor], init_model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of ``init_model``, checked against the trained ones layer by layer."""
    initial = weight_matrices(init_model)
    if len(initial) != len(weights):
        raise UserError(f"init_model: has {len(initial)} weight layers, model has {len(weights)}; it must be the "
                        "same architecture")
    for i, (start, value) in enumerate(zip(initial, weights)):
        if start.shape != value.shape:
            raise UserError(f"init_model: weight layer {i} has shape {tuple(start.shape)}, model has "
                            f"{tuple(value.shape)}")
    return [w.to(v.device) for w, v in zip(initial, weights)]


def _distance_from_init(weights: list[torch.Tensor], init_model: nn.Module | None) -> float:
    """sqrt(sum_i ||W_i - W_i^0||_F^2) over the weight layers, in module order."""
    if init_model is None:
        return math.nan
    initial = _initial_weights(weights, init_model)
    return math.sqrt(sum(float((w.double() - w0.double()).pow(2).sum()) for w, w0 in zip(weights, initial)))


def _margin_normalized(measures: dict[str, float], work: nn.Module, init_model: nn.Module | None,
                       spectral_norm: list[float]) -> dict[str, float]:
    weights = weight_matrices(work)
    depth = len(weights)
    gamma_sq = measures["margin"] ** 2 if measures["margin"] > 0 else math.nan
    spectral = measures["spectral_product"] ** 2 / gamma_sq
    frobenius = measures["frobenius_product"] ** 2 / gamma_sq
    spec_sq = [s ** 2 for s in spectral_norm]
    stable_ranks = sum(float(w.double().pow(2).sum()) / s for w, s in zip(weights, spec_sq)) if depth else math.nan
    if init_model is None or not depth:
        moved = math.nan
    else:
        initial = _initial_weights(weights, init_model)
        moved = sum(float((w.double() - w0.double()).pow(2).sum()) / s for w, w0, s in zip(weights, initial, spec_sq))
    return {
        "spectral_over_margin": spectral,
        "spectral_orig": spectral * stable_ranks,
        "spectral_init": spectral * moved,
        "sum_of_spectral_over_margin": _sum_form(spectral, depth),
        "frobenius_over_margin": frobenius,
        "sum_of_frobenius_over_margin": _sum_form(frobenius, depth),
        "path_norm_over_margin": measures["path_norm"] / gamma_sq,
    }


def _sum_form(product_over_margin: float, depth: int) -> float:
    """d * P^(1/d): the arithmetic-mean form of a d-factor product (AM-GM), Jiang et al."""
    if depth == 0 or math.isnan(product_over_margin):
        return math.nan
    return depth * product_over_margin ** (1.0 / depth)


def _sharpness_measures(
    work: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    enabled: bool,
    criterion: str,
    target: float,
    points: int | None,
    draws: int,
    steps: int,
    magnitude_eps: float,
    seed: int,
    device: str,
    batch_size: int,
) -> dict[str, float]:
    if not enabled:
        keys = ["pacbayes_sharpness", "magnitude_aware_sharpness", "sharpness_sigma", "magnitude_aware_sigma"]
        return dict.fromkeys(keys, math.nan)
    loss_fn = _criterion(criterion)
    x_sub, y_sub = _subsample(x, y, points, seed)
    common = dict(
        target_increase=target, magnitude_eps=magnitude_eps, draws=draws, steps=steps,
        seed=seed, device=device, batch_size=batch_size,
    )
    sigma = sharpness_sigma(work, x_sub, y_sub, loss_fn, magnitude_aware=False, sigma_init=0.05, **common)
    sigma_mag = sharpness_sigma(work, x_sub, y_sub, loss_fn, magnitude_aware=True, sigma_init=0.5, **common)
    return {
        "pacbayes_sharpness": 1.0 / sigma**2,
        "magnitude_aware_sharpness": 1.0 / sigma_mag**2,
        "sharpness_sigma": sigma,
        "magnitude_aware_sigma": sigma_mag,
    }


WORST_CASE_KEYS = ("worst_case_sharpness", "worst_case_mag_sharpness", "worst_case_alpha", "worst_case_mag_alpha",
                   "keskar_sharpness")


def _worst_case_measures(
    work: nn.Module, x: torch.Tensor, y: torch.Tensor, *, enabled: bool, target: float, points: int | None,
    steps: int, bisections: int, magnitude_eps: float, keskar_eps: float, keskar_steps: int,
    keskar_points: int | None, seed: int, device: str,
) -> dict[str, float]:
    if not enabled:
        return dict.fromkeys(WORST_CASE_KEYS, math.nan)
    x_sub, y_sub = _subsample(x, y, points, seed)
    common = dict(target_increase=target, magnitude_eps=magnitude_eps, steps=steps, bisections=bisections,
                  seed=seed, device=device)
    alpha = worst_case_alpha(work, x_sub, y_sub, magnitude_aware=False, **common)
    alpha_mag = worst_case_alpha(work, x_sub, y_sub, magnitude_aware=True, **common)
    x_k, y_k = _subsample(x, y, keskar_points, seed)
    return {
        "worst_case_sharpness": 1.0 / alpha**2,
        "worst_case_mag_sharpness": 1.0 / alpha_mag**2,
        "worst_case_alpha": alpha,
        "worst_case_mag_alpha": alpha_mag,
        "keskar_sharpness": keskar_sharpness(work, x_k, y_k, eps=keskar_eps, steps=keskar_steps, seed=seed,
                                             device=device),
    }


def _criterion(name: str) -> LossFn:
    if name == "error":
        return zero_one_error
    if name == "loss":
        return lambda outputs, targets: F.cross_entropy(outputs.double(), targets)
    raise UserError(f"sharpness_criterion: must be 'error' or 'loss', got {name!r}")


def _subsample(
    x: torch.Tensor, y: torch.Tensor, points: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if points is None or points >= len(x):
        return x, y
    if points < 1:
        raise UserError(f"sharpness_points: must be >= 1 or None, got {points}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=points, replace=False))
    index = torch.as_tensor(chosen, device=x.device)
    return x[index], y[index]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_data(data: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise UserError(f"data: expected a tuple (x_train, y_train) of tensors, got {type(data).__name__}")
    x, y = data
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise UserError("data: x_train and y_train must both be torch tensors")
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UserError(f"data: y_train must be a 1-D tensor of integer class labels, got dtype {y.dtype} shape "
                        f"{tuple(y.shape)}")
    if len(x) != len(y) or len(y) == 0:
        raise UserError(f"data: x_train has {len(x)} rows and y_train {len(y)}; need the same number, > 0")
    if int(y.min()) < 0:
        raise UserError(f"data: y_train has a negative label {int(y.min())}")
    return x, y


def _check_outputs(outputs: object, y: torch.Tensor) -> None:
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[1] < 2:
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise UserError(f"model: must return logits of shape (n, classes >= 2), got {shape}")
    if int(y.max()) >= outputs.shape[1]:
        raise UserError(f"data: y_train has label {int(y.max())} but the model outputs {outputs.shape[1]} classes")


