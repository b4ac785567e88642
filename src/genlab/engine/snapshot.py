"""Resume snapshots: the trainer's state in a file that loading can never turn into code.

A snapshot holds tensors and plain Python values (numbers, strings, booleans, None, lists, dicts)
only, and is read with ``torch.load(..., weights_only=True)``, whose unpickler refuses any other
object: a crafted file cannot run code when a run is resumed. Writes go to a temporary file that
replaces the old snapshot atomically, so a kill or a full disk leaves the previous one intact.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from genlab.errors import UserError

FORMAT = "genlab-snapshot"
VERSION = 3  # 3: parameters, optimizer state and checkpoints as each model's own entries


def save_snapshot(state: dict, path: Path, *, what: str = "the resume snapshot") -> None:
    """Write ``state`` to ``path`` atomically (a full disk leaves the previous file intact);
    ``what`` names the file in the error line."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {what} {path}: {exc}") from None


RESUME_RECOVERY = "delete it, or re-run with --force-new to start the run afresh"


def load_snapshot(path: Path, *, what: str = "the resume snapshot", recover: str = RESUME_RECOVERY) -> dict:
    """The state saved by :func:`save_snapshot`; a file that is not one (corrupt, truncated,
    written by an older genlab, or holding objects other than tensors and plain values) is refused
    with one line that names it as ``what`` and says how to ``recover``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{what} {path} holds objects other than tensors and plain values "
                        f"(written by an older genlab, or not by genlab): refused without loading it "
                        f"({str(exc).splitlines()[0][:200]}); {recover}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise UserError(f"{what} {path} cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else 'corrupt'}); {recover}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{what} {path} was written by an older genlab; {recover}")
    if state.get("version") != VERSION:
        raise UserError(f"{what} {path} has format version {state.get('version')!r}, "
                        f"this genlab reads version {VERSION}; {recover}")
    return state
