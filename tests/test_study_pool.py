"""genlab reproduce's worker processes (genlab.run.study_pool): how many, with how many threads, the
same numbers as one study run in this process with that thread count, a failing study, and a killed
parent that takes its workers with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genlab.errors import UserError
from genlab.reproduce import plan_spec
from genlab.run.runner import run_study
from genlab.run.study_pool import PoolPlan, pool_plan, run_studies_in_pool
from genlab.studies import STUDIES
from genlab.threads import intra_op_threads


def test_default_is_one_study_per_core_with_the_cores_shared_out():
    assert pool_plan(None, studies=9, device="cpu", cores=2) == PoolPlan(2, 1)
    assert pool_plan(None, studies=9, device="cpu", cores=16) == PoolPlan(4, 4)
    assert pool_plan(None, studies=9, device="cpu", cores=1) == PoolPlan(1, None)
    assert pool_plan(None, studies=9, device="cuda", cores=8) == PoolPlan(1, None)
    assert pool_plan(3, studies=9, device="cpu", cores=8) == PoolPlan(3, 2)


def test_the_thread_count_depends_on_the_command_not_on_what_is_left():
    """``studies`` is every study of the command: one study of a full reproduce left to resume runs
    with the threads it started with; a command of one study uses every core."""
    assert pool_plan(None, studies=9, device="cpu", cores=2).threads == 1
    assert pool_plan(None, studies=1, device="cpu", cores=2) == PoolPlan(1, None)


def test_zero_jobs_is_a_user_error():
    with pytest.raises(UserError, match="--jobs 0"):
        pool_plan(0, studies=3, device="cpu", cores=2)


def smoke(name: str):
    return STUDIES[name], plan_spec(STUDIES[name], "smoke")


def test_a_study_in_a_worker_gives_the_numbers_of_the_same_study_in_process(tmp_path):
    """Same spec, same thread count: byte-identical tables whether the study ran in a worker
    process of the pool or here."""
    items = [(*smoke(name), tmp_path / "pool" / name) for name in ("randomization", "description-length")]
    finished = []
    run_studies_in_pool(items, PoolPlan(2, 1), lambda name, seconds: finished.append(name), quiet=True)
    assert sorted(finished) == ["description-length", "randomization"]
    for study, spec, folder in items:
        with intra_op_threads(1):
            here = run_study(study, spec, tmp_path / "here" / study.name).path
        assert (folder / "results.csv").read_bytes() == (here / "results.csv").read_bytes()
        assert (folder / "curves.csv").read_bytes() == (here / "curves.csv").read_bytes()


def test_a_failing_study_is_raised_and_the_others_still_finish(tmp_path):
    study, spec = smoke("randomization")
    broken = spec.replace(dataset="cifar10", data_root=str(tmp_path / "no-such-folder"))
    items = [(study, broken, tmp_path / "broken"), (*smoke("expressivity"), tmp_path / "fine")]
    finished = []
    with pytest.raises(UserError, match="no-such-folder"):
        run_studies_in_pool(items, PoolPlan(2, 1), lambda name, seconds: finished.append(name), quiet=True)
    assert finished == ["expressivity"]
    assert '"status": "complete"' in (tmp_path / "fine" / "manifest.json").read_text()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_reproduce_kills_its_workers_and_the_rerun_resumes_to_the_same_tables(tmp_path):
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "genlab.cli", "reproduce", "--preset", "smoke", "--only",
                "randomization,lottery,regularization", "--jobs", "2", "--out", str(out), "--quiet"]

    clean = subprocess.run(command(tmp_path / "clean"), capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    out = tmp_path / "killed"
    parent = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not any((out / n / "manifest.json").exists() for n in ("lottery",
                                                                                                "regularization")):
        time.sleep(0.2)
    workers = [p for p in _children(parent.pid) if _alive(p)]
    assert workers, "reproduce started no worker process"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 3  # the kernel kills them at once; a study left running would take longer
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "a worker outlived the killed reproduce"
    done = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.html").exists()
    for name in ("randomization", "lottery", "regularization"):
        assert '"status": "complete"' in (out / name / "manifest.json").read_text()
        for table in ("results.csv", "curves.csv"):
            assert (out / name / table).read_bytes() == (tmp_path / "clean" / name / table).read_bytes(), (name, table)
