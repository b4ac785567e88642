"""Record a network's states during the user's own training loop, for :func:`genlab.diagnose`.

Several diagnoses need the network as it was before and during training, not only at the end:
distances from initialization (Nagarajan & Kolter 2019; Jiang et al. 2019 "dist.l2") and layer
re-initialization to a checkpoint (Zhang, Bengio & Singer 2019). Two lines in any PyTorch loop
keep them::

    rec = genlab.Recorder(net, "ckpt")          # saves the initial state (epoch 0) now
    for epoch in range(1, epochs + 1):
        train_one_epoch(net, ...)                # any optimizer, scheduler, augmentation, AMP
        rec.epoch_end(epoch)                     # saves only at the chosen epochs

One file per saved epoch, ``FOLDER/epoch-NNNNN.pt``, holding the full ``state_dict`` (parameters
and buffers, e.g. BatchNorm running statistics) copied to the CPU, the model's class and every
entry's shape. Files are written atomically (:func:`genlab.engine.snapshot.save_snapshot`: temp
file, then rename) with tensors and plain values only, so they load with
``torch.load(..., weights_only=True)``, which can never run code. ``nn.DataParallel``,
``DistributedDataParallel`` and ``torch.compile`` wrappers are unwrapped, so the names are those of
the plain model. At an epoch that is not saved, :meth:`Recorder.epoch_end` is a set lookup.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from genlab.engine.snapshot import load_snapshot, save_snapshot
from genlab.errors import UserError
from genlab.probes.layer_robustness import CHECKPOINT_SERIES

KIND = "genlab-record"
FILE_PATTERN = re.compile(r"^epoch-(\d+)\.pt$")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile``."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def class_name(model: nn.Module) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def default_epochs(last: int | None = None) -> list[int]:
    """0, 1, 2, 3, 5, 10, 20, 50, 100, ... (the layer-robustness checkpoint series), up to ``last``
    and ``last`` itself when it is given."""
    if last is None:
        return list(CHECKPOINT_SERIES)
    return sorted({e for e in CHECKPOINT_SERIES if e < last} | {int(last)})


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:05d}.pt"


class Recorder:
    """Save ``model``'s state at epoch 0 (on construction) and at the chosen epochs.

    ``epochs``: the epochs to save (0 is always saved); default :func:`default_epochs` of
    ``last``, the number of epochs the loop will run (when given, the last epoch is saved too;
    without it the series 0, 1, 2, 3, 5, 10, 20, 50, ... is used: call :meth:`save` after the loop
    to keep the final state as well). Saving an epoch again replaces its file.
    """

    def __init__(self, model: nn.Module, folder: str | Path, epochs: Iterable[int] | None = None,
                 last: int | None = None):
        if not isinstance(model, nn.Module):
            raise UserError(f"Recorder: model must be a torch.nn.Module, got {type(model).__name__}")
        chosen = default_epochs(last) if epochs is None else [int(e) for e in epochs]
        if any(e < 0 for e in chosen):
            raise UserError(f"Recorder: epochs must be >= 0, got {sorted(chosen)}")
        self.model = model
        self.folder = Path(folder)
        self.epochs = frozenset(chosen) | {0}
        self.saved: list[int] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Recorder: cannot create the folder {self.folder}: {exc.strerror or exc}") from None
        self.save(0)

    def epoch_end(self, epoch: int) -> Path | None:
        """Call after epoch ``epoch`` (1 = after the first epoch); saves when it is a chosen epoch."""
        if epoch not in self.epochs:
            return None
        return self.save(epoch)

    def save(self, epoch: int) -> Path:
        """Save the model's current state as epoch ``epoch`` now, whatever the chosen epochs."""
        module = unwrap(self.model)
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}
        path = epoch_file(self.folder, int(epoch))
        save_snapshot({"kind": KIND, "epoch": int(epoch), "model_class": class_name(module),
                       "shapes": {name: list(t.shape) for name, t in state.items()}, "state_dict": state},
                      path, what="the record file")
        if int(epoch) not in self.saved:
            self.saved.append(int(epoch))
        return path


# ----- reading a record ---------------------------------------------------------------------

def record_files(folder: str | Path) -> dict[int, Path]:
    """The record's files by epoch; a folder holding none is refused with one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--record {folder}: not a folder (expected the folder a genlab.Recorder wrote)")
    files = {int(m.group(1)): p for p in folder.iterdir() if (m := FILE_PATTERN.match(p.name))}
    if not files:
        raise UserError(f"--record {folder}: holds no epoch-NNNNN.pt files (expected the folder a "
                        f"genlab.Recorder wrote)")
    return dict(sorted(files.items()))


def load_record_file(path: Path) -> dict:
    """One record file, read with ``weights_only=True``; anything else is refused with one line."""
    state = load_snapshot(path, what="the record file",
                          recover="record the training again with genlab.Recorder")
    if state.get("kind") != KIND or not isinstance(state.get("state_dict"), dict):
        raise UserError(f"the record file {path} was not written by genlab.Recorder")
    return state


def load_record(folder: str | Path, model: nn.Module) -> dict[int, dict[str, torch.Tensor]]:
    """Every recorded state_dict of ``folder`` by epoch, checked against ``model``'s architecture:
    the same entries with the same shapes (one line naming the first difference otherwise)."""
    expected = {name: tuple(t.shape) for name, t in unwrap(model).state_dict().items()}
    states = {}
    for epoch, path in record_files(folder).items():
        state = load_record_file(path)
        check_state_dict(state["state_dict"], expected, f"the record file {path} (saved from "
                                                        f"{state.get('model_class')})")
        states[epoch] = state["state_dict"]
    return states


def check_state_dict(state: dict, expected: dict[str, tuple[int, ...]], what: str) -> None:
    """Refuse ``state`` unless it holds exactly ``expected``'s entries with the same shapes."""
    missing = [n for n in expected if n not in state]
    extra = [n for n in state if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {_names(missing)}")
        if extra:
            parts.append(f"has entries the model does not ({_names(extra)})")
        raise UserError(f"{what} does not match the model's architecture: it {' and '.join(parts)}")
    for name, shape in expected.items():
        value = state[name]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{what}: entry '{name}' is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise UserError(f"{what} does not match the model's architecture: '{name}' has shape "
                            f"{tuple(value.shape)}, the model's is {shape}")


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
