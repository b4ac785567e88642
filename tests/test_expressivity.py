"""Tests of the 2n+d interpolating ReLU network (Zhang et al. 2017, Theorem 1)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import solve_triangular

from genlab.errors import UserError
from genlab.probes.expressivity import (
    InterpolatingNetwork,
    construction_toy_data,
    interleaved_biases,
    interpolating_network,
    ramp_components,
    ramp_condition_number,
    ramp_matrix,
    solve_ramp_system,
)

EPS = np.finfo(np.float64).eps

WORKED_X = np.array([[0.2, 0.3, 0.6], [0.5, 0.7, 0.1], [0.3, 0.4, 1.0], [0.3, 0.3, 0.3]])
WORKED_Y = np.array([1.0, 1.0, 0.0, 1.0])


def evaluate(model: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def random_interleaved(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct projections and biases placed at random fractions (0.05..0.5) of each gap."""
    a = np.sort(rng.standard_normal(n)) * rng.uniform(0.5, 5.0) + rng.uniform(-10, 10)
    while n > 1 and np.min(np.diff(a)) == 0:
        a = np.sort(rng.standard_normal(n))
    fractions = rng.uniform(0.05, 0.5, n)
    b = np.empty(n)
    b[1:] = a[:-1] + fractions[1:] * np.diff(a)
    b[0] = a[0] - rng.uniform(0.1, 1.0)
    return a, b


# --- the worked example of REFERENCE.md section 1 ----------------------------------------------


def test_worked_example_with_midpoints_matches_hand_computation() -> None:
    # Projections on w = (1, 1, 1) are 1.1, 1.3, 1.7, 0.9: all distinct (smallest gap 0.2), so
    # no pair has to be refused. Sorted targets are (1, 1, 1, 0); with midpoint biases
    # b = (0.8, 1.0, 1.2, 1.5) forward substitution by hand gives v = (10, -20, 20, -25).
    net = interpolating_network(WORKED_X, WORKED_Y, w=np.ones(3), bias_fraction=0.5)
    np.testing.assert_allclose(net.b.detach().numpy(), [0.8, 1.0, 1.2, 1.5], atol=1e-12)
    np.testing.assert_allclose(net.v.detach().numpy(), [10.0, -20.0, 20.0, -25.0], atol=1e-9)
    np.testing.assert_allclose(evaluate(net, WORKED_X), WORKED_Y, rtol=0, atol=1e-12)
    assert net.report.min_gap == pytest.approx(0.2, abs=1e-12)


def test_worked_example_default_construction_is_exact() -> None:
    net = interpolating_network(WORKED_X, WORKED_Y, w=np.ones(3))
    report = net.report
    assert (report.n, report.d, report.k, report.params, report.w_tries) == (4, 3, 1, 11, 1)
    assert report.max_residual <= 1e-12
    np.testing.assert_allclose(evaluate(net, WORKED_X), WORKED_Y, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(net.w.detach().numpy(), np.ones(3))
    a = WORKED_X @ np.ones(3)
    M = ramp_matrix(np.sort(a), net.b.detach().numpy())
    assert np.all(np.triu(M, 1) == 0) and np.all(np.diag(M) > 0)
    assert report.condition_estimate == pytest.approx(np.linalg.cond(M, np.inf), rel=1e-9)
    assert report.diagonal_ratio == pytest.approx(2.0, rel=1e-9)  # gaps 0.2, 0.2, 0.2, 0.4


def test_worked_example_with_random_direction() -> None:
    net = interpolating_network(WORKED_X, WORKED_Y, seed=3)
    assert net.report.max_residual <= 1e-12
    assert net.report.w_tries == 8
    assert np.linalg.norm(net.w.detach().numpy()) == pytest.approx(1.0)


# --- property tests ----------------------------------------------------------------------------


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 2500))
    d = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        scale = 10.0 ** draw(st.floats(-3, 3))
        X = rng.standard_normal((n, d)) * scale + draw(st.floats(-100, 100))
    else:
        X = np.unique(rng.integers(-3, 4, size=(n, d)).astype(np.float64), axis=0)
        X = X[rng.permutation(len(X))]
    n = len(X)
    if draw(st.booleans()):
        y = rng.standard_normal(n) * 10.0 ** draw(st.floats(-2, 2))
    else:
        k = draw(st.integers(1, 10))
        y = np.eye(k)[rng.integers(0, k, n)]
    return X, y


def rounding_bound(net: InterpolatingNetwork, X: np.ndarray) -> np.ndarray:
    """Worst-case float64 error of evaluating the network at each x.

    (d + n + 2) eps sum_j |v_j| (|x||w| + |b_j|): rounding of each pre-activation plus the sum.
    """
    w = net.w.detach().numpy()
    b = net.b.detach().numpy()
    v = np.abs(net.v.detach().numpy()).reshape(len(b), -1)
    scale = (np.abs(X) @ np.abs(w))[:, None] + np.abs(b)[None, :]
    return (X.shape[1] + len(b) + 2) * EPS * (scale @ v)


@settings(max_examples=12, deadline=None)
@given(point_sets())
def test_random_points_are_interpolated(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    n, d = X.shape
    k = 1 if y.ndim == 1 else y.shape[1]
    net = interpolating_network(X, y)
    fitted = evaluate(net, X)
    assert fitted.shape == y.shape
    scale = max(np.max(np.abs(y)), np.finfo(float).tiny)
    assert np.max(np.abs(fitted - y)) / scale <= 1e-6
    assert net.report.relative_residual <= 1e-6
    recomputed = np.max(np.abs(fitted - y))
    assert net.report.max_residual == pytest.approx(recomputed, rel=1e-6, abs=1e-300)
    assert net.report.params == n * k + n + d == sum(p.numel() for p in net.parameters())
    if y.ndim == 1:
        assert net.report.params == 2 * n + d
    b = net.b.detach().numpy()
    assert np.all(np.diff(b) > 0)


@settings(max_examples=8, deadline=None)
@given(point_sets())
def test_as_mlp_computes_the_same_function(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    net = interpolating_network(X, y, seed=1)
    mlp = net.as_mlp()
    hidden, relu, output = mlp
    n, d = X.shape
    k = net.output_dim
    assert isinstance(relu, torch.nn.ReLU)
    assert (hidden.in_features, hidden.out_features, output.out_features) == (d, n, k)
    assert torch.equal(hidden.weight, net.w.detach().expand(n, d))
    assert torch.equal(hidden.bias, -net.b.detach())
    mlp_out = evaluate(mlp, X).reshape(len(X), k)
    net_out = evaluate(net, X).reshape(len(X), k)
    assert np.all(np.abs(mlp_out - net_out) <= 2 * rounding_bound(net, X))
    assert np.max(np.abs(mlp_out - y.reshape(len(X), k))) <= 1e-4 * max(np.max(np.abs(y)), 1e-300)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_slope_recurrence_solve_matches_scipy(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_interleaved(rng, n)
    y = rng.standard_normal((n, k))
    M = ramp_matrix(a, b)
    reference = solve_triangular(M, y, lower=True)
    ours = solve_ramp_system(a, b, y)
    tolerance = 1e-9 * max(1.0, np.max(np.abs(reference)))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance)
    vector = solve_ramp_system(a, b, y[:, 0])
    np.testing.assert_allclose(vector, reference[:, 0], rtol=0, atol=tolerance)
    np.testing.assert_allclose(M @ ours, y, rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(y))))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 50), st.integers(0, 2**32 - 1), st.sampled_from([None, 0.1, 0.5]))
def test_condition_number_is_exact(n: int, seed: int, fraction: float | None) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_interleaved(rng, n)
    if fraction is not None:
        b = interleaved_biases(a, fraction)
    expected = np.linalg.cond(ramp_matrix(a, b), np.inf)
    assert ramp_condition_number(a, b) == pytest.approx(expected, rel=1e-6)


def test_midpoints_are_worse_conditioned_than_the_default() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 5))
    y = rng.standard_normal(2000)
    midpoint = interpolating_network(X, y, bias_fraction=0.5)
    default = interpolating_network(X, y)
    assert default.report.condition_estimate < midpoint.report.condition_estimate
    v_mid, v_default = (np.abs(net.v.detach().numpy()).sum() for net in (midpoint, default))
    assert v_default < v_mid


def test_interleaved_biases_interleave() -> None:
    a = np.array([-2.0, -0.5, 0.0, 3.0])
    for fraction in (0.1, 0.5, 0.9):
        b = interleaved_biases(a, fraction)
        assert np.all(b < a) and np.all(b[1:] > a[:-1])
        np.testing.assert_allclose((b[1:] - a[:-1]) / np.diff(a), fraction)
    np.testing.assert_array_equal(interleaved_biases(np.array([4.0])), [3.0])
    with pytest.raises(UserError, match="fraction"):
        interleaved_biases(a, 1.0)


def test_solver_refuses_biases_that_do_not_interleave() -> None:
    a = np.array([0.0, 1.0, 2.0])
    with pytest.raises(UserError, match=r"interleave.*\[1\]"):
        solve_ramp_system(a, np.array([-1.0, -0.5, 1.5]), np.ones(3))


# --- duplicates and unseparated points ---------------------------------------------------------


def data_with_duplicates() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((10, 3))
    X[7] = X[2]
    X[9] = X[4]
    y = rng.standard_normal(10)
    y[7] = y[2]
    y[9] = y[4]
    return X, y


def test_duplicates_are_refused_with_their_indices() -> None:
    X, y = data_with_duplicates()
    with pytest.raises(UserError, match=r"\(2, 7\), \(4, 9\).*merge_duplicates=True"):
        interpolating_network(X, y)


def test_duplicates_with_equal_targets_are_merged_on_request() -> None:
    X, y = data_with_duplicates()
    net = interpolating_network(X, y, merge_duplicates=True)
    assert net.report.merged == 2
    assert net.report.n == net.hidden_units == 8
    assert net.report.params == 2 * 8 + 3
    np.testing.assert_allclose(evaluate(net, X), y, rtol=0, atol=1e-10)


def test_duplicates_with_different_targets_are_always_refused() -> None:
    X, y = data_with_duplicates()
    y[9] = y[4] + 1.0
    for merge in (False, True):
        with pytest.raises(UserError, match=r"different targets.*\(4, 9\)"):
            interpolating_network(X, y, merge_duplicates=merge)


def test_one_hot_duplicates_compare_whole_rows() -> None:
    X = np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 1.0]])
    Y = np.eye(3)[[0, 1, 2]]
    with pytest.raises(UserError, match=r"\(0, 2\)"):
        interpolating_network(X, Y, merge_duplicates=True)


def test_user_direction_that_merges_points_is_refused() -> None:
    X = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    with pytest.raises(UserError, match=r"given w.*\(0, 1\).*w=None"):
        interpolating_network(X, np.zeros(3), w=np.array([1.0, 0.0]))
    net = interpolating_network(X, np.array([1.0, -2.0, 3.0]))
    assert net.report.max_residual <= 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 30), st.integers(0, 6), st.integers(0, 2**32 - 1))
def test_coincidence_screen_finds_the_pairs_of_the_exact_rounding_bound(n: int, d: int, near: int,
                                                                         seed: int) -> None:
    """The cheap Cauchy-Schwarz screen of `_coincident_pairs` never drops a pair that the exact bound
    4 d eps sum_k |x_k w_k| calls coincident, on points with some one-ulp near-duplicates."""
    from genlab.probes.expressivity import _EPS, _coincident_pairs, _row_norms

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.choice([1e-3, 1.0, 1e3])
    for _ in range(near):
        i, j = rng.integers(0, n, size=2)
        X[j] = np.nextafter(X[i], np.inf) if rng.random() < 0.5 else X[i]
    w = rng.standard_normal(d)
    a = X @ w
    order = np.argsort(a, kind="stable")
    tolerance = 4.0 * d * _EPS * (np.abs(X) @ np.abs(w))
    close = np.diff(a[order]) <= np.maximum(tolerance[order][:-1], tolerance[order][1:])
    expected = set()
    for position in np.flatnonzero(close):  # neighbours are coincident; runs of them are all pairs
        start = position
        while start > 0 and close[start - 1]:
            start -= 1
        stop = position + 1
        while stop < len(close) and close[stop]:
            stop += 1
        members = sorted(int(m) for m in order[start:stop + 1])
        expected.update((p, q) for k, p in enumerate(members) for q in members[k + 1:])
    pairs, gap = _coincident_pairs(X, w, np.arange(n), a, _row_norms(X))
    assert pairs == expected
    assert gap == np.min(np.diff(np.sort(a)))


def test_points_no_direction_separates_are_refused() -> None:
    # distinct floats one unit in the last place apart: every projection agrees within rounding
    X = np.array([[1.0, 1.0], [np.nextafter(1.0, 2.0), 1.0], [5.0, -3.0]])
    with pytest.raises(UserError, match=r"no tried direction.*\(0, 1\)"):
        interpolating_network(X, np.array([0.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    ("X", "y", "options", "field"),
    [
        (np.ones(3), np.ones(3), {}, "X must have shape"),
        (np.zeros((3, 2)) + np.arange(3)[:, None], np.ones(4), {}, "y must have shape"),
        (np.array([[0.0], [np.nan]]), np.ones(2), {}, "X contains NaN"),
        (np.array([[0.0], [1.0]]), np.array([1.0, np.inf]), {}, "y contains NaN"),
        (np.array([[0.0], [1.0]]), np.ones(2), {"w": np.ones(2)}, "w must have shape"),
        (np.array([[0.0], [1.0]]), np.ones(2), {"w": np.zeros(1)}, "zero vector"),
        (np.array([[0.0], [1.0]]), np.ones(2), {"tries": 0}, "tries"),
        (np.array([[0.0], [1.0]]), np.ones(2), {"bias_fraction": 0.0}, "bias_fraction"),
        (np.array([[0.0], [1.0]]), np.ones((2, 0)), {}, "zero columns"),
    ],
)
def test_bad_inputs_name_the_field(X, y, options, field) -> None:
    with pytest.raises(UserError, match=field):
        interpolating_network(X, y, **options)


# --- module behaviour --------------------------------------------------------------------------


def test_torch_inputs_and_float32_forward() -> None:
    X, y = construction_toy_data(50, seed=2)
    net = interpolating_network(torch.from_numpy(X).float(), torch.from_numpy(y))
    X32 = torch.from_numpy(X).float()
    out32 = net(X32)
    assert out32.dtype == torch.float32 and out32.shape == (50,)
    np.testing.assert_allclose(out32.detach().numpy(), y, atol=1e-5)
    with pytest.raises(UserError, match=r"shape \[batch, 1\]"):
        net(torch.zeros(4, 3))


def test_forward_is_differentiable_and_matches_dense_evaluation() -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 4))
    net = interpolating_network(X, rng.standard_normal((30, 3)))
    queries = torch.from_numpy(rng.standard_normal((17, 4)))
    out = net(queries)
    hidden = torch.relu(queries @ net.w[:, None] - net.b[None, :])
    torch.testing.assert_close(out, hidden @ net.v, rtol=1e-12, atol=1e-9)
    out.sum().backward()
    assert net.v.grad is not None and net.v.grad.shape == (30, 3)


def test_ramp_components_sum_to_the_network() -> None:
    X, y = construction_toy_data(12, seed=0)
    net = interpolating_network(X, y)
    grid = np.linspace(-1.2, 1.2, 301)
    ramps = ramp_components(net, grid)
    assert ramps.shape == (301, 12)
    np.testing.assert_allclose(ramps.sum(axis=1), evaluate(net, grid[:, None]), atol=1e-9)
    np.testing.assert_allclose(ramps[grid < net.b.detach().numpy()[0]], 0.0)


def test_toy_data_is_distinct_and_seeded() -> None:
    X, y = construction_toy_data(40, seed=7)
    assert X.shape == (40, 1) and y.shape == (40,)
    assert np.all(np.diff(X[:, 0]) >= 0.4 / 40 - 1e-12)
    assert np.all(np.abs(X) <= 1.0)
    X_again, y_again = construction_toy_data(40, seed=7)
    np.testing.assert_array_equal(X, X_again)
    np.testing.assert_array_equal(y, y_again)
    assert not np.array_equal(y, construction_toy_data(40, seed=8)[1])
    with pytest.raises(UserError, match="n must be a positive integer"):
        construction_toy_data(0, seed=0)


def test_twenty_thousand_random_labels_are_memorised() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 40))
    labels = rng.integers(0, 10, 20_000)
    started = time.perf_counter()
    net = interpolating_network(X, np.eye(10)[labels])
    seconds = time.perf_counter() - started
    predicted = evaluate(net, X).argmax(axis=1)
    assert np.array_equal(predicted, labels)
    assert net.report.params == 20_000 * 10 + 20_000 + 40
    assert net.report.relative_residual <= 1e-4
    assert seconds < 60
    print(f"n=20000 d=40 k=10: {seconds:.2f} s, report {net.report}")


def test_float32_inputs_keep_the_fit_or_are_refused() -> None:
    """#17.8: a network built on float64 points refuses float32 inputs (rounding them moves their projections
    and the fit is lost) with one line; one built on float32 points fits them to float32 rounding."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 40))
    y = rng.standard_normal(3000)
    net = interpolating_network(X, y)
    with pytest.raises(UserError, match=r"input x is torch.float32 but the network was built on torch.float64"):
        net(torch.from_numpy(X).float())
    for X32 in (X.astype(np.float32), torch.from_numpy(X).float()):
        net32 = interpolating_network(X32, y)
        with torch.no_grad():
            out = net32(torch.as_tensor(X32))
        assert out.dtype == torch.float32
        relative = np.abs(out.double().numpy() - y).max() / np.abs(y).max()
        assert relative <= 1e-6, relative   # the float64-built net on rounded inputs: ~5e-3
