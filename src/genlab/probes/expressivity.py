"""Finite-sample expressivity: a 2n+d ReLU network that fits any n distinct points exactly.

Zhang, Bengio, Hardt, Recht & Vinyals (2017), "Understanding deep learning requires rethinking
generalization", Theorem 1: there is a two-layer ReLU network with 2n + d weights that
represents any function on a sample of n distinct points in R^d. The construction (its linear
algebra is :mod:`genlab.probes.ramp_system`):

1. choose one direction w in R^d shared by all n hidden units, such that the projections
   a_i = <x_i, w> are pairwise distinct, and sort the points so that a_1 < a_2 < ... < a_n;
2. interleave the biases, b_1 < a_1 < b_2 < a_2 < ... < b_n < a_n;
3. the network f(x) = sum_j v_j relu(<w, x> - b_j) then has f(x_i) = (M v)_i with
   M_ij = relu(a_i - b_j), which is lower triangular (a_i <= b_j whenever j > i) with positive
   diagonal M_ii = a_i - b_i, so M v = y has exactly one solution, found by forward substitution.

Here each bias sits a fixed fraction theta of the way up its gap,
b_j = a_{j-1} + theta (a_j - a_{j-1}) (theta = 0.1 by default; b_1 = a_1 - (1 - theta)(a_2 - a_1)).
Midpoints (theta = 1/2) are the obvious choice but a poor one. With q_j = a_j - b_j, the slope of f
on the piece [b_j, b_{j+1}] obeys s_j = (y_j - y_{j-1}) / q_j - r s_{j-1}, r = theta / (1 - theta):
at theta = 1/2 every earlier slope is carried forward with alternating sign (a random walk over
the n points) and the output weights v_j = s_j - s_{j-1} grow with it; at theta = 0.1 earlier slopes
are damped by 1/9 per point and f stays close to the piecewise-linear interpolant. Measured on
20,000 Gaussian points in R^40 with one-hot random labels: sum |v| is ~4000x smaller and the
residual ~150x smaller (1.4e-7 instead of 2.3e-5) than with midpoints.

The same recurrence solves M v = y: the slopes s_j are the solution of a unit lower bidiagonal
system, and v_j = s_j - s_{j-1}, so the solve costs O(n) per output instead of O(n^2), and no n x n
matrix is ever formed.

Example
-------
>>> import numpy as np
>>> X = np.array([[0.2, 0.3, 0.6], [0.5, 0.7, 0.1], [0.3, 0.4, 1.0], [0.3, 0.3, 0.3]])
>>> net = interpolating_network(X, np.array([1.0, 1.0, 0.0, 1.0]), w=np.ones(3))
>>> net.report.params, net.report.max_residual < 1e-12
(11, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from genlab.errors import UserError
from genlab.probes.ramp_system import (
    check_bias_fraction,
    interleaved_biases,
    ramp_condition_number,
    ramp_matrix,
    solve_ramp_system,
)

__all__ = [
    "ConstructionReport",
    "InterpolatingNetwork",
    "interpolating_network",
    "interleaved_biases",
    "ramp_matrix",
    "solve_ramp_system",
    "ramp_condition_number",
    "construction_toy_data",
    "ramp_components",
]

_EPS = float(np.finfo(np.float64).eps)
_MAX_PAIRS_IN_MESSAGE = 5
_CHUNK_ELEMENTS = 1 << 20  # hidden activations held at once in forward(): 1M float64 = 8 MB


@dataclass(frozen=True)
class ConstructionReport:
    """What the construction did and how exact the result is.

    n: hidden units (= distinct training points after merging duplicates).
    d: input dimension.  k: outputs (1 when y is a vector).
    params: free numbers of the network, n*k + n + d (2n + d for a vector y).
    min_gap: smallest gap between consecutive sorted projections <x_i, w>, in the units of the
        chosen w (random directions are unit vectors; a user's w is used as given); inf if n = 1.
    max_residual: max_i |f(x_i) - y_i| over all training points (merged duplicates included),
        from a real float64 forward pass of the network, not from the solver's algebra.
    relative_residual: max_residual / max_i |y_i| (0 when y is identically zero).
    condition_estimate: the infinity-norm condition number ||M||_inf ||M^-1||_inf of the
        triangular system, computed exactly in O(n) from the structure of M^-1 (see
        `ramp_condition_number`); a worst case: float64 may lose log10 of it in digits, and
        typically loses far fewer.
    diagonal_ratio: max_i M_ii / min_i M_ii, the classical lower bound on the triangular
        condition number (here the ratio of the largest to the smallest gap).
    seconds: wall time of the whole construction, including the residual check.
    build_seconds: wall time of the construction proper (direction search, sort, biases and
        the O(n) solve), without the O(n^2) residual check.
    merged: duplicate points merged into one hidden unit (0 unless merge_duplicates=True).
    w_tries: random directions tried (1 when the user passes w).
    """

    n: int
    d: int
    k: int
    params: int
    min_gap: float
    max_residual: float
    relative_residual: float
    condition_estimate: float
    diagonal_ratio: float
    seconds: float
    build_seconds: float
    merged: int
    w_tries: int


class InterpolatingNetwork(nn.Module):
    """f(x) = sum_j v_j relu(<w, x> - b_j): n hidden ReLU units sharing one weight vector w.

    Parameters (float64): `w` [d], `b` [n] (ascending), `v` [n] or [n, k]; their total size is
    the n*k + n + d of Zhang et al. (2017), Theorem 1. `report` holds the ConstructionReport
    when the network was built by `interpolating_network`. `input_dtype` is the precision of the
    points it was built on: inputs of a coarser dtype are refused (rounding the training points
    moves their projections across the biases, and the fit is lost: relative error ~1e-2 at
    n = 3000, d = 40).
    """

    def __init__(
        self,
        w: torch.Tensor,
        b: torch.Tensor,
        v: torch.Tensor,
        report: ConstructionReport | None = None,
        input_dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if w.ndim != 1 or b.ndim != 1 or v.ndim not in (1, 2) or v.shape[0] != b.shape[0]:
            raise UserError(
                f"InterpolatingNetwork needs w [d], b [n], v [n] or [n, k]; got shapes "
                f"{tuple(w.shape)}, {tuple(b.shape)}, {tuple(v.shape)}"
            )
        self.w = nn.Parameter(w.detach().to(torch.float64).clone())
        self.b = nn.Parameter(b.detach().to(torch.float64).clone())
        self.v = nn.Parameter(v.detach().to(torch.float64).clone())
        self.report = report
        self.input_dtype = input_dtype

    @property
    def input_dim(self) -> int:
        return int(self.w.shape[0])

    @property
    def hidden_units(self) -> int:
        return int(self.b.shape[0])

    @property
    def output_dim(self) -> int:
        """k; 1 for a vector-valued network (whose forward returns shape [batch])."""
        return 1 if self.v.ndim == 1 else int(self.v.shape[1])

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """<x_i, w> in float64 for a batch x [batch, d]."""
        return self._float64_batch(x) @ self.w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [batch] (vector y) or [batch, k] for inputs [batch, d] of the dtype the network was
        built on or a finer one (a coarser dtype is refused with a UserError).

        Computed in float64 and returned in the dtype of a floating-point x (float64 otherwise).
        Ramps that are exactly zero (b_j >= <w, x>) are skipped, and the batch is processed in
        chunks so memory stays bounded for large n.
        """
        x = torch.as_tensor(x)
        out = self.ramp_sum(self.project(x))
        return out.to(x.dtype) if torch.is_floating_point(x) else out

    def ramp_sum(self, projections: torch.Tensor) -> torch.Tensor:
        """sum_j v_j relu(a - b_j) for every projection a in a 1-D float64 tensor."""
        order = torch.argsort(projections)
        a_sorted = projections[order]
        b = self.b
        b_is_sorted = bool(torch.all(b[1:] >= b[:-1])) if b.numel() > 1 else True
        rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, b.numel()))
        pieces = []
        for start in range(0, a_sorted.numel(), rows_per_chunk):
            a_chunk = a_sorted[start : start + rows_per_chunk]
            active = b.numel()
            if b_is_sorted:
                active = int(torch.searchsorted(b.detach(), a_chunk[-1].detach(), right=False))
            hidden = torch.relu_(a_chunk[:, None] - b[None, :active])
            pieces.append(hidden @ self.v[:active])
        out_sorted = torch.cat(pieces) if pieces else self.v.new_zeros((0, *self.v.shape[1:]))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return out_sorted[inverse]

    def as_mlp(self, dtype: torch.dtype = torch.float64) -> nn.Sequential:
        """The same function as a standard Sequential(Linear(d, n), ReLU(), Linear(n, k)).

        Every row of the hidden weight equals w, the hidden bias is -b, the output weight is
        v transposed and the output bias zero. For a vector y the output has shape [batch, 1].
        Keep the default float64: the output weights of an exact interpolant are large and of
        alternating sign, so float32 evaluation can lose the fit when gaps are small.
        """
        n, d, k = self.hidden_units, self.input_dim, self.output_dim
        device = self.w.device
        hidden = nn.utils.skip_init(nn.Linear, d, n, device=device, dtype=dtype)
        output = nn.utils.skip_init(nn.Linear, n, k, device=device, dtype=dtype)
        with torch.no_grad():
            hidden.weight.copy_(self.w.detach().expand(n, d))
            hidden.bias.copy_(-self.b.detach())
            output.weight.copy_(self.v.detach().reshape(n, k).T)
            output.bias.zero_()
        return nn.Sequential(hidden, nn.ReLU(), output)

    def _float64_batch(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise UserError(
                f"input x must have shape [batch, {self.input_dim}], got {tuple(x.shape)}"
            )
        if torch.is_floating_point(x) and torch.finfo(x.dtype).eps > torch.finfo(self.input_dtype).eps:
            raise UserError(
                f"input x is {x.dtype} but the network was built on {self.input_dtype} points: rounding "
                f"them loses the exact fit; pass x.to(torch.{str(self.input_dtype).split('.')[-1]})"
            )
        return x.to(device=self.w.device, dtype=torch.float64)


def interpolating_network(
    X: Any,
    y: Any,
    *,
    w: Any = None,
    seed: int = 0,
    tries: int = 8,
    merge_duplicates: bool = False,
    bias_fraction: float = 0.1,
    device: str | torch.device = "cpu",
) -> InterpolatingNetwork:
    """Build the 2n+d ReLU network of Zhang et al. (2017, Thm. 1) with f(x_i) = y_i exactly.

    X: [n, d] inputs (numpy or torch); y: [n] or [n, k] targets (e.g. one-hot labels).
    w: the shared direction [d]; by default `tries` unit Gaussian directions are drawn from
        numpy.random.default_rng(seed) and the one with the largest minimum gap between sorted
        projections is kept (that gap governs the conditioning).
    merge_duplicates: identical inputs with identical targets become one hidden unit; identical
        inputs with different targets cannot be interpolated by any function and are refused.
    bias_fraction: where each bias sits in the gap below its projection (0.5 = midpoints; the
        default 0.1 is far better conditioned, see the module docstring).
    device: where the network's parameters live.
    Raises UserError naming the indices of duplicate points, or of points whose projections
    coincide (within float64 rounding of the dot product) for every direction tried.
    """
    started = time.perf_counter()
    input_dtype = _float_dtype(X)
    X_all, Y_all, vector_output = _validated_data(X, y)
    n_all, d = X_all.shape
    _check_options(tries, seed)
    check_bias_fraction(bias_fraction)
    keep = _unique_point_indices(X_all, Y_all, merge_duplicates)
    X_used, Y_used = (X_all, Y_all) if len(keep) == n_all else (X_all[keep], Y_all[keep])
    direction, w_tries = _choose_direction(X_used, keep, w, seed, tries)
    w_tensor = torch.from_numpy(direction).to(device)

    a = (torch.from_numpy(X_used).to(device) @ w_tensor).cpu().numpy()
    order = np.argsort(a, kind="stable")
    a_sorted = a[order]
    b = interleaved_biases(a_sorted, bias_fraction)
    v = solve_ramp_system(a_sorted, b, Y_used[order])
    if vector_output:
        v = v[:, 0]
    net = InterpolatingNetwork(w_tensor, torch.from_numpy(b), torch.from_numpy(v), input_dtype=input_dtype).to(device)

    build_seconds = time.perf_counter() - started
    max_residual, relative_residual = _training_residual(net, X_all, Y_all, device)
    k = Y_all.shape[1]
    n = len(keep)
    net.report = ConstructionReport(
        n=n,
        d=d,
        k=k,
        params=n * k + n + d,
        min_gap=float(np.min(np.diff(a_sorted))) if n > 1 else math.inf,
        max_residual=max_residual,
        relative_residual=relative_residual,
        condition_estimate=ramp_condition_number(a_sorted, b),
        diagonal_ratio=float(np.max(a_sorted - b) / np.min(a_sorted - b)),
        seconds=time.perf_counter() - started,
        build_seconds=build_seconds,
        merged=n_all - n,
        w_tries=w_tries,
    )
    return net


def construction_toy_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D toy set for a figure of the construction: X [n, 1] distinct in [-1, 1], y [n].

    x_i sits at a random place in the middle 80% of the i-th of n equal cells (so points are
    distinct and at least 0.4/n apart); y_i = sin(pi x_i) plus N(0, 0.3^2) noise, so the
    interpolant visibly has to bend at every point.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"construction_toy_data: n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    cell = 2.0 / n
    x = -1.0 + cell * (np.arange(n) + 0.1 + 0.8 * rng.random(n))
    y = np.sin(np.pi * x) + 0.3 * rng.standard_normal(n)
    return x[:, None], y


def ramp_components(net: InterpolatingNetwork, x_grid: Any) -> np.ndarray:
    """The individual ramps v_j relu(<w, x> - b_j) on a grid, in hidden-unit (ascending b) order.

    x_grid: [G] (only for d = 1) or [G, d]. Returns [G, n] for a vector-valued network and
    [G, n, k] otherwise; summing over axis 1 gives the network's output.
    """
    grid = torch.as_tensor(np.asarray(x_grid, dtype=np.float64))
    if grid.ndim == 1 and net.input_dim == 1:
        grid = grid[:, None]
    with torch.no_grad():
        a = net.project(grid)
        hidden = torch.clamp_min(a[:, None] - net.b[None, :], 0.0)
        v = net.v if net.v.ndim == 1 else net.v[None, :, :]
        ramps = hidden * v if net.v.ndim == 1 else hidden[:, :, None] * v
    return ramps.cpu().numpy()


# --- validation -------------------------------------------------------------------------------


def _float_dtype(value: Any) -> torch.dtype:
    """The torch floating dtype of ``value`` (numpy or torch), float64 for anything else (ints, lists)."""
    if isinstance(value, torch.Tensor):
        return value.dtype if torch.is_floating_point(value) else torch.float64
    dtype = getattr(value, "dtype", None)
    if dtype is not None and np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize < 8:
        return {2: torch.float16, 4: torch.float32}[np.dtype(dtype).itemsize]
    return torch.float64


def _as_float64(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UserError(f"{name} must be a real numeric array: {error}") from None
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[:_MAX_PAIRS_IN_MESSAGE].tolist()
        raise UserError(f"{name} contains NaN or infinite values at {bad}")
    return array


def _validated_data(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    X_array = _as_float64(X, "X")
    y_array = _as_float64(y, "y")
    if X_array.ndim != 2 or X_array.shape[0] == 0 or X_array.shape[1] == 0:
        raise UserError(f"X must have shape [n, d] with n, d >= 1, got {X_array.shape}")
    if y_array.ndim not in (1, 2) or y_array.shape[0] != X_array.shape[0]:
        raise UserError(
            f"y must have shape [n] or [n, k] with n = {X_array.shape[0]} (rows of X), "
            f"got {y_array.shape}"
        )
    if y_array.ndim == 2 and y_array.shape[1] == 0:
        raise UserError("y has zero columns (k = 0)")
    vector_output = y_array.ndim == 1
    return X_array, y_array.reshape(len(y_array), -1), vector_output


def _check_options(tries: int, seed: int) -> None:
    if isinstance(tries, bool) or not isinstance(tries, (int, np.integer)) or tries < 1:
        raise UserError(f"tries must be a positive integer, got {tries!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")


def _validated_direction(w: Any, d: int) -> np.ndarray:
    direction = _as_float64(w, "w")
    if direction.shape != (d,):
        raise UserError(f"w must have shape [{d}] (the input dimension), got {direction.shape}")
    if not np.any(direction):
        raise UserError("w is the zero vector; it cannot separate any points")
    return direction


# --- duplicates -------------------------------------------------------------------------------


_HASH_ROWS = 256  # rows hashed at a time, in one reused buffer (2.2x faster than 4096 rows at d = 784)


def _first_equal_point(X: np.ndarray) -> np.ndarray:
    """For each point (row of the float64 ``X``), the index of the first point equal to it, itself
    when none is. Rows are keyed by an exact hash, a wrapping integer sum of their 64-bit words
    times fixed odd multipliers (with -0.0 read as 0.0, as ``==`` compares), and only rows whose
    keys agree are compared: O(n d). Sorting the rows lexicographically (``np.unique(axis=0)``)
    took ~80% of the whole construction at d = 784 (185 of 237 ms for 4,000 MNIST digits)."""
    n, d = X.shape
    multipliers = np.random.default_rng(0x5EED).integers(0, 2 ** 63, size=d, dtype=np.uint64) * 2 + 1
    keys = np.empty(n, dtype=np.uint64)
    words = np.empty((min(n, _HASH_ROWS), d), dtype=np.uint64)
    for start in range(0, n, _HASH_ROWS):
        block = words[:len(X[start:start + _HASH_ROWS])]
        np.add(X[start:start + _HASH_ROWS], 0.0, out=block.view(np.float64))
        np.multiply(block, multipliers, out=block)
        keys[start:start + _HASH_ROWS] = block.sum(axis=1, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    representative = np.arange(n)
    sizes = np.diff(np.r_[starts, n])
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        remaining = list(order[start:start + size])  # increasing indices (a stable sort)
        while remaining:
            head = remaining[0]
            equal = [j for j in remaining if np.array_equal(X[j], X[head])]
            representative[equal] = head
            remaining = [j for j in remaining if representative[j] != head]
    return representative


def _unique_point_indices(X: np.ndarray, Y: np.ndarray, merge: bool) -> np.ndarray:
    """Indices of the points that get a hidden unit: all, or the first of each duplicate group."""
    representative = _first_equal_point(X)
    first = np.flatnonzero(representative == np.arange(len(X)))
    if len(first) == len(X):
        return first
    duplicate = np.flatnonzero(representative != np.arange(len(X)))
    pairs = [(int(representative[i]), int(i)) for i in duplicate]
    conflicting = [(i, j) for i, j in pairs if not np.array_equal(Y[i], Y[j])]
    if conflicting:
        raise UserError(
            f"{len(conflicting)} pair(s) of identical inputs have different targets, which no "
            f"function can fit, e.g. indices {_format_pairs(conflicting)}"
        )
    if not merge:
        raise UserError(
            f"{len(pairs)} input(s) duplicate an earlier one, e.g. indices {_format_pairs(pairs)}; "
            "their targets agree, so merge_duplicates=True would merge them"
        )
    return np.sort(first)


def _format_pairs(pairs: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"({i}, {j})" for i, j in pairs[:_MAX_PAIRS_IN_MESSAGE])
    return shown + (" ..." if len(pairs) > _MAX_PAIRS_IN_MESSAGE else "")


# --- choosing w -------------------------------------------------------------------------------


def _row_norms(X: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row, in one pass over X and no n x d temporary."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def _coincident_pairs(
    X: np.ndarray, w: np.ndarray, original: np.ndarray, a: np.ndarray, row_norms: np.ndarray
) -> tuple[set[tuple[int, int]], float]:
    """Pairs (original indices) whose projections a = X w are not separated beyond rounding, and
    the smallest gap between the sorted projections.

    A dot product of d terms is accurate to about d * eps * sum_k |x_k w_k|; neighbours in the
    sorted order closer than 4x that bound are treated as coinciding, and every pair inside a run
    of such neighbours is returned. The bound is first replaced by the larger d * eps * |x| |w|
    (Cauchy-Schwarz), known from ``row_norms`` without another pass over X; only when some gap is
    within that is the exact bound computed.
    """
    if len(a) < 2:
        return set(), math.inf
    order = np.argsort(a, kind="stable")
    gaps = np.diff(a[order])
    smallest_gap = float(np.min(gaps))

    def close_to_neighbour(tolerance: np.ndarray) -> np.ndarray:
        return gaps <= np.maximum(tolerance[order][:-1], tolerance[order][1:])

    scale = 4.0 * X.shape[1] * _EPS
    if not np.any(close_to_neighbour(scale * float(np.linalg.norm(w)) * row_norms)):
        return set(), smallest_gap
    close = close_to_neighbour(scale * (np.abs(X) @ np.abs(w)))
    if not np.any(close):
        return set(), smallest_gap
    pairs: set[tuple[int, int]] = set()
    run_start = 0
    for position in range(len(gaps) + 1):
        if position < len(gaps) and close[position]:
            continue
        members = sorted(int(original[order[m]]) for m in range(run_start, position + 1))
        pairs.update((i, j) for ii, i in enumerate(members) for j in members[ii + 1 :])
        run_start = position + 1
    return pairs, smallest_gap


def _choose_direction(
    X: np.ndarray, original: np.ndarray, w: Any, seed: int, tries: int
) -> tuple[np.ndarray, int]:
    """The user's w (checked to separate the points) or the best of `tries` random ones."""
    if w is None:
        return _best_random_direction(X, original, seed, tries), tries
    direction = _validated_direction(w, X.shape[1])
    pairs, _ = _coincident_pairs(X, direction, original, X @ direction, _row_norms(X))
    _refuse_unseparated([pairs], user_w=True)
    return direction, 1


def _best_random_direction(
    X: np.ndarray, original: np.ndarray, seed: int, tries: int
) -> np.ndarray:
    """Of `tries` unit Gaussian directions, the separating one with the largest minimum gap.
    All tries are projected in one product X [w_1 ... w_tries], one pass over X."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((tries, X.shape[1]))
    for direction in directions:
        direction /= np.linalg.norm(direction)
    projections = X @ directions.T
    row_norms = _row_norms(X)
    best, best_gap = None, -math.inf
    failures = []
    for column, direction in enumerate(directions):
        coincident, gap = _coincident_pairs(X, direction, original, projections[:, column], row_norms)
        if coincident:
            failures.append(coincident)
            continue
        if gap > best_gap:
            best, best_gap = direction, gap
    if best is None:
        _refuse_unseparated(failures, user_w=False)
    return best


def _refuse_unseparated(failures: list[set[tuple[int, int]]], *, user_w: bool) -> None:
    if not failures or not failures[0]:
        return
    common = set.intersection(*failures)
    if user_w:
        raise UserError(
            "with the given w these points project to the same value (within float64 rounding), "
            f"so no bias can separate them: indices {_format_pairs(sorted(common))}; "
            "pass w=None to search for a separating direction"
        )
    if common:
        raise UserError(
            f"no tried direction ({len(failures)} tries) separates the points with indices "
            f"{_format_pairs(sorted(common))}: they are (numerically) duplicates"
        )
    fewest = min(failures, key=len)
    raise UserError(
        f"each of the {len(failures)} tried directions left some points unseparated, e.g. indices "
        f"{_format_pairs(sorted(fewest))}; increase tries"
    )


# --- residual ---------------------------------------------------------------------------------


def _training_residual(
    net: InterpolatingNetwork, X: np.ndarray, Y: np.ndarray, device: str | torch.device
) -> tuple[float, float]:
    with torch.no_grad():
        fitted = net(torch.from_numpy(X).to(device)).reshape(len(X), -1).cpu().numpy()
    max_residual = float(np.max(np.abs(fitted - Y)))
    scale = float(np.max(np.abs(Y)))
    return max_residual, (max_residual / scale if scale > 0 else max_residual)
