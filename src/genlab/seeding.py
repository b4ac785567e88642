"""Seeds derived from a seed and names: the one place genlab turns "seed 3, the label noise of
p = 0.2" into a number.

Every random choice of a study is drawn from a generator seeded by a derivation below, so a spec's
seeds fix all of a run's numbers, and two choices never share a stream by accident (the names
differ). The derivations are stable across processes, platforms and Python versions (no
``hash()``, which is salted per process for strings).

* :func:`derive_seed` - names to a 32-bit seed: SHA-256 of the parts joined by ``:``. The studies
  and probes use it for everything they draw themselves (corruptions, initializations, data
  orders, projections, pruning controls).
* :func:`spawn_seeds` and :func:`seeded_generator` - numpy ``SeedSequence`` streams, for a
  probe that needs many independent draws from one seed (sharpness noise draws; layer
  re-randomizations). They are different functions of their inputs than :func:`derive_seed`
  (results depend on which one is used), so they keep their own names.

The engine keeps its own per-epoch derivations (``genlab.engine.epoch_seed``, ``augment_seed``:
63-bit, from ``seed:epoch``), which define the data order of every model.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 32-bit seed from ``parts``: the first four bytes (little-endian) of SHA-256 of
    ``":".join(map(str, parts))``. ``derive_seed(0, "labels", 0.2)`` names its use."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def spawn_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent 32-bit seeds from one: numpy's ``SeedSequence(seed)`` state."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


def seeded_generator(*entropy: int) -> torch.Generator:
    """A CPU torch generator for the stream ``SeedSequence(entropy)`` (e.g. seed, layer, draw):
    independent streams for distinct tuples of non-negative integers."""
    state = np.random.SeedSequence(list(entropy)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))
