"""Data augmentation for training batches: random translations (shifts / crops).

Zhang et al. 2017 (Table 1) count data augmentation among the explicit regularizers: random
crops of a padded image, i.e. random translations by up to a few pixels. ``RandomShift`` is that
transform for any channel-first batch with one or two spatial axes (MNIST-1D signals ``[B, C, L]``
and images ``[B, C, H, W]``). It is an :data:`genlab.engine.Augment`: the engine calls it on each
training batch of a model with a seeded generator (``ModelJob.augment``), so the shifts are a pure
function of the model's seed, the epoch and the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.errors import UserError

PadMode = Literal["replicate", "zeros"]


@dataclass(frozen=True)
class RandomShift:
    """Translate every example by its own random offset in ``[-max_shift, max_shift]`` per axis.

    Equivalent to padding each spatial axis by ``max_shift`` on both sides and cropping a window
    of the original size at a uniformly random position (the "random crop" of Zhang et al.). The
    padding repeats the edge value (``replicate``: the blank MNIST border stays blank, a 1-D signal
    keeps its end level) or is zero (``zeros``). ``hflip`` then mirrors each example along its
    last axis with probability 1/2 (the crop + flip of He et al. 2016's CIFAR training). Offsets and
    flips are drawn from the CPU generator given at each call (flips after the offsets, so
    ``hflip=False`` draws exactly what it did before flips existed); the result has the input's
    shape, dtype and device.
    """

    max_shift: int
    pad: PadMode = "replicate"
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.max_shift < 0:
            raise UserError(f"max_shift: must be >= 0, got {self.max_shift}")
        if self.pad not in ("replicate", "zeros"):
            raise UserError(f"pad: must be 'replicate' or 'zeros', got {self.pad!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        spatial = x.dim() - 2
        if spatial not in (1, 2):
            raise UserError(f"RandomShift needs [B, C, L] or [B, C, H, W] inputs, got shape {tuple(x.shape)}")
        s = self.max_shift
        if x.shape[0] == 0 or (s == 0 and not self.hflip):
            return x
        if s > 0:
            offsets = torch.randint(0, 2 * s + 1, (x.shape[0], spatial), generator=generator).to(x.device)
            x = _crop(_pad(x, s, spatial, self.pad), offsets, x.shape[2:])
        if self.hflip:
            flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
        return x


def _pad(x: torch.Tensor, s: int, spatial: int, mode: PadMode) -> torch.Tensor:
    widths = (s, s) * spatial
    if mode == "zeros":
        return F.pad(x, widths)
    return F.pad(x, widths, mode="replicate")


def _crop(padded: torch.Tensor, offsets: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """``out[b, c, i, j] = padded[b, c, offsets[b, 0] + i, offsets[b, 1] + j]`` (1-D alike)."""
    b, c = padded.shape[:2]
    batch = torch.arange(b, device=padded.device)
    channel = torch.arange(c, device=padded.device)
    if len(size) == 1:
        pos = offsets[:, 0, None] + torch.arange(size[0], device=padded.device)        # [B, L]
        return padded[batch[:, None, None], channel[None, :, None], pos[:, None, :]]
    rows = offsets[:, 0, None] + torch.arange(size[0], device=padded.device)           # [B, H]
    cols = offsets[:, 1, None] + torch.arange(size[1], device=padded.device)           # [B, W]
    return padded[batch[:, None, None, None], channel[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
