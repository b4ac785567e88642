"""Reading genlab's own ``.pt`` files (resume snapshots, round states) without running code from them.

Every such file is read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler,
which builds tensors and plain Python values (numbers, strings, lists, tuples, dicts) and refuses
every other global, so a crafted file in a run folder cannot execute anything. What it refuses
becomes one line naming the file and how to recover.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from genlab.errors import UserError


def _unpickler_detail(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    return (found.group(1) if found else text.splitlines()[0] if text else type(exc).__name__).strip()[:160]


def load_state(path: Path | str, what: str = "resume state") -> Any:
    """The contents of ``path`` (a file genlab wrote with ``torch.save``), loaded with ``weights_only=True``.

    Raises :class:`UserError` when the file needs more than tensors and plain values (written by an
    older genlab, or crafted) or cannot be read (truncated, not a torch file).
    """
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if "Unsupported global" in detail or "Unsupported class" in detail:
            raise UserError(f"{path}: {what} written by an older genlab or not by genlab ({detail}); it is not "
                            f"loaded, since that could run code; re-run with --force-new") from None
        raise UserError(f"{path}: {what} is corrupt ({detail}); re-run with --force-new to start over") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, TypeError, KeyError,
            IndexError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: {what} is unreadable ({reason}); re-run with --force-new to start over") from None
