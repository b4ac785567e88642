"""Minimum-norm least squares through the smaller Gram matrix, in float64 (the solver of
:mod:`genlab.probes.random_features`).

W = Phi^+ Y (minimum Frobenius norm among least-squares solutions), or with ridge lambda > 0
the ridge solution (Phi^T Phi + lambda I)^-1 Phi^T Y = Phi^T (Phi Phi^T + lambda I)^-1 Y. The
positive semi-definite solve is a Cholesky factorization when LAPACK's condition estimate allows
it, else a truncated eigendecomposition (or a floored Cholesky).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genlab.probes.arguments import as_matrix, as_targets, require_choice, require_nonnegative_finite, require_rcond

_CHOLESKY_SAFETY = 10.0


def min_norm_solve(
    Phi: Any,
    Y: Any,
    ridge: float = 0.0,
    rcond: float | None = None,
    ill_conditioned: str = "truncate",
) -> np.ndarray:
    """Minimum-norm least squares W = Phi^+ Y, or ridge (Phi^T Phi + ridge I)^-1 Phi^T Y, float64.

    Uses the smaller Gram matrix: G = Phi^T Phi when Phi has no more columns than rows
    (W = (G + ridge I)^+ Phi^T Y), else G = Phi Phi^T (W = Phi^T (G + ridge I)^+ Y); both are
    exact identities for the pseudo-inverse. The pseudo-inverse of the symmetric G + ridge I
    keeps the eigenvalues lambda_i > rcond * lambda_max and drops the rest (treats them as
    zero), with rcond = size(G) * machine epsilon by default: below that, float64 Gram
    eigenvalues are round-off (a Gram cutoff rcond is a singular-value cutoff sqrt(rcond)).
    When LAPACK's condition estimate shows that no eigenvalue can fall below the cutoff, the
    same solution is computed by Cholesky instead (much cheaper than the eigendecomposition).
    ill_conditioned="floor" replaces the eigendecomposition, when it would be needed, by a
    Cholesky solve of G + ridge I + delta I with delta = rcond * |G + ridge I|_1 (>= rcond *
    lambda_max): a Tikhonov filter at the same round-off level instead of a hard step.

    Y may be [n] or [n, K]; W has shape [columns] or [columns, K] accordingly.
    """
    Phi = as_matrix(Phi, "Phi")
    Y_matrix, was_vector = as_targets(Y, Phi.shape[0], "Y")
    require_nonnegative_finite(ridge, "ridge")
    require_choice(ill_conditioned, "ill_conditioned", ("truncate", "floor"))
    n_rows, n_columns = Phi.shape
    if n_columns <= n_rows:
        gram = symmetric_gram(Phi, rows=False)
        W = solve_psd(gram, Phi.T @ Y_matrix, ridge, rcond, ill_conditioned).X
    else:
        gram = symmetric_gram(Phi, rows=True)
        alpha = solve_psd(gram, Y_matrix, ridge, rcond, ill_conditioned).X
        W = Phi.T @ alpha
    return W[:, 0] if was_vector else W


@dataclass(frozen=True)
class PSDSolution:
    """Result of a positive semi-definite solve: X, how it was computed, and any floor added."""

    X: np.ndarray
    solver: str  # "cholesky", "eigh" (hard cutoff) or "cholesky+floor"
    floor: float  # relative floor delta / |A|_1 added to the diagonal (0 when none)


def solve_psd(
    gram: np.ndarray,
    B: np.ndarray,
    ridge: float,
    rcond: float | None,
    ill_conditioned: str = "truncate",
) -> PSDSolution:
    """(gram + ridge I)^+ B for symmetric positive semi-definite gram.

    Well-conditioned (no eigenvalue can be below the cutoff): Cholesky, exact. Otherwise
    ill_conditioned="truncate" drops eigenvalues <= cutoff * lambda_max (eigh, O(10 n^3)),
    "floor" solves (A + delta I)^-1 B by Cholesky with delta = cutoff * |A|_1 >= cutoff *
    lambda_max (raised tenfold until the factorization succeeds): Tikhonov filtering
    lambda / (lambda + delta) instead of a step at the same round-off level.
    """
    size = gram.shape[0]
    require_rcond(rcond)
    cutoff = size * np.finfo(np.float64).eps if rcond is None else float(rcond)
    shifted = add_to_diagonal(gram, ridge) if ridge > 0.0 else gram
    anorm = _one_norm(shifted)
    if anorm == 0.0:
        return PSDSolution(np.zeros((size, B.shape[1])), "cholesky", 0.0)
    solution = _cholesky_solve_if_well_conditioned(shifted, B, anorm, cutoff)
    if solution is not None:
        return PSDSolution(solution, "cholesky", 0.0)
    if ill_conditioned == "truncate":
        return PSDSolution(_eigen_solve(shifted, B, cutoff), "eigh", 0.0)
    return _floored_cholesky_solve(shifted, B, anorm, max(cutoff, np.finfo(np.float64).eps))


def _cholesky_solve_if_well_conditioned(
    A: np.ndarray, B: np.ndarray, anorm: float, cutoff: float
) -> np.ndarray | None:
    """Cholesky solve of A X = B, or None if an eigenvalue of A may lie below cutoff * lambda_max.

    For symmetric A, cond_2(A) <= cond_1(A); LAPACK's dpocon estimate of cond_1 is a lower
    bound that is rarely off by more than a small factor, so we demand a 10x margin.
    """
    from scipy.linalg import lapack  # scipy.linalg is imported where used: ~0.16 s at start-up

    factor = _cholesky_lower(A)
    if factor is None:
        return None
    rcond_estimate, info = lapack.dpocon(factor, anorm, uplo="L")
    if info != 0 or not rcond_estimate > _CHOLESKY_SAFETY * cutoff:
        return None
    X, info = lapack.dpotrs(factor, B, lower=1)
    return X if info == 0 else None


def _floored_cholesky_solve(
    A: np.ndarray, B: np.ndarray, anorm: float, relative: float
) -> PSDSolution:
    """(A + delta I)^-1 B by Cholesky, delta = relative * |A|_1, raised tenfold on failure."""
    from scipy.linalg import lapack

    for _ in range(8):
        factor = _cholesky_lower(add_to_diagonal(A, relative * anorm))
        if factor is not None:
            X, info = lapack.dpotrs(factor, B, lower=1)
            if info == 0:
                return PSDSolution(X, "cholesky+floor", relative)
        relative *= 10.0
    raise ArithmeticError(
        f"Cholesky failed even with a floor of {relative / 10:.0e} |A|_1: the Gram is not PSD"
    )


def _cholesky_lower(A: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor L (A = L L^T) in Fortran order for LAPACK, or None if A is not PD.

    Factorized by torch (MKL): OpenBLAS's threaded dpotrf ran 6x slower than single-threaded
    on a loaded two-core machine, MKL's did not. torch returns L column-major already.
    """
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(A), upper=False)
    if int(info) != 0:
        return None
    return np.asfortranarray(factor.numpy())


def add_to_diagonal(A: np.ndarray, value: float) -> np.ndarray:
    shifted = A.copy()
    diagonal = np.arange(A.shape[0])
    shifted[diagonal, diagonal] += value
    return shifted


def _one_norm(A: np.ndarray, block: int = 512) -> float:
    """max_j sum_i |A_ij| (column blocks keep the temporary small)."""
    return max(
        float(np.abs(A[:, start : start + block]).sum(axis=0).max())
        for start in range(0, A.shape[1], block)
    )


def _eigen_solve(A: np.ndarray, B: np.ndarray, cutoff: float) -> np.ndarray:
    """Truncated pseudo-inverse U diag(1 / lambda_i) U^T B over lambda_i > cutoff * lambda_max."""
    from scipy.linalg import eigh

    eigenvalues, eigenvectors = eigh(A, driver="evd", check_finite=False)
    largest = float(eigenvalues[-1])
    if largest <= 0.0:
        return np.zeros((A.shape[0], B.shape[1]))
    kept = eigenvalues > cutoff * largest
    basis = eigenvectors[:, kept]
    return basis @ ((basis.T @ B) / eigenvalues[kept][:, None])


def symmetric_gram(Phi: np.ndarray, rows: bool) -> np.ndarray:
    """Phi Phi^T (rows=True) or Phi^T Phi, computed with a symmetric rank-k update (dsyrk)."""
    from scipy.linalg import blas

    size = Phi.shape[0] if rows else Phi.shape[1]
    upper = np.zeros((size, size), order="F")
    # Phi is C-ordered, so Phi.T is the Fortran-ordered view BLAS reads without a copy.
    upper = blas.dsyrk(
        1.0, np.ascontiguousarray(Phi).T, beta=0.0, c=upper, trans=1 if rows else 0, overwrite_c=1
    )
    return symmetrize_upper(upper)


def symmetrize_upper(upper: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Full symmetric matrix from one whose strictly lower triangle is ZERO (dsyrk leaves it so)."""
    full = np.add(upper, upper.T, out=out)
    diagonal = np.arange(full.shape[0])
    full[diagonal, diagonal] *= 0.5
    return full
