"""Sweeps as Ray tasks give the same results as the in-process executor."""
import signal
import threading
import time

import pandas as pd
import pytest

from genlab.cli import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'genlab[ray]')")

SWEEP = ["run", "randomization", "--preset", "smoke", "--seeds", "0,1,2", "--quiet"]


@pytest.mark.ray
def test_ray_sweep_matches_local_sweep(tmp_path):
    assert main(SWEEP + ["--out", str(tmp_path / "local")]) == 0
    try:
        assert main(SWEEP + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    finally:
        ray.shutdown()
    local = pd.read_csv(tmp_path / "local" / "results.csv")
    remote = pd.read_csv(tmp_path / "ray" / "results.csv")
    assert len(local) == 3 * 6
    pd.testing.assert_frame_equal(local, remote)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "curves.csv"),
                                  pd.read_csv(tmp_path / "ray" / "curves.csv"))


def _kill_unit_workers() -> list[int]:
    """SIGKILL the Ray worker processes that are running a unit (their title names the task)."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::_run_unit_task"):
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
    return killed


@pytest.mark.ray
@pytest.mark.slow
def test_a_ray_worker_killed_mid_unit_is_retried_and_gives_the_in_process_numbers(tmp_path):
    """The unit's worker is SIGKILLed once its first resume snapshot is on disk (mid-unit); Ray
    retries the task, the retry resumes from that snapshot, and the tables equal an in-process run's."""
    sweep = ["run", "randomization", "--preset", "smoke", "--seeds", "0", "--epochs", "15", "--n-train", "200",
             "--quiet"]
    assert main(sweep + ["--out", str(tmp_path / "local")]) == 0
    snapshots = tmp_path / "ray" / "units"
    killed, snapshot_seen = [], []

    def kill_when_a_snapshot_lands():
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            found = [p for p in snapshots.glob("*/snapshot*.pt")] if snapshots.exists() else []
            if found:
                workers = _kill_unit_workers()
                if workers:
                    snapshot_seen.extend(found)
                    killed.extend(workers)
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_when_a_snapshot_lands, daemon=True)
    watcher.start()
    try:
        assert main(sweep + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    finally:
        ray.shutdown()
    watcher.join(timeout=5)
    assert killed, "no unit worker was running when its snapshot appeared: the kill did not happen mid-unit"
    for table in ("results.csv", "curves.csv"):
        assert (tmp_path / "local" / table).read_bytes() == (tmp_path / "ray" / table).read_bytes()
