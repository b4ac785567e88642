"""Random Fourier features fitted by minimum-norm least squares: the double-descent sweep
of Belkin, Hsu, Ma & Mandal (2019), "Reconciling modern machine learning practice and the
bias-variance trade-off", PNAS 116(32), Fig. 2.

Model. Frequencies v_1..v_m ~ N(0, sigma^-2 I_d) are drawn once; an input x maps to the
real features cos(<v_k, x>), sin(<v_k, x>). Belkin writes the complex feature
exp(i<v_k, x>) and counts N complex features; here every count is of REAL COLUMNS:
one frequency gives two columns (its cosine and its sine), the predictor for each of the K
outputs has one real coefficient per column, so

    features = params = number of real columns,   frequencies = ceil(features / 2),

and the interpolation threshold (feature matrix square, n x n) sits at features = n, which
is where Belkin's curve peaks (his N = n). `interpolation_threshold` spells this out.

Normalization. With p real columns the feature matrix is Phi = sqrt(2/p) [cos, sin], i.e.
[cos(XV), sin(XV)] / sqrt(m) for m = p/2 frequencies, so Phi Phi^T -> the Gaussian kernel
exp(-|x - x'|^2 / (2 sigma^2)) as m grows. The scale changes neither the min-norm
predictions nor the location of the peak; it does fix the meaning of `ridge` (the kernel
ridge parameter in the infinite-feature limit) and of `norm` (which converges to the RKHS
norm of the predictor).

Fit. W = Phi^+ Y (minimum Frobenius norm among least-squares solutions), or with ridge
lambda > 0 the ridge solution (Phi^T Phi + lambda I)^-1 Phi^T Y = Phi^T (Phi Phi^T + lambda
I)^-1 Y, always through the smaller of the two Gram matrices, in float64
(:mod:`genlab.probes.min_norm`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from genlab.errors import UserError
from genlab.probes.arguments import (
    as_feature_counts,
    as_generator,
    as_labels,
    as_matrix,
    as_ridges,
    as_targets,
    require_choice,
    require_positive_finite,
    require_positive_int,
    require_rcond,
)
from genlab.probes.min_norm import PSDSolution, min_norm_solve, solve_psd, symmetric_gram, symmetrize_upper

__all__ = [
    "InterpolationThreshold",
    "default_sigma",
    "fourier_features",
    "fourier_frequencies",
    "interpolation_threshold",
    "log_grid_dense_near",
    "min_norm_solve",
    "rff_sweep",
]

_CHUNK_COLUMNS = 2048


# ----------------------------------------------------------------------------- conventions


@dataclass(frozen=True)
class InterpolationThreshold:
    """Where a random-feature model with n training points and K outputs can first interpolate.

    real_columns: feature count (= params per output) at which Phi is n x n, i.e. n.
    frequencies: number of frequency vectors there (n / 2; cos and sin per frequency).
    total_params: real coefficients over all K outputs at the threshold, n * K.
    """

    real_columns: int
    frequencies: float
    total_params: int


def interpolation_threshold(n_train: int, n_outputs: int = 1) -> InterpolationThreshold:
    """The interpolation threshold in this module's convention (count of real columns).

    Belkin et al. (2019) count N complex features exp(i<v,x>) and see the peak at N = n;
    in real form each frequency contributes a cos and a sin column, and the least-squares
    system Phi W = Y (Phi: n x features) becomes square at features = n.
    """
    require_positive_int(n_train, "n_train")
    require_positive_int(n_outputs, "n_outputs")
    return InterpolationThreshold(
        real_columns=n_train, frequencies=n_train / 2.0, total_params=n_train * n_outputs
    )


# ----------------------------------------------------------------------------- features


def fourier_frequencies(
    d: int, n_features: int, sigma: float, seed: int | np.random.Generator
) -> np.ndarray:
    """Frequencies V [d, n_features], columns v_k ~ N(0, sigma^-2 I_d), float64.

    n_features counts frequency vectors; each gives two real feature columns (cos and sin),
    so V feeds a model with 2 * n_features features (see the module docstring).

    The draw is SCALED, v = z / sigma with z ~ N(0, I): a public port of this experiment
    shifted it instead (v = z + 1/sigma), which gives every frequency a common mean and
    destroys the Gaussian-kernel limit. Columns are drawn one after another, so the first m
    columns for a seed are the same whatever n_features is (prefixes are nested).
    """
    require_positive_int(d, "d")
    require_positive_int(n_features, "n_features")
    require_positive_finite(sigma, "sigma")
    rng = as_generator(seed)
    return rng.standard_normal((n_features, d)).T / sigma


def fourier_features(X: Any, V: Any) -> np.ndarray:
    """Real random Fourier features Phi [n, 2m] = [cos(X V), sin(X V)] / sqrt(m), m = V.shape[1].

    With this scale Phi Phi^T = (1/m) sum_k cos(<v_k, x - x'>), an unbiased Monte-Carlo
    estimate of the Gaussian kernel exp(-|x - x'|^2 / (2 sigma^2)) when v_k ~ N(0, sigma^-2 I).
    The 2m columns are the model's features (params per output), m its frequencies.
    """
    X = as_matrix(X, "X")
    V = as_matrix(V, "V")
    if X.shape[1] != V.shape[0]:
        raise UserError(
            f"X has {X.shape[1]} input dimensions but the frequencies V have {V.shape[0]} rows"
        )
    projections = torch.from_numpy(X @ V)
    m = V.shape[1]
    Phi = torch.empty((X.shape[0], 2 * m), dtype=torch.float64)
    torch.cos(projections, out=Phi[:, :m])
    torch.sin(projections, out=Phi[:, m:])
    Phi /= math.sqrt(m)
    return Phi.numpy()


def default_sigma(X: Any, subsample: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance between rows of X (the "median heuristic").

    Computed on a seeded random subsample of at most `subsample` rows (pairs i < j). With it
    the Gaussian kernel exp(-|x - x'|^2 / (2 sigma^2)) is exp(-1/2) for a median pair, so the
    kernel neither sees every pair as identical nor as unrelated. On MNIST scaled to [0, 1]
    it is about 10.
    """
    X = as_matrix(X, "X")
    require_positive_int(subsample, "subsample")
    if X.shape[0] < 2:
        raise UserError(f"default_sigma needs at least 2 rows in X, got {X.shape[0]}")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(X.shape[0])[: min(subsample, X.shape[0])]
    sample = X[rows]
    squared_norms = np.einsum("ij,ij->i", sample, sample)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * (sample @ sample.T)
    upper = np.triu_indices(sample.shape[0], k=1)
    median = float(np.sqrt(np.median(np.maximum(squared[upper], 0.0))))
    if not median > 0.0:
        raise UserError("default_sigma: the median pairwise distance of X is 0 (duplicate rows)")
    return median


# ----------------------------------------------------------------------------- solver


# ----------------------------------------------------------------------------- grid


def log_grid_dense_near(
    n: int, lo: float = 0.1, hi: float = 10.0, count: int = 32, dense_width: float = 0.25
) -> list[int]:
    """Sorted unique integer feature counts from lo*n to hi*n, log-spaced, dense near n.

    About half of the points are log-spaced over [n e^-dense_width, n e^dense_width]
    (dense_width in natural log: 0.25 is [0.78 n, 1.28 n]), the rest log-spaced over
    [lo n, hi n] outside that window; n itself is always included. More base points are
    added until at least `count` distinct integers exist (or the integer range runs out).
    """
    require_positive_int(n, "n")
    require_positive_int(count, "count")
    require_positive_finite(lo, "lo")
    require_positive_finite(hi, "hi")
    require_positive_finite(dense_width, "dense_width")
    if not lo < 1.0 < hi:
        raise UserError(f"log_grid_dense_near needs lo < 1 < hi, got lo={lo}, hi={hi}")
    low, high = max(1, math.ceil(lo * n)), max(1, math.floor(hi * n))
    dense_count = max(3, count // 2) | 1  # odd, so log n itself is a dense node
    dense_low = max(low, n * math.exp(-dense_width))
    dense_high = min(high, n * math.exp(dense_width))
    dense = np.exp(np.linspace(math.log(dense_low), math.log(dense_high), dense_count))
    base_count = max(2, count - dense_count)
    while True:
        base = np.exp(np.linspace(math.log(low), math.log(high), base_count))
        base = base[(base < dense_low) | (base > dense_high)]
        grid = np.unique(np.concatenate([np.rint(base), np.rint(dense), [n]]).astype(np.int64))
        grid = grid[(grid >= low) & (grid <= high)]
        if len(grid) >= count or base_count >= high - low + 1:
            return [int(value) for value in grid]
        base_count += 1


# ----------------------------------------------------------------------------- sweep


def rff_sweep(
    X_train: Any,
    Y_train_onehot: Any,
    X_test: Any,
    y_test: Any,
    feature_counts: Any,
    sigma: float,
    seed: int | np.random.Generator,
    ridge: float | Sequence[float] = 0.0,
    rcond: float | None = None,
    ill_conditioned: str = "floor",
) -> list[dict[str, Any]]:
    """Belkin et al. (2019) Fig. 2: min-norm (or ridge) random-Fourier-feature fits versus size.

    One set of ceil(max(feature_counts) / 2) frequencies is drawn; the model with p features
    uses the first p real columns of cos(<v_1,x>), sin(<v_1,x>), cos(<v_2,x>), ... scaled by
    sqrt(2/p) (see the module docstring), so the models are nested and the curve is smooth.
    Models with p <= n_train are solved through the p x p column Gram (a leading block of one
    Gram matrix); models with p > n_train through the n x n row Gram, accumulated column
    chunk by column chunk, so the feature matrix of the largest model is never stored.
    Each solve is the one of `min_norm_solve` (same rcond); where the Gram matrix is too
    ill-conditioned for the exact Cholesky path (in practice only at or right next to p = n)
    the default ill_conditioned="floor" adds the round-off floor rcond * |G|_1 to the
    diagonal rather than pay for an O(n^3) eigendecomposition, which costs ~10 s at n = 4000
    on one idle core and several times that on a loaded machine; pass "truncate" for the hard
    cutoff. The floor lowers the spike at p = n (MNIST, n = 4000: test MSE 163 instead of 353)
    and leaves the other points untouched.

    `ridge` may be a list of ridge parameters: every one is solved on the same features and
    the same Gram matrices (the features and Gram accumulation, the bulk of the cost, are
    shared), giving one row per (feature count, ridge), ridges in the given order.

    Returns one row per feature count, ascending, with keys
      features, params: p (real columns = real coefficients per output); frequencies: ceil(p/2)
      train_mse, test_mse: mean over examples of the squared error SUMMED over the K outputs,
        i.e. |Y - Y_hat|_F^2 / n against one-hot targets
      train_err, test_err: zero-one error of argmax predictions
      norm: Frobenius norm of the coefficient matrix W [p, K] (of the scaled features)
      solver: "cholesky" (exact), "eigh" (hard cutoff) or "cholesky+floor"; floor: the
        relative floor added (0 unless "cholesky+floor"); ridge, sigma
      seconds: wall time since the previous row (shared work is charged to the row that
        first needed it, so the seconds add up to the sweep's total time).
    """
    X_train = as_matrix(X_train, "X_train")
    X_test = as_matrix(X_test, "X_test")
    Y_train, _ = as_targets(Y_train_onehot, X_train.shape[0], "Y_train_onehot")
    if Y_train.shape[1] < 2:
        raise UserError("Y_train_onehot must be one-hot with at least 2 columns (classes)")
    test_labels = as_labels(y_test, X_test.shape[0], Y_train.shape[1])
    if X_test.shape[1] != X_train.shape[1]:
        raise UserError(
            f"X_test has {X_test.shape[1]} columns but X_train has {X_train.shape[1]}"
        )
    counts = as_feature_counts(feature_counts)
    require_positive_finite(sigma, "sigma")
    ridges = as_ridges(ridge)
    require_choice(ill_conditioned, "ill_conditioned", ("truncate", "floor"))
    require_rcond(rcond)

    started = time.perf_counter()
    n_train = X_train.shape[0]
    V = fourier_frequencies(X_train.shape[1], math.ceil(counts[-1] / 2), sigma, seed)
    problem = _SweepProblem(
        X_all=np.vstack([X_train, X_test]),
        n_train=n_train,
        V=V,
        Y_train=Y_train,
        train_labels=Y_train.argmax(axis=1),
        test_labels=test_labels,
        ridges=ridges,
        rcond=rcond,
        ill_conditioned=ill_conditioned,
    )
    under = [p for p in counts if p <= n_train]
    over = [p for p in counts if p > n_train]
    rows: list[dict[str, Any]] = []
    clock = [started]
    first_columns = _feature_columns(problem, 0, under[-1]) if under else None
    if under:
        rows += _sweep_column_gram(problem, under, first_columns, clock)
    if over:
        rows += _sweep_row_gram(problem, over, first_columns, clock)
    for row in rows:
        row["sigma"] = float(sigma)
    return rows


@dataclass
class _SweepProblem:
    X_all: np.ndarray  # train rows then test rows
    n_train: int
    V: np.ndarray
    Y_train: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    ridges: tuple[float, ...]
    rcond: float | None
    ill_conditioned: str


def _feature_columns(problem: _SweepProblem, start: int, stop: int) -> np.ndarray:
    """Unscaled real feature columns [start, stop) for all rows: cos v1, sin v1, cos v2, ..."""
    first_frequency, last_frequency = start // 2, math.ceil(stop / 2)
    projections = torch.from_numpy(problem.X_all @ problem.V[:, first_frequency:last_frequency])
    paired = torch.empty(
        (problem.X_all.shape[0], 2 * (last_frequency - first_frequency)), dtype=torch.float64
    )
    torch.cos(projections, out=paired[:, 0::2])
    torch.sin(projections, out=paired[:, 1::2])
    offset = start - 2 * first_frequency
    return np.ascontiguousarray(paired.numpy()[:, offset : offset + stop - start])


def _sweep_column_gram(
    problem: _SweepProblem, counts: list[int], columns: np.ndarray, clock: list[float]
) -> list[dict[str, Any]]:
    """Models with p <= n: W = (c G_p + ridge I)^+ sqrt(c) Phi_p^T Y, G_p a leading block."""
    n = problem.n_train
    train, test = columns[:n], columns[n:]
    gram = symmetric_gram(train, rows=False)
    projected_targets = train.T @ problem.Y_train
    rows = []
    for p in counts:
        scale = 2.0 / p
        for ridge in problem.ridges:
            solution = solve_psd(
                scale * gram[:p, :p],
                math.sqrt(scale) * projected_targets[:p],
                ridge,
                problem.rcond,
                problem.ill_conditioned,
            )
            train_predictions = math.sqrt(scale) * (train[:, :p] @ solution.X)
            test_predictions = math.sqrt(scale) * (test[:, :p] @ solution.X)
            norm = float(np.linalg.norm(solution.X))
            rows.append(
                _row(problem, p, ridge, train_predictions, test_predictions, norm, solution, clock)
            )
    return rows


def _sweep_row_gram(
    problem: _SweepProblem,
    counts: list[int],
    first_columns: np.ndarray | None,
    clock: list[float],
) -> list[dict[str, Any]]:
    """Models with p > n: alpha = (c K_p + ridge I)^+ Y, K_p = Phi_p Phi_p^T grown by chunks.

    Predictions are c K_p alpha (train) and c C_p alpha (test, C_p the test-train block of the
    same stacked Gram); |W|_F^2 = tr(alpha^T c K_p alpha) since W = sqrt(c) Phi_p^T alpha.
    """
    n = problem.n_train
    size = problem.X_all.shape[0]
    stacked_gram = np.zeros((size, size), order="F")  # upper triangle of Phi_all Phi_all^T
    done = 0
    if first_columns is not None:
        stacked_gram = _accumulate_gram(stacked_gram, first_columns)
        done = first_columns.shape[1]
    kernel = np.empty((n, n))
    rows = []
    for p in counts:
        while done < p:
            stop = min(p, done + _CHUNK_COLUMNS)
            stacked_gram = _accumulate_gram(stacked_gram, _feature_columns(problem, done, stop))
            done = stop
        scale = 2.0 / p
        symmetrize_upper(stacked_gram[:n, :n], out=kernel)
        kernel *= scale
        for ridge in problem.ridges:
            solution = solve_psd(
                kernel, problem.Y_train, ridge, problem.rcond, problem.ill_conditioned
            )
            alpha = solution.X
            train_predictions = kernel @ alpha
            test_predictions = scale * (stacked_gram[:n, n:].T @ alpha)
            norm = math.sqrt(max(float(np.sum(alpha * train_predictions)), 0.0))
            rows.append(
                _row(problem, p, ridge, train_predictions, test_predictions, norm, solution, clock)
            )
    return rows


def _accumulate_gram(gram: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """gram (upper triangle) + columns columns^T; in place when gram is in Fortran order."""
    from scipy.linalg import blas  # imported where used: scipy.linalg costs ~0.16 s at start-up

    return blas.dsyrk(1.0, columns.T, beta=1.0, c=gram, trans=1, overwrite_c=1)


def _row(
    problem: _SweepProblem,
    p: int,
    ridge: float,
    train_predictions: np.ndarray,
    test_predictions: np.ndarray,
    norm: float,
    solution: PSDSolution,
    clock: list[float],
) -> dict[str, Any]:
    test_targets = np.eye(problem.Y_train.shape[1])[problem.test_labels]
    now = time.perf_counter()
    row = {
        "features": p,
        "params": p,
        "frequencies": math.ceil(p / 2),
        "train_mse": _summed_squared_error(train_predictions, problem.Y_train),
        "test_mse": _summed_squared_error(test_predictions, test_targets),
        "train_err": float(np.mean(train_predictions.argmax(axis=1) != problem.train_labels)),
        "test_err": float(np.mean(test_predictions.argmax(axis=1) != problem.test_labels)),
        "norm": norm,
        "solver": solution.solver,
        "floor": solution.floor,
        "ridge": ridge,
        "seconds": now - clock[0],
    }
    clock[0] = now
    return row


def _summed_squared_error(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean over examples of the squared error summed over outputs: |P - T|_F^2 / n."""
    return float(np.sum((predictions - targets) ** 2) / targets.shape[0])


# ----------------------------------------------------------------------------- validation


