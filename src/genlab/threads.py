"""PyTorch's intra-op thread count for a block of work, restored afterwards."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def intra_op_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (None: leave them), then restore the count,
    also when the block raises."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
