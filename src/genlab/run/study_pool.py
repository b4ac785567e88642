"""Several studies at once, each in its own process with a share of the CPU's cores.

Training a small network is a chain of small matrix products and element-wise kernels; on a CPU,
splitting each of them over all cores (PyTorch's intra-op parallelism) costs synchronisation on
every kernel, and on a loaded machine a second thread can make a kernel several times slower.
Independent studies do not share anything but the CPU, so ``genlab reproduce`` runs them in worker
processes instead: ``jobs`` studies at once, each with ``cores // jobs`` intra-op threads.

What stays true:

* each study still runs :func:`genlab.run.runner.run_study` into its own run folder (its lock, its
  resume, its manifest; the manifest records the thread count it ran with);
* the numbers of a study depend on its spec, the machine and its thread count only, and the thread
  count is a function of ``jobs`` and the cores, so the same command on the same machine gives the
  same numbers, and a re-run resumes each unfinished study;
* a worker dies with the process that started it (Linux: ``PR_SET_PDEATHSIG``; elsewhere a thread
  that watches the parent), so a killed ``genlab reproduce`` leaves no study running behind it,
  and the re-run is not refused by a run-folder lock still held by an orphan.
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import UserError

DEFAULT_MAX_JOBS = 4
"""At most this many studies at once by default: each holds its data and models (~1.5 GB for the
largest quick study), and beyond four the longest study alone bounds the wall time anyway."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PoolPlan:
    """How many studies run at once, and the intra-op threads each gets (None: PyTorch's default,
    when one study runs at a time)."""

    jobs: int
    threads: int | None

    def describe(self) -> str:
        if self.jobs == 1:
            return "one study at a time"
        return f"{self.jobs} studies at once, {self.threads} intra-op thread{'s' if self.threads != 1 else ''} each"


def pool_plan(requested: int | None, studies: int, device: str, cores: int | None = None) -> PoolPlan:
    """``requested`` studies at once (default: one per core, at most :data:`DEFAULT_MAX_JOBS`, never
    more than the ``studies`` of the command; one on a GPU, whose memory the studies would share),
    each with ``cores // jobs`` threads (at least one).

    ``studies`` counts every study of the command, finished or not, so that a re-run that resumes
    one study gives it the thread count it started with (the thread count can change the last
    digits of a reduction)."""
    cores = cores or usable_cores()
    if requested is not None and requested < 1:
        raise UserError(f"--jobs {requested}: give at least 1")
    if requested is None:
        on_cpu = str(device).split(":")[0] == "cpu"
        requested = min(cores, DEFAULT_MAX_JOBS) if on_cpu else 1
    jobs = max(1, min(requested, studies))
    return PoolPlan(jobs, None if jobs == 1 else max(1, cores // jobs))


def _die_with_parent() -> None:
    """Worker initializer: the worker ends when the process that started it dies - at once on Linux
    (the kernel's ``PR_SET_PDEATHSIG``), elsewhere within a second (a thread watching the parent)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="genlab-parent-watch", daemon=True).start()


def _run_in_worker(study_name: str, spec, folder: str, threads: int, quiet: bool) -> float:
    """Body of one worker task: one study into ``folder`` with ``threads`` intra-op threads, its
    progress as plain log lines on the shared stderr (none if ``quiet``). Returns its seconds."""
    import torch
    from rich.console import Console

    from genlab.collector import imports_frozen
    from genlab.progress import NullProgress, RichProgress
    from genlab.run.runner import run_study
    from genlab.studies import STUDIES

    torch.set_num_threads(threads)
    study = STUDIES[study_name]
    started = time.perf_counter()
    console = Console(stderr=True, force_terminal=False, force_interactive=False, soft_wrap=True)
    progress = NullProgress() if quiet else RichProgress(study.name, len(study.units(spec)), console=console)
    with imports_frozen(), progress:
        progress.log(f"[{study.name}] started ({threads} intra-op thread{'s' if threads != 1 else ''})")
        run_study(study, spec, Path(folder), progress=progress)
    return time.perf_counter() - started


def run_studies_in_pool(items: Sequence[tuple[object, object, Path]], plan: PoolPlan,
                        on_done: Callable[[str, float], None], quiet: bool = False) -> None:
    """Run every ``(study, spec, folder)`` of ``items`` in ``plan.jobs`` worker processes, in the
    given order (put the longest first); ``on_done`` is told as each study finishes. When a study
    fails, the studies not yet started are cancelled, the running ones finish (their results are
    kept), and the first failure is raised."""
    context = multiprocessing.get_context("spawn")  # never fork a process that already runs OpenMP threads
    failure: BaseException | None = None
    with cf.ProcessPoolExecutor(plan.jobs, mp_context=context, initializer=_die_with_parent) as pool:
        futures = {pool.submit(_run_in_worker, study.name, spec, str(folder), plan.threads, quiet): study.name
                   for study, spec, folder in items}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=list(futures).index):
                name = futures[future]
                try:
                    seconds = future.result()
                except cf.CancelledError:
                    continue
                except cf.process.BrokenProcessPool:
                    failure = failure or UserError(
                        f"{name}: its worker process died (killed, or out of memory); the finished studies and "
                        "units are stored: re-run the same command to resume")
                    continue
                except BaseException as exc:  # noqa: BLE001 - the first failure is raised below
                    failure = failure or exc
                    continue
                on_done(name, seconds)
            if failure is not None:
                for future in pending:
                    future.cancel()
    if failure is not None:
        raise failure
