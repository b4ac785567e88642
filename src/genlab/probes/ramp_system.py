"""The linear algebra of the 2n+d construction (Zhang et al. 2017, Theorem 1) used by
:mod:`genlab.probes.expressivity`: biases interleaved with the sorted projections, the lower
triangular ramp matrix M_ij = relu(a_i - b_j), its O(n) prefix-sum solve and condition number."""
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
    """Solve M v = y, M_ij = relu(a_i - b_j), by forward substitution with prefix sums.

    Requires interleaved b_1 < a_1 <= b_2 < a_2 <= ... (then M is lower triangular with positive
    diagonal). Row i reads sum_{j<=i} v_j (a_i - b_j) = a_i S1_i - S2_i with S1 = cumsum(v) and
    S2 = cumsum(v b), hence v_i = (y_i - a_i S1_{i-1} + S2_{i-1}) / (a_i - b_i): O(n) steps,
    each vectorised over the k columns of y. Projections and biases are shifted by the median
    projection first (M only depends on differences), which keeps a_i S1 - S2 free of the
    cancellation a large common offset would cause. Returns v with the shape of y_sorted.
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
    Y = y.reshape(len(a_sorted), -1)
    diagonal = a_sorted - b
    shift = a_sorted[len(a_sorted) // 2] if len(a_sorted) else 0.0
    a_shifted, b_shifted = a_sorted - shift, b - shift
    V = np.empty_like(Y)
    s1 = np.zeros(Y.shape[1])
    s2 = np.zeros(Y.shape[1])
    for i in range(len(a_sorted)):
        v_i = (Y[i] - a_shifted[i] * s1 + s2) / diagonal[i]
        V[i] = v_i
        s1 += v_i
        s2 += v_i * b_shifted[i]
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
