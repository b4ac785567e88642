"""Progress display: a rich progress bar during training, silent in tests and CI logs."""
from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class NullProgress:
    """Reports nothing; the default for the Python API and tests."""

    def start_unit(self, unit: str, total_epochs: int, models: int) -> None: ...
    def epoch(self, trainer) -> None: ...
    def end_unit(self, unit: str, skipped: bool = False) -> None: ...
    def log(self, message: str) -> None: ...
    def __enter__(self): return self
    def __exit__(self, *exc): return None


def _acc_range(trainer) -> str:
    """How far the models are: each model's train accuracy if it was evaluated this epoch (or
    when it stopped), otherwise its accuracy on the last epoch's training batches - so the numbers
    never lag behind training when evaluations are sparse."""
    batch_acc = getattr(trainer, "batch_acc", None)
    accs = []
    for k, o in enumerate(trainer.outcomes):
        evaluated = not math.isnan(o.train_acc) and (o.epochs == trainer.epoch or not bool(trainer.active[k]))
        if evaluated:
            accs.append(o.train_acc)
        elif batch_acc is not None and not math.isnan(float(batch_acc[k])):
            accs.append(float(batch_acc[k]))
    if not accs:
        return ""
    done = sum(not a for a in trainer.active.tolist())
    return f"models {done}/{len(trainer.outcomes)} done, train acc {min(accs):.1%}..{max(accs):.1%}"


class RichProgress(NullProgress):
    """A bar per unit (epochs) under a bar over units; plain log lines when not on a terminal."""

    def __init__(self, study: str, total_units: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self.study = study
        self.total_units = total_units
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=self.console, transient=False, disable=not self.interactive)
        self.units_task = None
        self.unit_task = None
        self._last_log = 0.0

    def __enter__(self):
        self.bar.__enter__()
        self.units_task = self.bar.add_task(f"{self.study}: units", total=self.total_units, info="")
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def start_unit(self, unit: str, total_epochs: int, models: int) -> None:
        if self.unit_task is not None:
            self.bar.remove_task(self.unit_task)
        self.unit_task = self.bar.add_task(f"  {unit} ({models} models): epoch", total=total_epochs, info="")
        if not self.interactive:
            self.log(f"[{self.study}] unit {unit}: training {models} models for up to {total_epochs} epochs")

    def epoch(self, trainer) -> None:
        info = _acc_range(trainer)
        if self.unit_task is not None:
            self.bar.update(self.unit_task, completed=trainer.epoch, info=info)
        if not self.interactive and time.monotonic() - self._last_log > 10:
            self._last_log = time.monotonic()
            self.log(f"[{self.study}]   epoch {trainer.epoch}: {info}")

    def end_unit(self, unit: str, skipped: bool = False) -> None:
        self.bar.advance(self.units_task)
        if skipped:
            self.log(f"[{self.study}] unit {unit}: already finished, skipped")
        elif not self.interactive:
            self.log(f"[{self.study}] unit {unit}: done")


def make_progress(study: str, total_units: int, quiet: bool = False):
    return NullProgress() if quiet else RichProgress(study, total_units)
