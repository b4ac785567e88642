"""Random-subspace training of any ``torch.nn.Module`` (Li et al. 2018).

Li, Farkhoor, Liu & Yosinski, "Measuring the Intrinsic Dimension of Objective Landscapes"
(ICLR 2018) train a network with D parameters only inside a random d-dimensional affine
subspace of its parameter space::

    theta = theta_0 + P theta_d,      theta_0 in R^D and P in R^{D x d} frozen,

where theta_d in R^d starts at zero and is the only trained tensor. The intrinsic dimension
d_int90 is the smallest d that reaches 90% of the directly trained baseline.

This module provides the projections P (dense Gaussian, sparse, Fastfood, identity), a fast
Walsh-Hadamard transform used by Fastfood, and :class:`SubspaceModel`, which wraps a user
module without rewriting any of its layers: its forward pass builds theta and calls
``torch.func.functional_call`` on the untouched module.

Example::

    net = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))
    model = SubspaceModel(net, d=750, projection="fastfood", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)   # only theta_d is trained
    loss = torch.nn.functional.cross_entropy(model(x), y)
    trained_net = model.materialize()                          # plain module for evaluation
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any, Iterator

import torch
from torch import nn

from genlab.errors import UserError

__all__ = [
    "Projection",
    "DenseProjection",
    "SparseProjection",
    "FastfoodProjection",
    "IdentityProjection",
    "PROJECTION_NAMES",
    "make_projection",
    "fwht",
    "SubspaceModel",
]

PROJECTION_NAMES = ("dense", "sparse", "fastfood")


# --------------------------------------------------------------------------------------
# Fast Walsh-Hadamard transform
# --------------------------------------------------------------------------------------


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


# Bits of the transform handled per pass. A pass costs about the same for radix 2, 4 or 8
# (it is one sweep over memory), so radix 8 needs a third of the sweeps of radix 2.
_MAX_BITS_PER_PASS = 3


def _radix_plan(length: int) -> tuple[int, ...]:
    """Radices (powers of two, at most 2^3) whose product is ``length``, split as evenly as possible."""
    bits = int(math.log2(length))
    passes = max(1, math.ceil(bits / _MAX_BITS_PER_PASS))
    base, extra = divmod(bits, passes)
    return tuple(1 << (base + (1 if i < extra else 0)) for i in range(passes))


@functools.lru_cache(maxsize=64)
def _butterfly_kernel(radix: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """H_radix, i.e. log2(radix) radix-2 butterfly stages fused into one radix x radix +-1 kernel."""
    kernel = torch.ones(1, 1, dtype=dtype)
    while kernel.shape[0] < radix:
        kernel = torch.cat((torch.cat((kernel, kernel), 1), torch.cat((kernel, -kernel), 1)), 0)
    return kernel.to(device)


def _hadamard_passes(source: torch.Tensor, buffers: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of every row of a contiguous ``[n, L]`` tensor.

    Self-sorting (Stockham) radix-r butterflies: write the row index in mixed radix with digit
    0 least significant. A pass views the current row as ``[L / r, r]``, applies the radix-r
    butterfly kernel to the lowest digit and writes the result as ``[r, L / r]``, i.e. with that
    digit moved to the top. H_L is the Kronecker product of the per-digit kernels, so after one
    pass per digit every digit is transformed and back in its original place: no bit-reversal,
    O(L log L) work, log_r(L) sweeps, each a single batched matrix product over the whole row
    (the fast path on CPU and GPU, unlike strided elementwise butterflies).

    Passes ping-pong between the two ``buffers`` (each ``[n, L]``); ``source`` is read once and
    may be one of them. Returns the buffer (or for L = 1, ``source``) holding the result.
    """
    rows, length = source.shape
    current = source
    for radix in _radix_plan(length) if length > 1 else ():
        target = buffers[1] if current is buffers[0] else buffers[0]
        kernel = _butterfly_kernel(radix, current.dtype, current.device)
        if rows == 1:  # a plain GEMM is ~15% faster than a batch of one
            lowest_digit_last = current.view(length // radix, radix).t()
            torch.mm(kernel, lowest_digit_last, out=target.view(radix, length // radix))
        else:
            lowest_digit_last = current.view(rows, length // radix, radix).transpose(1, 2)
            torch.matmul(kernel, lowest_digit_last, out=target.view(rows, radix, length // radix))
        current = target
    return current


def _walsh_hadamard_rows(rows: torch.Tensor) -> torch.Tensor:
    """H applied to each row of a contiguous [n, L] tensor, into newly allocated memory."""
    buffers = (torch.empty_like(rows), torch.empty_like(rows))
    result = _hadamard_passes(rows, buffers)
    return result if result is not rows else rows.clone()


class _WalshHadamard(torch.autograd.Function):
    """y = H x along the last axis. H is symmetric, so the backward pass is again H."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        length = x.shape[-1]
        rows = x.detach().reshape(-1, length).contiguous()
        return _walsh_hadamard_rows(rows).view(x.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _WalshHadamard.apply(grad_output)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Fast Walsh-Hadamard transform along the last axis: ``y = H_L x`` with H_L unnormalised.

    H_1 = [1], H_2k = [[H_k, H_k], [H_k, -H_k]] (Sylvester order, the same matrix as
    ``scipy.linalg.hadamard``), so entries are +-1 and ``fwht(fwht(x)) = L x``. Runs in
    O(L log L) time as log2(L) radix-2 butterfly stages over reshaped views, fused three at a
    time into self-sorting radix-8 passes (see ``_hadamard_passes``; no L x L matrix is ever
    formed, the largest constant is the 8 x 8 butterfly kernel). Works on any leading batch
    shape, floating dtype and device, and is differentiable (to any order) through a custom
    autograd function whose backward is again H.

    Raises UserError if the last axis length L is not a power of two or x is not floating.
    """
    if x.dim() == 0:
        raise UserError("fwht needs a tensor with at least one axis, got a scalar")
    length = x.shape[-1]
    if not _is_power_of_two(length):
        raise UserError(f"fwht needs the last axis length to be a power of two, got L={length}")
    if not x.is_floating_point():
        raise UserError(f"fwht needs a floating-point tensor, got dtype={x.dtype}")
    return _WalshHadamard.apply(x)


# --------------------------------------------------------------------------------------
# Projections R^d -> R^D
# --------------------------------------------------------------------------------------


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
    s defaults to 1/sqrt(D); nonzeros are N(0, 1/(s D)), so every column has
    E ||P e_j||^2 = D * s * 1/(s D) = 1 (unit norm in expectation). P and P^T are stored as
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
        values = (gaussian / math.sqrt(density * D)).to(dtype)
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
        length = _next_power_of_two(D)
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
        self.L_in = length if blocks > 1 else _next_power_of_two(d)
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
    mixed = _hadamard_passes(short_rows[0], short_rows)
    permuted = scratch[1] if mixed is short_rows[0] else scratch[0]
    torch.index_select(mixed.view(-1), 0, projection._forward_index, out=permuted.view(-1))
    permuted.mul_(projection.gauss)
    spread = _hadamard_passes(permuted, scratch)
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
    mixed = _hadamard_passes(scratch[0], scratch)
    mixed.mul_(projection.gauss)
    unpermuted = scratch[1] if mixed is scratch[0] else scratch[0]
    torch.index_select(mixed.view(-1), 0, projection._inverse_index, out=unpermuted.view(-1))
    short_rows = _short_rows(scratch, blocks, short)
    folded = short_rows[1] if unpermuted is scratch[0] else short_rows[0]
    torch.sum(unpermuted.view(blocks, length // short, short), dim=1, out=folded)
    spread = _hadamard_passes(folded, short_rows)
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


# --------------------------------------------------------------------------------------
# The subspace-wrapped model
# --------------------------------------------------------------------------------------


class SubspaceModel(nn.Module):
    """Train any module in the random affine subspace theta = theta_0 + P theta_d (Li et al. 2018).

    At construction the module's trainable parameters (those with ``requires_grad``) are
    flattened, in ``named_parameters()`` order, into theta_0 in R^D (a frozen buffer copy).
    The only trainable tensor is ``theta_d`` in R^d, initialised to zero, so training starts
    exactly at the module's initial weights. ``forward(*args, **kwargs)`` computes theta,
    splits it back into the parameter shapes and calls
    ``torch.func.functional_call(module, params, args, kwargs)``; the module's layers are not
    rewritten, its buffers (e.g. BatchNorm running statistics) and frozen parameters are used
    and updated exactly as in a direct forward pass, and ``train()`` / ``eval()`` reach it.

    ``projection`` is a name accepted by :func:`make_projection` or a ready
    :class:`Projection` whose sizes match (e.g. ``IdentityProjection(D)``). The projection is
    built on the device and dtype of the module's parameters.

    ``parameters()`` yields only theta_d, so ``torch.optim.SGD(model.parameters(), ...)``
    trains the subspace coordinates. :meth:`materialize` returns an independent copy of the
    module holding theta, for evaluation or for measures that need a plain network.
    """

    def __init__(
        self, module: nn.Module, d: int, projection: str | Projection = "dense", seed: int = 0
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise UserError(f"SubspaceModel wraps a torch.nn.Module, got {type(module).__name__}")
        trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not trainable:
            raise UserError(
                "SubspaceModel: the module has no trainable parameters (none with requires_grad=True)"
            )
        dtypes = sorted({str(p.dtype) for _, p in trainable})
        devices = sorted({str(p.device) for _, p in trainable})
        if len(dtypes) > 1 or len(devices) > 1:
            raise UserError(
                "SubspaceModel needs all trainable parameters on one dtype and device, "
                f"got dtypes={dtypes}, devices={devices}"
            )
        self.module = module
        self._names = [name for name, _ in trainable]
        self._shapes = [tuple(p.shape) for _, p in trainable]
        self._numels = [p.numel() for _, p in trainable]
        theta_0 = torch.cat([p.detach().reshape(-1) for _, p in trainable]).clone()
        self.register_buffer("theta_0", theta_0)
        self.projection = self._build_projection(projection, theta_0.numel(), d, seed, theta_0)
        self.theta_d = nn.Parameter(torch.zeros(d, dtype=theta_0.dtype, device=theta_0.device))

    @staticmethod
    def _build_projection(
        projection: str | Projection, D: int, d: int, seed: int, theta_0: torch.Tensor
    ) -> Projection:
        if isinstance(projection, Projection):
            if (projection.D, projection.d) != (D, d):
                raise UserError(
                    f"projection maps R^{projection.d} -> R^{projection.D} but the model needs d={d}, D={D}"
                )
            return projection
        if not isinstance(projection, str):
            names = ", ".join(PROJECTION_NAMES)
            raise UserError(f"projection must be a name ({names}) or a Projection, got {projection!r}")
        return make_projection(projection, D, d, seed=seed, device=theta_0.device, dtype=theta_0.dtype)

    @property
    def D(self) -> int:
        """Number of trainable parameters of the wrapped module."""
        return int(self.theta_0.numel())

    @property
    def d(self) -> int:
        """Dimension of the trained subspace."""
        return int(self.theta_d.numel())

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """Only theta_d: the wrapped module's own parameters are replaced by theta in forward."""
        yield (f"{prefix}.theta_d" if prefix else "theta_d"), self.theta_d

    def theta(self) -> torch.Tensor:
        """Current full parameter vector theta_0 + P theta_d (shape [D], differentiable in theta_d)."""
        return self.projection.affine(self.theta_d, self.theta_0)

    def parameter_dict(self) -> dict[str, torch.Tensor]:
        """theta split into the wrapped module's trainable parameters, keyed by their names."""
        chunks = torch.split(self.theta(), self._numels)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self._names, chunks, self._shapes)}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped module with its trainable parameters set to theta_0 + P theta_d."""
        return torch.func.functional_call(self.module, self.parameter_dict(), args, kwargs)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """An independent deep copy of the wrapped module with theta loaded into its parameters.

        Buffers (e.g. BatchNorm statistics) and the train/eval mode are copied as they are now.
        """
        copied = copy.deepcopy(self.module)
        for name, value in self.parameter_dict().items():
            copied.get_parameter(name).copy_(value)
        return copied

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}"
