"""Random Fourier features and the min-norm double-descent sweep (Belkin et al. 2019, Fig. 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from genlab.errors import UserError
from genlab.probes.min_norm import solve_psd
from genlab.probes.random_features import (
    default_sigma,
    fourier_features,
    fourier_frequencies,
    interpolation_threshold,
    log_grid_dense_near,
    min_norm_solve,
    rff_sweep,
)


def _rank_deficient(rng: np.random.Generator, rows: int, columns: int, rank: int) -> np.ndarray:
    return rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, columns))


# ----------------------------------------------------------------------------- solver


@pytest.mark.parametrize("shape", [(40, 15), (15, 40), (25, 25)])
@pytest.mark.parametrize("rank_deficient", [False, True])
@pytest.mark.parametrize("outputs", [None, 3])
def test_min_norm_solve_matches_lstsq(shape, rank_deficient, outputs):
    # a stable seed from the parameters (hash() of a tuple holding None changes from run to run)
    rng = np.random.default_rng([*shape, int(rank_deficient), outputs or 0])
    rows, columns = shape
    if rank_deficient:
        Phi = _rank_deficient(rng, rows, columns, rank=min(shape) // 3)
    else:
        Phi = rng.standard_normal(shape)
    Y = rng.standard_normal(rows if outputs is None else (rows, outputs))

    W = min_norm_solve(Phi, Y)

    expected = np.linalg.lstsq(Phi, Y, rcond=None)[0]
    assert W.shape == expected.shape
    np.testing.assert_allclose(W, expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(40, 15), (15, 40)])
def test_ridge_matches_closed_form(shape):
    rng = np.random.default_rng(7)
    Phi = rng.standard_normal(shape)
    Y = rng.standard_normal((shape[0], 4))
    ridge = 0.3

    W = min_norm_solve(Phi, Y, ridge=ridge)

    expected = np.linalg.solve(Phi.T @ Phi + ridge * np.eye(shape[1]), Phi.T @ Y)
    np.testing.assert_allclose(W, expected, rtol=1e-9, atol=1e-12)


def test_psd_solver_paths():
    rng = np.random.default_rng(3)
    B = rng.standard_normal((30, 2))
    well_conditioned = rng.standard_normal((30, 60))
    G = well_conditioned @ well_conditioned.T
    fast = solve_psd(G, B, 0.0, None)
    assert fast.solver == "cholesky"
    np.testing.assert_allclose(fast.X, np.linalg.solve(G, B), rtol=1e-9)

    # eigenvalues 1 .. 1e-12: the relative cutoff 1e-8 cuts the last third of them
    basis = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    eigenvalues = np.logspace(0, -12, 30)
    ill = (basis * eigenvalues) @ basis.T
    truncated = solve_psd(ill, B, 0.0, 1e-8, "truncate")
    assert truncated.solver == "eigh"
    kept = eigenvalues > 1e-8
    expected = basis[:, kept] @ ((basis[:, kept].T @ B) / eigenvalues[kept, None])
    np.testing.assert_allclose(truncated.X, expected, rtol=1e-6)

    floored = solve_psd(ill, B, 0.0, 1e-8, "floor")
    assert floored.solver == "cholesky+floor" and floored.floor == 1e-8
    delta = 1e-8 * np.abs(ill).sum(axis=0).max()
    expected = basis @ ((basis.T @ B) / (eigenvalues + delta)[:, None])
    np.testing.assert_allclose(floored.X, expected, rtol=1e-6)


# ----------------------------------------------------------------------------- features


def test_frequencies_are_scaled_not_shifted():
    sigma = 2.5
    V = fourier_frequencies(d=64, n_features=5000, sigma=sigma, seed=0)

    assert V.shape == (64, 5000)
    standard_error = (1 / sigma) / math.sqrt(V.size)
    assert abs(V.mean()) < 5 * standard_error  # a shift v = z + 1/sigma would put it at 0.4
    assert V.std() == pytest.approx(1 / sigma, rel=0.01)


def test_frequency_prefixes_are_nested():
    many = fourier_frequencies(10, 50, 1.5, seed=4)
    few = fourier_frequencies(10, 20, 1.5, seed=4)
    np.testing.assert_array_equal(many[:, :20], few)


def test_fourier_features_estimate_gaussian_kernel():
    rng = np.random.default_rng(1)
    X = rng.random((6, 5))
    sigma = 0.7
    Phi = fourier_features(X, fourier_frequencies(5, 20000, sigma, seed=2))

    assert Phi.shape == (6, 40000)
    gram = Phi @ Phi.T
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-12)
    squared_distances = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-squared_distances / (2 * sigma**2))
    assert np.abs(gram - kernel).max() < 0.03  # Monte-Carlo error ~ 1/sqrt(20000)


def test_default_sigma_is_the_median_pairwise_distance():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((31, 4))
    distances = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    expected = np.median(distances[np.triu_indices(31, k=1)])

    assert default_sigma(X) == pytest.approx(expected, rel=1e-10)
    assert default_sigma(3.0 * X) == pytest.approx(3.0 * expected, rel=1e-10)


# ----------------------------------------------------------------------------- conventions


def test_interpolation_threshold_counts_real_columns():
    threshold = interpolation_threshold(300, 10)
    assert threshold.real_columns == 300
    assert threshold.frequencies == 150
    assert threshold.total_params == 3000


@pytest.mark.parametrize("n", [300, 4000])
def test_grid_includes_n_and_is_dense_near_it(n):
    grid = log_grid_dense_near(n, lo=0.1, hi=10.0, count=32, dense_width=0.25)

    assert n in grid
    assert grid == sorted(set(grid)) and all(isinstance(value, int) for value in grid)
    assert len(grid) >= 32
    assert grid[0] == math.ceil(0.1 * n) and grid[-1] == 10 * n
    near = [value for value in grid if n * math.exp(-0.25) <= value <= n * math.exp(0.25)]
    assert len(near) >= 16  # half the points in 11% of the log range
    log_steps = np.diff(np.log(grid))
    near_steps = np.diff(np.log(near))
    assert near_steps.max() < 0.2 * log_steps.max()


# ----------------------------------------------------------------------------- sweep


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order] / 16.0, y[order]


def _interleaved(X: np.ndarray, V: np.ndarray, columns: int) -> np.ndarray:
    """cos v1, sin v1, cos v2, ... first `columns` columns, scaled by sqrt(2 / columns)."""
    projections = X @ V
    paired = np.stack([np.cos(projections), np.sin(projections)], axis=2).reshape(len(X), -1)
    return paired[:, :columns] * math.sqrt(2.0 / columns)


@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_sweep_rows_equal_direct_solves(digits, ridge):
    X, y = digits
    X_train, y_train, X_test, y_test = X[:60], y[:60], X[60:100], y[60:100]
    Y_train = np.eye(10)[y_train]
    sigma, seed = default_sigma(X_train), 3
    counts = [20, 21, 30, 100, 150]

    rows = rff_sweep(
        X_train, Y_train, X_test, y_test, counts, sigma, seed, ridge=ridge,
        ill_conditioned="truncate",
    )

    assert [row["features"] for row in rows] == counts
    V = fourier_frequencies(X.shape[1], 75, sigma, seed)
    for row, p in zip(rows, counts):
        if p % 2 == 0:
            V_p = V[:, : p // 2]
            Phi_train, Phi_test = fourier_features(X_train, V_p), fourier_features(X_test, V_p)
        else:
            Phi_train, Phi_test = _interleaved(X_train, V, p), _interleaved(X_test, V, p)
        W = min_norm_solve(Phi_train, Y_train, ridge=ridge)
        train_predictions, test_predictions = Phi_train @ W, Phi_test @ W
        test_targets = np.eye(10)[y_test]
        assert row["params"] == p
        assert row["norm"] == pytest.approx(np.linalg.norm(W), rel=1e-6)
        assert row["train_mse"] == pytest.approx(
            ((train_predictions - Y_train) ** 2).sum() / 60, rel=1e-5, abs=1e-12
        )
        assert row["test_mse"] == pytest.approx(
            ((test_predictions - test_targets) ** 2).sum() / 40, rel=1e-6
        )
        assert row["test_err"] == pytest.approx(np.mean(test_predictions.argmax(1) != y_test))


def test_double_descent_on_digits(digits):
    """Belkin Fig. 2 in miniature: n = 300 digits, the rest (1497) as test set."""
    X, y = digits
    n = 300
    X_train, y_train, X_test, y_test = X[:n], y[:n], X[n:], y[n:]
    Y_train = np.eye(10)[y_train]
    grid = log_grid_dense_near(n)
    sigma = default_sigma(X_train)

    rows = rff_sweep(X_train, Y_train, X_test, y_test, grid, sigma, seed=0)
    ridged = rff_sweep(X_train, Y_train, X_test, y_test, grid, sigma, seed=0, ridge=1e-3)

    features = np.array([row["features"] for row in rows])
    test_mse = np.array([row["test_mse"] for row in rows])
    norms = np.array([row["norm"] for row in rows])
    threshold = interpolation_threshold(n, 10).real_columns
    peak = features[test_mse.argmax()]
    assert 0.7 * threshold <= peak <= 1.4 * threshold
    assert 0.7 * threshold <= features[norms.argmax()] <= 1.4 * threshold
    assert test_mse.max() > 10 * np.median(test_mse)  # a real spike, not a bump
    beyond = [row for row in rows if row["features"] >= threshold]
    assert max(row["train_err"] for row in beyond) == 0.0
    assert max(row["train_mse"] for row in beyond) < 1e-3
    best_under = min(row["test_err"] for row in rows if row["features"] < threshold)
    assert rows[-1]["test_err"] < best_under  # the second descent goes below the first
    ridged_peak = max(row["test_mse"] for row in ridged)
    assert ridged_peak < 0.05 * test_mse.max()


# ----------------------------------------------------------------------------- errors


def test_user_errors_name_the_field(digits):
    X, y = digits
    Y = np.eye(10)[y[:20]]
    with pytest.raises(UserError, match="sigma"):
        fourier_frequencies(4, 3, sigma=0.0, seed=0)
    with pytest.raises(UserError, match="y_test"):
        rff_sweep(X[:20], Y, X[20:30], y[20:29], [5], 1.0, 0)
    with pytest.raises(UserError, match="feature_counts"):
        rff_sweep(X[:20], Y, X[20:30], y[20:30], [0, 5], 1.0, 0)
    with pytest.raises(UserError, match="X_test"):
        rff_sweep(X[:20], Y, X[20:30, :10], y[20:30], [5], 1.0, 0)
    with pytest.raises(UserError, match="ill_conditioned"):
        min_norm_solve(np.eye(3), np.ones(3), ill_conditioned="pinv")
