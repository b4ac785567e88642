"""Choosing the execution strategy of a group of models: a short measured calibration, cached.

When more than one strategy can run the models (:func:`genlab.engine.strategies.candidates`), each
candidate is timed on the real models, shapes and batches for a few steps (on copies: the trainer's
state is untouched), the close ones again in turn (:data:`RETIMING_ROUNDS`), and the fastest wins; a
candidate within :data:`TIE_FRACTION` of an earlier one in :data:`~genlab.engine.strategies.ORDER`
loses to it, so that near-ties resolve the same way every time. The choice and the timings are
cached on disk per workload signature (architecture and parameter shapes, number of models, batch
size, input shape, optimizer, precision, device, threads, torch version), so a workload is
calibrated once per machine, and recorded in the trainer's decisions (and the run's manifest).

Strategies differ in the order of their floating-point sums, so a run's numbers depend on the choice
(in the last bits, e.g. a loss of 0.33837840 against 0.33837846). Two records keep the same spec on
the same machine at the same numbers: the machine's cache (when ``$GENLAB_CACHE`` cannot be written,
a folder in the system's temporary directory), and the run directory's own record
(:func:`pinned_choices`, ``engine-choices.json``), written the moment a choice is made and consulted
before the cache, so a killed run resumes with the strategies it started with whatever the cache
holds by then. A resumed ``train_models`` call also reuses the choices stored in its snapshot.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from genlab.engine.strategies import ORDER, candidates, open_session

TIE_FRACTION = 0.05
CALIBRATION_REVISION = 6
"""Part of every cache key: raise it when a strategy's implementation changes, so that the
choices measured on the old code are not reused."""
WARMUP_STEPS = 1
TIMED_STEPS = 3
CONTENDER_FRACTION = 0.5
RETIMING_ROUNDS = 2
"""Candidates within CONTENDER_FRACTION of the fastest are timed RETIMING_ROUNDS more times, in turn, and
each keeps its fastest timing: a machine whose speed drifts by 20-40% within seconds (a shared virtual
machine) otherwise decides by when each candidate happened to run. Measured on a 2-core EPYC: one round
chose `threads` for the 8-MLP ensemble at 16.0 vs 22.3 ms a step for `packed`, and the training it chose
ran 3.03 s against packed's 2.69 s."""


def cache_file() -> Path:
    """``$GENLAB_STRATEGY_CACHE`` if set (a file: ``genlab bench`` gives each bench its own, so that
    its choices are timed under its conditions), else ``$GENLAB_CACHE/engine-strategies.json``
    (default ``~/.cache/genlab``)."""
    if os.environ.get("GENLAB_STRATEGY_CACHE"):
        return Path(os.environ["GENLAB_STRATEGY_CACHE"])
    root = Path(os.environ.get("GENLAB_CACHE", Path.home() / ".cache" / "genlab"))
    return root / "engine-strategies.json"


def fallback_cache_file() -> Path:
    """Where the choices go when :func:`cache_file` cannot be written (a read-only home)."""
    return Path(tempfile.gettempdir()) / f"genlab-{os.getuid()}" / "engine-strategies.json"


_PINNED: ContextVar[Path | None] = ContextVar("genlab_pinned_choices", default=None)


@contextmanager
def pinned_choices(path: Path | str):
    """Within the block, every strategy choice is written to ``path`` (JSON, signature -> strategy)
    as it is made, and a choice found there is taken before the machine's cache or a calibration.
    The run store keeps one per run directory, so that a resumed run computes as it started."""
    token = _PINNED.set(Path(path))
    try:
        yield
    finally:
        _PINNED.reset(token)


def signature(trainer, idx: torch.Tensor, names: list[str]) -> str:
    """A hash of everything that decides which strategy is fastest for the models ``idx``."""
    cfg = trainer.config
    shapes = [[(n, tuple(s)) for n, s in trainer.stack.shapes[k].items()] for k in idx.tolist()]
    parts = {
        "module": type(trainer.stack.template).__qualname__, "shapes": shapes,
        "buffers": sorted(trainer.stack.buffers), "groups": trainer.batch_groups(idx),
        "inputs": [tuple(g.x_train.shape[1:]) for g in trainer.inputs], "batch": cfg.batch_size,
        "optimizer": cfg.optimizer, "loss": cfg.loss, "precision": cfg.precision, "device": str(trainer.device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "candidates": names,
        "revision": CALIBRATION_REVISION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_json(path: Path, key: str, entry) -> bool:
    """Set ``key`` in the JSON object at ``path``; concurrent writers take turns (a lock file), so
    that none loses another's entry. False when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = _read_json(path)
            data[key] = entry
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
        return True
    except OSError:
        return False


def _read_cache() -> dict:
    return {**_read_json(fallback_cache_file()), **_read_json(cache_file())}


def _write_cache(key: str, entry: dict) -> None:
    if not _update_json(cache_file(), key, entry):
        _update_json(fallback_cache_file(), key, entry)  # failing that too: calibrate again next time


def _pin(key: str, name: str) -> None:
    path = _PINNED.get()
    if path is not None:
        _update_json(path, key, name)


def time_strategy(name: str, trainer, idx: torch.Tensor, batches, give_up_after: float = float("inf")) -> float:
    """Median seconds per training step of strategy ``name`` on ``batches`` (a list of
    :class:`~genlab.engine.strategies.StepBatch`), on copies of the models' state. A candidate
    whose first timed step takes longer than ``give_up_after`` seconds is not timed further."""
    session = open_session(name, trainer, idx)
    working = torch.ones(len(idx), dtype=torch.bool, device=trainer.device)
    lr, wd = trainer.lr[idx], trainer.wd[idx]
    uniform = bool((lr == lr[0]).all()) and bool((wd == wd[0]).all())
    times = []
    try:
        for i, batch in enumerate(batches):
            started = time.perf_counter()
            session.forward_backward(batch, working)
            session.step(lr, wd, working, uniform=uniform)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            if i >= WARMUP_STEPS:
                times.append(time.perf_counter() - started)
                if times[0] > give_up_after:
                    break
    finally:
        session.close()
    times.sort()
    return times[len(times) // 2]


def choose(trainer, idx: torch.Tensor, batches_for_calibration) -> tuple[str, dict]:
    """The strategy for the models ``idx`` of ``trainer``, and what the decision rests on.

    ``batches_for_calibration()`` returns the batches to time on (called only when timing is needed)."""
    forced = trainer.config.strategy
    if forced != "auto":
        names = candidates(trainer, idx, worth_trying=False)
        if forced not in names:
            raise ValueError(f"strategy {forced!r} cannot run these models (possible: {', '.join(names)})")
        return forced, {"reason": "asked for"}
    names = candidates(trainer, idx)
    if len(names) == 1:
        return names[0], {"reason": "the only strategy that can run these models"}
    key = signature(trainer, idx, names)
    if key in trainer.choices:
        return trainer.choices[key], {"reason": "chosen earlier in this run", "signature": key}
    run_record = _PINNED.get()
    pinned = _read_json(run_record).get(key) if run_record is not None else None
    if pinned in names:
        return pinned, {"reason": "chosen earlier in this run directory", "signature": key}
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and cached.get("strategy") in names:
        _pin(key, cached["strategy"])
        return cached["strategy"], {"reason": "calibrated earlier on this machine", "signature": key,
                                    "seconds_per_step": cached.get("seconds_per_step", {})}
    batches = batches_for_calibration()
    started = time.perf_counter()
    timings = {}
    with torch.random.fork_rng(devices=[]):
        for name in names:
            best_so_far = min(timings.values(), default=float("inf"))
            timings[name] = time_strategy(name, trainer, idx, batches, give_up_after=1.5 * best_so_far)
        contenders = [name for name in names if timings[name] <= min(timings.values()) * (1 + CONTENDER_FRACTION)]
        for _ in range(RETIMING_ROUNDS if len(contenders) > 1 else 0):
            for name in contenders:
                timings[name] = min(timings[name], time_strategy(name, trainer, idx, batches))
    best = min(timings, key=timings.get)
    for name in sorted(names, key=ORDER.index):
        if timings[name] <= timings[best] * (1 + TIE_FRACTION):
            best = name
            break
    info = {"reason": "calibrated", "signature": key, "seconds_per_step": timings,
            "calibration_seconds": time.perf_counter() - started}
    _write_cache(key, {"strategy": best, "seconds_per_step": timings})
    _pin(key, best)
    return best, info
