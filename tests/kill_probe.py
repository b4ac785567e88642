"""Run the genlab CLI with probes that log events and can SIGKILL the process at an exact moment.

Used by tests/test_kill_resume.py as ``python tests/kill_probe.py genlab-args...``. Environment:

- ``GENLAB_PROBE_EVENTS``: file that gets one line per event, flushed at once:
  ``epoch N`` (an epoch callback, N = the trainer's epoch), ``save PATH`` (a ``torch.save``),
  ``unit-saved UNIT`` (a unit recorded as finished), ``log MESSAGE`` (a progress line).
- ``GENLAB_PROBE_KILL``: ``KIND:N`` kills this process with SIGKILL at the N-th (1-based) event of
  KIND, which is one of

  - ``epoch``: inside the N-th epoch callback (after the epoch trained, before its snapshot);
  - ``save-partial``: in the N-th ``torch.save`` to a snapshot path, after half of its bytes are
    on disk (a torn temporary file, as a kill during the write leaves);
  - ``save-before-replace``: after the N-th snapshot's temporary file is complete, before the
    ``os.replace`` that publishes it;
  - ``unit-saved``: right after the N-th unit was recorded (between units);
  - ``done-written``: right after the N-th unit's ``done.json`` was written, before the manifest
    and the tables are updated.

A SIGKILL from inside is the same as one from outside (the kernel ends the process at once, no
handler runs), but it lands at the exact moment, so each kill point is reproducible.
"""
from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

EVENTS = os.environ.get("GENLAB_PROBE_EVENTS")
KILL_KIND, _, KILL_AT = os.environ.get("GENLAB_PROBE_KILL", ":").partition(":")
COUNTS: dict[str, int] = {}


def event(line: str) -> None:
    if EVENTS:
        with open(EVENTS, "a") as fh:
            fh.write(line.replace("\n", " ") + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def due(kind: str) -> bool:
    """Count an occurrence of ``kind``; True when it is the one to kill at."""
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    return kind == KILL_KIND and COUNTS[kind] == int(KILL_AT)


def die(what: str) -> None:
    event(f"killed {what}")
    os.kill(os.getpid(), signal.SIGKILL)


def _is_snapshot(path) -> bool:
    return "snapshot" in Path(str(path)).name


def install() -> None:
    import torch

    import genlab.progress as progress

    real_save, real_replace = torch.save, os.replace

    def save(obj, f, *args, **kwargs):
        event(f"save {f}")
        if _is_snapshot(f) and due("save-partial"):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            with open(f, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            die(f"save-partial {f}")
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if _is_snapshot(dst) and str(src).endswith(".tmp") and due("save-before-replace"):
            die(f"save-before-replace {dst}")
        return real_replace(src, dst, *args, **kwargs)

    torch.save = save
    os.replace = replace

    for cls in (progress.NullProgress, progress.RichProgress):
        real_epoch, real_log = cls.epoch, cls.log

        def epoch(self, trainer, _real=real_epoch):
            _real(self, trainer)
            event(f"epoch {trainer.epoch}")
            if due("epoch"):
                die(f"epoch {trainer.epoch}")

        def log(self, message, _real=real_log):
            event(f"log {message}")
            _real(self, message)

        cls.epoch, cls.log = epoch, log

    store_module = _store_module()
    real_save_unit, real_write_json = store_module.RunStore.save_unit, store_module.atomic_write_json

    def save_unit(self, unit, *args, **kwargs):
        real_save_unit(self, unit, *args, **kwargs)
        event(f"unit-saved {unit}")
        if due("unit-saved"):
            die(f"unit-saved {unit}")

    def write_json(path, data):
        real_write_json(path, data)
        if Path(path).name == "done.json" and due("done-written"):
            die(f"done-written {path}")

    store_module.RunStore.save_unit = save_unit
    store_module.atomic_write_json = write_json


def _store_module():
    try:
        import genlab.run.store as store
    except ImportError:
        import genlab.store as store
    return store


if __name__ == "__main__":
    install()
    from genlab.cli import main

    main(sys.argv[1:])
