"""The linear algebra of the 2n+d construction (Zhang et al. 2017, Theorem 1) used by
:mod:`genlab.probes.expressivity`: biases interleaved with the sorted projections, the lower
triangular ramp matrix M_ij = relu(a_i - b_j), its O(n) solve and condition number."""
from __future__ import annotations

import numpy as np

from genlab.errors import UserError

_SHOWN_POSITIONS = 5  # positions named in an error message


def interleaved_biases(a_sorted: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Biases b_1 < a_1 < b_2 < a_2 < ... < b_n < a_n for strictly increasing projections a.

    b_j = a_{j-1} + fraction * (a_j - a_{j-1}) for j >= 2 and b_1 = a_1 - (1 - fraction)(a_2 - a_1)
    (b_1 = a_1 - 1 if n = 1), so M_jj = a_j - b_j = (1 - fraction) times the gap below a_j
    (for j = 1, the gap above). fraction = 0.5 gives midpoints.
    """
    a_sorted = np.asarray(a_sorted, dtype=np.float64)
    check_bias_fraction(fraction)
    if a_sorted.size == 1:
        return a_sorted - 1.0
    gaps = np.diff(a_sorted)
    b = np.empty_like(a_sorted)
    b[1:] = a_sorted[:-1] + fraction * gaps
    b[0] = a_sorted[0] - (1.0 - fraction) * gaps[0]
    return b


def ramp_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The dense n x n matrix M_ij = max(a_i - b_j, 0); O(n^2) memory, for checks on small n."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.maximum(a[:, None] - b[None, :], 0.0)


def solve_ramp_system(a_sorted: np.ndarray, b: np.ndarray, y_sorted: np.ndarray) -> np.ndarray:
    """Solve M v = y, M_ij = relu(a_i - b_j), in O(n) per output column, through the slopes of the fit.

    Requires interleaved b_1 < a_1 <= b_2 < a_2 <= ... (then M is lower triangular with positive
    diagonal). f(x) = sum_j v_j relu(x - b_j) has slope s_i = v_1 + ... + v_i on [b_i, b_{i+1}], so
    with q_i = a_i - b_i and p_i = b_i - a_{i-1}, f(a_i) - f(a_{i-1}) = p_i s_{i-1} + q_i s_i; the
    conditions f(a_i) = y_i are the unit lower bidiagonal system s_i + (p_i / q_i) s_{i-1} =
    (y_i - y_{i-1}) / q_i (y_0 = 0, s_0 = 0), solved by LAPACK's banded triangular solve (dtbtrs)
    for all k columns of y at once; then v_i = s_i - s_{i-1}. The recurrence only sees differences
    of projections, so a large common offset of the a_i costs no accuracy. (A Python loop of
    prefix sums, v_i = (y_i - a_i S1_{i-1} + S2_{i-1}) / q_i, gives the same v to ~1e-12 relative
    and a residual of the same size, 10-17x slower: 14 ms instead of 1.3 ms at n = 4,000, k = 10.)
    Returns v with the shape of y_sorted.
    """
    a_sorted = np.asarray(a_sorted, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    y = np.asarray(y_sorted, dtype=np.float64)
    if a_sorted.ndim != 1 or b.shape != a_sorted.shape or y.shape[:1] != a_sorted.shape:
        raise UserError(
            f"solve_ramp_system needs a [n], b [n], y [n] or [n, k]; got "
            f"{a_sorted.shape}, {b.shape}, {y.shape}"
        )
    check_interleaved(a_sorted, b)
    n = len(a_sorted)
    Y = y.reshape(n, -1)
    if n == 0:
        return np.empty_like(y)
    q = a_sorted - b
    rhs = np.empty_like(Y)
    rhs[0] = Y[0] / q[0]
    rhs[1:] = (Y[1:] - Y[:-1]) / q[1:, None]
    bands = np.zeros((2, n))  # LAPACK lower band storage: the diagonal, then the subdiagonal
    bands[0] = 1.0
    bands[1, :-1] = (b[1:] - a_sorted[:-1]) / q[1:]
    from scipy.linalg.lapack import dtbtrs  # imported where used: scipy.linalg costs ~0.16 s at start-up

    slopes, info = dtbtrs(bands, rhs, uplo="L")
    if info != 0:  # pragma: no cover - a unit diagonal is never singular
        raise RuntimeError(f"dtbtrs failed with info={info}")
    V = np.empty_like(slopes)
    V[0] = slopes[0]
    V[1:] = np.diff(slopes, axis=0)
    return V.reshape(y.shape)


def ramp_condition_number(a_sorted: np.ndarray, b: np.ndarray) -> float:
    """Exact infinity-norm condition number ||M||_inf ||M^-1||_inf of M_ij = relu(a_i - b_j), O(n).

    For interleaved biases, ||M||_inf is the last row sum, sum_j (a_n - b_j) (row sums grow with i).
    For M^-1 write q_i = a_i - b_i, p_i = b_i - a_{i-1} and r_i = p_i / q_i: the slopes of f satisfy
    s_i = (y_i - y_{i-1}) / q_i - r_i s_{i-1}, so M^-1 = D T Q^-1 D with D the first-difference
    matrix, Q = diag(q) and T_im = prod_{l=m+1..i} (-r_l). Its row i has absolute sum
    2/q_i + (1 + r_i)(1/q_{i-1} + H_i), H_2 = 0, H_{i+1} = r_i H_i + r_i/q_{i-1} + 1/q_i
    (1/q_1 for row 1), and ||M^-1||_inf is the largest of these. Float64 loses about
    log10 of this number in digits of relative accuracy, in the worst case.
    """
    a_sorted = np.asarray(a_sorted, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    check_interleaved(a_sorted, b)
    q = (a_sorted - b).tolist()
    norm_m = float(np.sum(a_sorted[-1] - b))
    p = [0.0] + (b[1:] - a_sorted[:-1]).tolist()
    largest_row = 1.0 / q[0]
    tail = 0.0  # H_i of the docstring, for the current row i (0-based here)
    for i in range(1, len(q)):
        r = p[i] / q[i]
        row = 2.0 / q[i] + (1.0 + r) * (1.0 / q[i - 1] + tail)
        largest_row = max(largest_row, row)
        tail = r * tail + r / q[i - 1] + 1.0 / q[i]
    return norm_m * largest_row


def check_bias_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise UserError(f"bias_fraction must lie strictly between 0 and 1, got {fraction!r}")


def check_interleaved(a_sorted: np.ndarray, b: np.ndarray) -> None:
    below = b < a_sorted
    above_previous = b[1:] >= a_sorted[:-1]
    if not (np.all(below) and np.all(above_previous)):
        bad = np.flatnonzero(~below).tolist() + (np.flatnonzero(~above_previous) + 1).tolist()
        raise UserError(
            "biases must interleave the sorted projections, b_1 < a_1 <= b_2 < a_2 <= ...; "
            f"violated at positions {sorted(set(bad))[:_SHOWN_POSITIONS]}"
        )
