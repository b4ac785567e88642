"""Run folders: lock, spec mismatch, atomic tables, and resume after SIGKILL with identical results."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from genlab.errors import UserError
from genlab.run.store import RunStore, atomic_write_text

ARGS = ["run", "randomization", "--dataset", "digits", "--n-train", "400", "--n-test", "200",
        "--widths", "64", "--optimizer", "adam", "--lr", "0.003", "--epochs", "40", "--corruptions", "1.0",
        "--pixel-variants", "random_pixels", "--seeds", "0,1,2"]


PROBE = Path(__file__).with_name("kill_probe.py")


def genlab(args, events: Path | None = None, **kw):
    """The CLI in a subprocess; with ``events``, through tests/kill_probe.py, which logs each epoch there."""
    env = {**os.environ, **({"GENLAB_PROBE_EVENTS": str(events)} if events else {})}
    env.pop("GENLAB_PROBE_KILL", None)
    return subprocess.Popen([sys.executable, str(PROBE), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def trained_epochs(events: Path) -> list[int]:
    return [int(line.split()[1]) for line in events.read_text().splitlines() if line.startswith("epoch ")]


def test_second_process_on_the_same_folder_is_refused(tmp_path):
    first = RunStore(tmp_path / "r").open("randomization", {"a": 1})
    try:
        with pytest.raises(UserError, match="in use by pid"):
            RunStore(tmp_path / "r").open("randomization", {"a": 1})
    finally:
        first.release()
    RunStore(tmp_path / "r").open("randomization", {"a": 1}).release()   # free again once released


def test_lock_of_a_killed_process_does_not_stay_stuck(tmp_path):
    code = ("import time; from genlab.run.store import RunStore; "
            f"s = RunStore({str(tmp_path / 'r')!r}).open('s', {{}}); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError):
        RunStore(tmp_path / "r").open("s", {})
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunStore(tmp_path / "r").open("s", {}).release()


def test_a_folder_with_another_spec_is_refused_unless_forced(tmp_path):
    RunStore(tmp_path / "r").open("randomization", {"epochs": 3}).release()
    with pytest.raises(UserError, match="epochs: 3 there, 4 asked"):
        RunStore(tmp_path / "r").open("randomization", {"epochs": 4})
    RunStore(tmp_path / "r").open("randomization", {"epochs": 4}, force_new=True).release()
    kept = list(tmp_path.glob("r.old-*"))
    assert len(kept) == 1 and json.loads((kept[0] / "manifest.json").read_text())["spec"] == {"epochs": 3}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.csv", "x\n1\n")
    atomic_write_text(tmp_path / "a.csv", "x\n2\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"] and (tmp_path / "a.csv").read_text() == "x\n2\n"


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_midway_then_resume_gives_the_uninterrupted_results(tmp_path):
    clean = genlab(ARGS + ["--out", str(tmp_path / "clean")])
    assert clean.wait() == 0, clean.communicate()
    run = tmp_path / "killed"
    # kill 1: while the first unit trains (after its first snapshot)
    proc = genlab(ARGS + ["--out", str(run)])
    _wait_for(lambda: (run / "units" / "seed0" / "snapshot.pt").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from genlab.engine.snapshot import load_snapshot as load_state

    snapshot_epoch = load_state(run / "units" / "seed0" / "snapshot.pt")["epoch"]
    assert snapshot_epoch >= 5
    # kill 2: after the first unit finished
    events = tmp_path / "events"
    proc = genlab(ARGS + ["--out", str(run)], events=events)
    _wait_for(lambda: (run / "units" / "seed0" / "done.json").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    # it continued from the snapshot rather than training seed0 from scratch
    assert "unit seed0: resuming from its snapshot" in err
    assert trained_epochs(events)[0] == snapshot_epoch + 1, trained_epochs(events)[:3]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running"                 # never presented as complete
    done_before = json.loads((run / "units" / "seed0" / "done.json").read_text())
    final = genlab(ARGS + ["--out", str(run)])
    out, err = final.communicate()
    assert final.returncode == 0, err
    assert "unit seed0: already finished, skipped" in err
    assert json.loads((run / "units" / "seed0" / "done.json").read_text()) == done_before
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    a, b = pd.read_csv(tmp_path / "clean" / "results.csv"), pd.read_csv(run / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "clean" / "curves.csv"), pd.read_csv(run / "curves.csv"))
