"""Random projections P: R^d -> R^D for subspace training (Li et al. 2018): dense Gaussian,
sparse, Fastfood (Le, Sarlos & Smola 2013) and identity; dense and sparse have unit-norm columns, Fastfood
in expectation; memory stated by ``extra_memory_bytes``. :func:`make_projection` builds one by
name from a seed."""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from genlab.errors import UserError
from genlab.probes.hadamard import hadamard_passes, next_power_of_two

PROJECTION_NAMES = ("dense", "sparse", "fastfood")


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes actually stored by a tensor (for sparse layouts: indices plus values)."""
    if tensor.layout == torch.sparse_csr:
        parts = (tensor.crow_indices(), tensor.col_indices(), tensor.values())
        return sum(part.numel() * part.element_size() for part in parts)
    if tensor.layout == torch.sparse_coo:
        return sum(p.numel() * p.element_size() for p in (tensor._indices(), tensor._values()))
    return tensor.numel() * tensor.element_size()


def _cpu_generator(seed: int) -> torch.Generator:
    """All projections draw on the CPU and then move, so one seed gives one P on every device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


class Projection(nn.Module):
    """A frozen linear map P: R^d -> R^D stored in buffers (never trained).

    ``forward(theta_d)`` takes a ``[d]`` tensor and returns ``P theta_d`` of shape ``[D]``,
    differentiable with respect to theta_d. Buffers follow ``.to(device)`` / ``.double()``.
    """

    def __init__(self, D: int, d: int) -> None:
        super().__init__()
        for label, value in (("D", D), ("d", d)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"projection size {label} must be a positive integer, got {label}={value!r}")
        self.D = D
        self.d = d

    def extra_memory_bytes(self) -> int:
        """Bytes held by the projection's buffers (what P costs on top of the model)."""
        return sum(_tensor_bytes(buffer) for buffer in self.buffers())

    def affine(self, theta_d: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``offset + P theta_d`` (shape [D]); subclasses may fuse the addition into the product."""
        return offset + self(theta_d)

    def _check_input(self, theta_d: torch.Tensor) -> None:
        if theta_d.shape != (self.d,):
            raise UserError(f"projection expects theta_d of shape ({self.d},), got {tuple(theta_d.shape)}")

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}"


class IdentityProjection(Projection):
    """P = I_D (d = D): subspace training then equals direct training of all parameters."""

    def __init__(self, D: int) -> None:
        super().__init__(D, D)

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        """Return theta_d unchanged (P theta_d with P = I)."""
        self._check_input(theta_d)
        return theta_d


class DenseProjection(Projection):
    """Dense Gaussian P in R^{D x d} with every column rescaled to unit Euclidean norm.

    Li et al. 2018, Sec. 2: entries i.i.d. N(0, 1) then each column divided by its norm, so
    a unit step along any coordinate of theta_d moves theta by exactly 1. Memory d * D floats.
    """

    def __init__(
        self,
        D: int,
        d: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(D, d)
        # Drawn in float32 whatever ``dtype`` is (P can be 1e8+ entries) and normalised after the
        # cast, so float32 and float64 projections of one seed agree up to rounding.
        matrix = torch.randn(D, d, generator=_cpu_generator(seed)).to(dtype)
        matrix.div_(matrix.norm(dim=0, keepdim=True))
        self.register_buffer("matrix", matrix.to(device))

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        """Return P theta_d, shape [D]."""
        self._check_input(theta_d)
        return torch.mv(self.matrix, theta_d)


class _SparseMatVec(torch.autograd.Function):
    """y = P x for a CSR matrix P; the backward uses a stored CSR copy of P^T (row-major fast path)."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, x: torch.Tensor, matrix: torch.Tensor, matrix_t: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(matrix, matrix_t)
        return torch.mv(matrix, x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        matrix, matrix_t = ctx.saved_tensors
        return _SparseMatVec.apply(grad_output, matrix_t, matrix), None, None


def _bernoulli_positions(count: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of successes among ``count`` independent Bernoulli(density) trials.

    Gaps between successes are i.i.d. Geometric(density), so drawing the gaps costs O(nnz)
    instead of O(count) (count = D * d can be 2e8 while nnz is only d * sqrt(D)).
    """
    if density >= 1.0:
        return torch.arange(count, dtype=torch.int64)
    pieces: list[torch.Tensor] = []
    last = -1
    expected = count * density
    chunk = int(expected + 6 * math.sqrt(expected + 1) + 16)
    while last < count:
        gaps = torch.empty(chunk, dtype=torch.float64).geometric_(density, generator=generator)
        positions = last + torch.cumsum(gaps.to(torch.int64), dim=0)
        pieces.append(positions)
        last = int(positions[-1])
    positions = torch.cat(pieces)
    return positions[positions < count]


def _fill_empty_columns(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, D: int, d: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Gaussian entry at a random row for each column that drew no nonzero."""
    empty = torch.nonzero(torch.bincount(cols, minlength=d) == 0).flatten()
    if not empty.numel():
        return rows, cols, values
    extra_rows = torch.randint(0, D, (empty.numel(),), generator=generator, dtype=torch.int64)
    extra_values = torch.randn(empty.numel(), generator=generator, dtype=torch.float64)
    return torch.cat([rows, extra_rows]), torch.cat([cols, empty]), torch.cat([values, extra_values])


def _csr_from_coordinates(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    order = torch.argsort(rows * shape[1] + cols)
    rows, cols, values = rows[order], cols[order], values[order]
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), dim=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, size=shape, check_invariants=True)


class SparseProjection(Projection):
    """Sparse random P in R^{D x d}: each entry is nonzero independently with probability s.

    Very sparse random projections (Li, Hastie & Church 2006) as used by Li et al. 2018:
    s defaults to 1/sqrt(D); nonzeros are Gaussian and every column is divided by its norm, so
    each has unit norm exactly, as the dense P (N(0, 1/(s D)) entries alone give unit norm only in
    expectation: 0.73-1.30 at D = 10^4). A column that drew no nonzero (probability (1 - s)^D)
    gets one Gaussian entry at a random row. P and P^T are stored as
    CSR matrices (memory O(nnz) = O(d sqrt(D))) and applied with sparse matrix-vector products.
    """

    def __init__(
        self,
        D: int,
        d: int,
        seed: int = 0,
        density: float | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(D, d)
        density = 1.0 / math.sqrt(D) if density is None else float(density)
        if not 0.0 < density <= 1.0:
            raise UserError(f"sparse projection density must be in (0, 1], got density={density}")
        self.density = density
        generator = _cpu_generator(seed)
        positions = _bernoulli_positions(D * d, density, generator)
        rows, cols = positions // d, positions % d
        gaussian = torch.randn(positions.numel(), generator=generator, dtype=torch.float64)
        rows, cols, gaussian = _fill_empty_columns(rows, cols, gaussian, D, d, generator)
        squared_norms = torch.zeros(d, dtype=torch.float64).index_add_(0, cols, gaussian * gaussian)
        values = (gaussian / squared_norms.sqrt()[cols]).to(dtype)
        matrix = _csr_from_coordinates(rows, cols, values, (D, d))
        matrix_t = _csr_from_coordinates(cols, rows, values, (d, D))
        self.register_buffer("matrix", matrix.to(device))
        self.register_buffer("matrix_t", matrix_t.to(device))

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros of P."""
        return int(self.matrix.values().numel())

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        """Return P theta_d, shape [D]."""
        self._check_input(theta_d)
        return _SparseMatVec.apply(theta_d, self.matrix, self.matrix_t)

    def to_dense(self) -> torch.Tensor:
        """P as a dense [D, d] tensor (for tests and small problems only)."""
        return self.matrix.to_dense()

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, density={self.density:.3g}, nnz={self.nnz}"


class FastfoodProjection(Projection):
    """Fastfood projection (Le, Sarlos & Smola 2013) in the form used by Li et al. 2018.

    Let L = 2^ceil(log2 D) and k = ceil(d / L). theta_d is zero-padded to length k L and cut
    into k blocks x_1..x_k of length L; block b gets its own independent draw of

        B_b   diagonal of random signs +-1         (``signs[b]``)
        H     the unnormalised L x L Walsh-Hadamard matrix (applied with :func:`fwht`)
        Pi_b  random permutation, (Pi v)_i = v[perm[b, i]]   (``perm[b]``)
        G_b   diagonal of i.i.d. N(0, 1)           (``gauss[b]``)
        S_b   scalar 1 / sqrt(D ||g_b||^2)          (``scale[b]``)

    and the output is  P theta_d = sum_b [S_b H G_b Pi_b H B_b x_b]_{first D entries}.

    Normalisation: every column of the untruncated L x L matrix H G Pi H B has squared norm
    exactly L ||g||^2 (H has orthogonal columns of squared norm L), and each of its entries
    has E[entry^2 / ||g||^2] = 1 (the cross terms vanish because g is sign-symmetric). Keeping
    D rows and scaling by S_b therefore gives columns with E ||P e_j||^2 = 1, and, since the
    signs B make distinct columns uncorrelated, E ||P x||^2 = ||x||^2 for every x.
    Cost: per padded entry two floats (B, G), three int64 indices (Pi, and the two gather
    indices derived from it) and two floats of reusable scratch, so O(k L) = O(D) memory for
    d <= D (about 10 MiB at D = 2e5) against 4 d D bytes for a dense P; O(k L log L) time.
    Each product runs one full-length transform and one of length L_in = 2^ceil(log2 d)
    (see ``_fastfood_forward``), and backward applies the exact adjoint P^T the same way.
    """

    def __init__(
        self,
        D: int,
        d: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(D, d)
        length = next_power_of_two(D)
        blocks = math.ceil(d / length)
        self.L = length
        self.blocks = blocks
        generator = _cpu_generator(seed)
        signs = torch.randint(0, 2, (blocks, length), generator=generator, dtype=torch.int64) * 2 - 1
        perm = torch.stack([torch.randperm(length, generator=generator) for _ in range(blocks)])
        gauss = torch.randn(blocks, length, generator=generator, dtype=torch.float64)
        scale = 1.0 / torch.sqrt(D * gauss.pow(2).sum(dim=1))
        self.register_buffer("signs", signs.to(device=device, dtype=dtype))
        self.register_buffer("perm", perm.to(device))
        self.register_buffer("gauss", gauss.to(device=device, dtype=dtype))
        self.register_buffer("scale", scale.to(device=device, dtype=dtype))
        # theta_d occupies only the first d of the L padded entries, so the transforms work on
        # short rows of length L_in = 2^ceil(log2 d) where they can (see _fastfood_forward).
        self.L_in = length if blocks > 1 else next_power_of_two(d)
        block_offsets = torch.arange(blocks, dtype=torch.int64).unsqueeze(1)
        forward_index = (perm % self.L_in + block_offsets * self.L_in).reshape(-1)
        inverse_index = torch.argsort((perm + block_offsets * length).reshape(-1))
        self.register_buffer("_forward_index", forward_index.to(device), persistent=False)
        self.register_buffer("_inverse_index", inverse_index.to(device), persistent=False)
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        """Return P theta_d, shape [D] (see the class docstring for P)."""
        self._check_input(theta_d)
        return _FastfoodProduct.apply(theta_d, self)

    def affine(self, theta_d: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """``offset + P theta_d``, the addition fused into the product's last step."""
        self._check_input(theta_d)
        return _FastfoodProduct.apply(theta_d, self, offset)

    def extra_memory_bytes(self) -> int:
        """Buffers plus the two [blocks, L] scratch tensors the transform reuses on every call."""
        return super().extra_memory_bytes() + 2 * self.blocks * self.L * self.gauss.element_size()

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, L={self.L}, blocks={self.blocks}"

    def _workspace(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two [blocks, L] scratch tensors, allocated once per dtype/device and then reused.

        A training step would otherwise allocate and free several multi-megabyte tensors, and
        on CPU the allocator hands such blocks back to the OS, so each step paid page faults
        that cost more than the transform itself. Consequently one projection must not be
        used from two threads at once.
        """
        scratch = self._scratch
        if scratch is None or scratch[0].dtype != like.dtype or scratch[0].device != like.device:
            shape = (self.blocks, self.L)
            scratch = (like.new_empty(shape), like.new_empty(shape))
            self._scratch = scratch
        return scratch


def _short_rows(
    scratch: tuple[torch.Tensor, torch.Tensor], blocks: int, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first blocks * length entries of each scratch tensor, viewed as [blocks, length]."""
    first, second = (buffer.view(-1)[: blocks * length].view(blocks, length) for buffer in scratch)
    return first, second


def _fastfood_forward(x: torch.Tensor, projection: FastfoodProjection,
                      offset: torch.Tensor | None = None) -> torch.Tensor:
    """P x = sum_b S_b [H G_b Pi_b H B_b x_b]_{:D} for x of shape [d]; returns a new [D] tensor
    (``offset + P x`` when an ``offset`` is given).

    With L_in = 2^ceil(log2 d) < L, the padded block is zero beyond L_in and
    H_L = H_{L/L_in} (x) H_{L_in} (Kronecker) gives H_L [v; 0] = (H_{L_in} v) tiled L/L_in times,
    because the first column of H_{L/L_in} is all ones. So the first transform is a short one,
    and Pi reads the tiled vector through the index perm mod L_in, never building it.
    """
    d, D, blocks, short = projection.d, projection.D, projection.blocks, projection.L_in
    scratch = projection._workspace(x)
    short_rows = _short_rows(scratch, blocks, short)
    padded = short_rows[0].view(-1)
    torch.mul(x, projection.signs.view(-1)[:d], out=padded[:d])
    padded[d:].zero_()
    mixed = hadamard_passes(short_rows[0], short_rows)
    permuted = scratch[1] if mixed is short_rows[0] else scratch[0]
    torch.index_select(mixed.view(-1), 0, projection._forward_index, out=permuted.view(-1))
    permuted.mul_(projection.gauss)
    spread = hadamard_passes(permuted, scratch)
    if offset is not None:
        return torch.addmv(offset, spread[:, :D].t(), projection.scale)
    return torch.mv(spread[:, :D].t(), projection.scale)


def _fastfood_adjoint(y: torch.Tensor, projection: FastfoodProjection) -> torch.Tensor:
    """P^T y = [B_b H Pi_b^T G_b H (S_b y zero-padded to L)]_b cut to d; returns a new [d] tensor.

    Only the first L_in outputs of the last H are kept, and by the same Kronecker identity as
    in the forward pass (H_L w)[:L_in] = H_{L_in} (sum of the L/L_in consecutive pieces of w),
    so the last transform is a sum plus a short transform.
    """
    d, D, blocks, short, length = projection.d, projection.D, projection.blocks, projection.L_in, projection.L
    scratch = projection._workspace(y)
    torch.mul(y.unsqueeze(0), projection.scale.unsqueeze(1), out=scratch[0][:, :D])
    scratch[0][:, D:].zero_()
    mixed = hadamard_passes(scratch[0], scratch)
    mixed.mul_(projection.gauss)
    unpermuted = scratch[1] if mixed is scratch[0] else scratch[0]
    torch.index_select(mixed.view(-1), 0, projection._inverse_index, out=unpermuted.view(-1))
    short_rows = _short_rows(scratch, blocks, short)
    folded = short_rows[1] if unpermuted is scratch[0] else short_rows[0]
    torch.sum(unpermuted.view(blocks, length // short, short), dim=1, out=folded)
    spread = hadamard_passes(folded, short_rows)
    return torch.mul(spread.view(-1)[:d], projection.signs.view(-1)[:d])


class _FastfoodProduct(torch.autograd.Function):
    """Fastfood product with its exact adjoint as backward: nothing is saved between passes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, projection: FastfoodProjection,  # noqa: D102
                offset: torch.Tensor | None = None) -> torch.Tensor:
        ctx.projection = projection
        return _fastfood_forward(x.detach(), projection, None if offset is None else offset.detach())

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):  # noqa: D102
        grads = (_FastfoodAdjoint.apply(grad_output, ctx.projection), None)
        if len(ctx.needs_input_grad) == 3:  # called with an offset
            grads += (grad_output if ctx.needs_input_grad[2] else None,)
        return grads


class _FastfoodAdjoint(torch.autograd.Function):
    """P^T y as an autograd function, so double backward (e.g. gradgradcheck, Hessians) works."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, projection: FastfoodProjection) -> torch.Tensor:  # noqa: D102
        ctx.projection = projection
        return _fastfood_adjoint(y.detach(), projection)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return _FastfoodProduct.apply(grad_output, ctx.projection), None


def make_projection(
    name: str,
    D: int,
    d: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Projection:
    """Build the projection called ``name`` ("dense", "sparse" or "fastfood") from R^d to R^D.

    Raises UserError for an unknown name (listing the valid ones) or unless 1 <= d <= D.
    """
    if name not in PROJECTION_NAMES:
        raise UserError(f"unknown projection {name!r}; valid projections: {', '.join(PROJECTION_NAMES)}")
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= max(D, 1):
        raise UserError(f"subspace dimension d must satisfy 1 <= d <= D, got d={d!r} with D={D}")
    if name == "dense":
        return DenseProjection(D, d, seed=seed, device=device, dtype=dtype)
    if name == "sparse":
        return SparseProjection(D, d, seed=seed, device=device, dtype=dtype)
    return FastfoodProjection(D, d, seed=seed, device=device, dtype=dtype)
