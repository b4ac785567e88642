"""The fast Walsh-Hadamard transform (unnormalized), with its own autograd rule: the fast
multiplication by the Hadamard matrix H_L inside the Fastfood projection (Le, Sarlos & Smola 2013)
of :mod:`genlab.probes.projections`. Radix-8 butterfly passes keep it one sweep over memory per
three bits of the length."""
from __future__ import annotations

import functools
import math
from typing import Any

import torch

from genlab.errors import UserError


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def next_power_of_two(n: int) -> int:
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


def hadamard_passes(source: torch.Tensor, buffers: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
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
    result = hadamard_passes(rows, buffers)
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
    time into self-sorting radix-8 passes (see ``hadamard_passes``; no L x L matrix is ever
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
