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
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    detail = found.group(1) if found else (text.splitlines()[0] if text else type(exc).__name__)
    return detail.split(" was not an allowed global")[0].strip()[:160]


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
        raise UserError(f"{path}: {what} written by an older genlab, or not by genlab ({_unpickler_detail(exc)}); "
                        f"it is not loaded, since that could run code; re-run with --force-new") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, TypeError, KeyError,
            IndexError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: {what} is unreadable ({reason}); re-run with --force-new to start over") from None


def check_resume_files(unit_dir: Path | str) -> None:
    """Refuse a unit folder whose ``.pt`` resume files cannot be read safely, before the unit runs.

    Every ``*.pt`` file there (``.pt.tmp`` leftovers of a killed write are ignored) must load with
    ``weights_only=True``; the first that does not is reported as :func:`load_state` does.
    """
    for path in sorted(Path(unit_dir).glob("*.pt")):
        load_state(path)
