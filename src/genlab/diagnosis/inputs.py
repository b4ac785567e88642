"""What ``genlab diagnose`` reads: the user's model factory, a weights file, data, and checks
that they fit together. Every bad input is one line (UserError) naming the file or value.

Weights and records are read with ``torch.load(..., weights_only=True)`` only: a data file can
hold tensors and plain values, never code (issue #22). The factory is the user's own Python code
and is imported by design.
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genlab.data.tensors import as_labelled_tensors
from genlab.errors import UserError
from genlab.recorder import KIND, check_state_dict, unwrap

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_factory(path: str) -> Callable[[], nn.Module]:
    """``"pkg.module:factory"`` -> the callable (the current folder is importable, as with ``python -m``)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"--model {path!r}: expected pkg.module:factory (a function returning the untrained model)")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise UserError(f"--model {path!r}: cannot import {module_name} ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise UserError(f"--model {path!r}: {module_name} has no attribute {attribute!r}")
    if not callable(factory):
        raise UserError(f"--model {path!r}: {attribute} is not callable")
    return factory


def build(factory: Callable[[], nn.Module], what: str) -> nn.Module:
    try:
        model = factory()
    except Exception as exc:  # the user's factory
        raise UserError(f"{what}: calling the factory failed ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{what}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return unwrap(model)


def build_seeded(factory: Callable[[], nn.Module], seed: int, what: str = "--model") -> nn.Module:
    """A fresh model from ``factory`` with torch's random stream set to ``seed`` while it runs (so
    its initialization is fixed by the seed), the caller's random stream left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(factory, what)


def read_tensor_file(path: Path, what: str) -> object:
    """``torch.load(path, weights_only=True)``; a file needing more than tensors and plain values is
    refused without running anything."""
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{what} {path} holds objects other than tensors and plain values: refused without "
                        f"loading it ({_first_line(exc)}); save model.state_dict() instead") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise UserError(f"{what} {path} cannot be read ({type(exc).__name__}: {_first_line(exc)})") from None


def state_dict_of(content: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside what a weights file holds: a state_dict, a genlab.Recorder file, or a
    checkpoint dict with a ``state_dict`` / ``model_state_dict`` / ``model`` entry. Names saved from
    a DataParallel or compiled model lose their ``module.`` / ``_orig_mod.`` prefix."""
    if isinstance(content, dict) and content.get("kind") == KIND:
        content = content.get("state_dict")
    elif isinstance(content, dict) and not any(isinstance(v, torch.Tensor) for v in content.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or not all(isinstance(k, str) for k in content):
        raise UserError(f"--weights {path}: holds no state_dict (save it with torch.save(model.state_dict(), "
                        f"PATH))")
    state = dict(content)
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """``model`` with the weights of ``path`` loaded (checked entry by entry against it first)."""
    path = Path(path)
    state = state_dict_of(read_tensor_file(path, "--weights"), path)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    check_state_dict(state, expected, f"--weights {path}")
    model.load_state_dict(state)
    return model


def load_npz(path: str | Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train and test sets from an ``.npz`` with arrays x_train, y_train, x_test, y_test (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in NPZ_KEYS if k not in arrays.files]
            if missing:
                raise UserError(f"--data {path}: lacks the arrays {', '.join(missing)} (it holds "
                                f"{', '.join(arrays.files) or 'none'}; expected {', '.join(NPZ_KEYS)})")
            values = {k: arrays[k] for k in NPZ_KEYS}
    except UserError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"--data {path}: not a readable .npz of numeric arrays ({_first_line(exc)})") from None
    for key in ("y_train", "y_test"):
        y = values[key]
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                               or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))):
            raise UserError(f"--data {path}: {key} must be a 1-D array of integer class labels, got "
                            f"shape {y.shape} dtype {y.dtype}")
    for key in ("x_train", "x_test"):
        if not np.issubdtype(values[key].dtype, np.number):
            raise UserError(f"--data {path}: {key} must be numeric, got dtype {values[key].dtype}")
    return ((torch.from_numpy(values["x_train"]), torch.from_numpy(values["y_train"].astype(np.int64))),
            (torch.from_numpy(values["x_test"]), torch.from_numpy(values["y_test"].astype(np.int64))))


def check_data(model: nn.Module, train: object, test: object) -> tuple[tuple, tuple, int]:
    """Both sets as (float inputs, int64 labels) that ``model`` takes, and its number of classes:
    inputs of the wrong shape, non-logit outputs and labels outside [0, classes) are refused."""
    checked, classes = [], None
    for data, what in ((train, "train_data"), (test, "test_data")):
        x, y = as_labelled_tensors(data, what)
        if not torch.isfinite(x).all():
            raise UserError(f"{what}: inputs hold NaN or infinite values")
        probe = unwrap(model)
        was_training = probe.training
        probe.eval()
        try:
            with torch.no_grad():
                out = probe(x[:2])
        except Exception as exc:  # any failure of the user's forward on these inputs
            raise UserError(f"{what}: the model cannot take inputs of shape {tuple(x.shape[1:])} "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
        finally:
            probe.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] < 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"{what}: the model must return logits of shape (n, classes >= 2), got {shape}")
        classes = int(out.shape[1])
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise UserError(f"{what}: labels range over [{int(y.min())}, {int(y.max())}] but the model outputs "
                            f"{classes} classes (labels must lie in 0..{classes - 1})")
        checked.append((x, y))
    return checked[0], checked[1], classes


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
