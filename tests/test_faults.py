"""Under load and faults (issue #16 part 3): a second run on a busy folder, a report of a folder being
written, a full disk while writing a snapshot, a figure or the tables."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from genlab.cli import main
from genlab.errors import UserError
from genlab.report import build_report

PROBE = Path(__file__).with_name("kill_probe.py")
SMOKE = ["run", "randomization", "--preset", "smoke", "--quiet"]




def no_space(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


# ----- a folder in use -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_and_the_report_while_a_run_writes_the_folder(tmp_path, genlab_cli):
    out = tmp_path / "rep" / "randomization"
    args = SMOKE + ["--epochs", "6", "--seeds", "0,1,2,3"]
    proc = subprocess.Popen([sys.executable, str(PROBE), *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    refused = reports = tables = 0
    try:
        while proc.poll() is None:
            if (out / "manifest.json").exists() and refused == 0:
                code, err = genlab_cli(args + ["--out", str(out)])
                if proc.poll() is None:
                    assert code == 2 and "is in use by pid" in err and len(err.strip().splitlines()) == 1, err
                    refused += 1
            if (out / "results.csv").exists():
                rows = pd.read_csv(out / "results.csv")                     # never a torn table
                assert len(rows) % 6 == 0 and list(rows["seed"].unique()) == sorted(rows["seed"].unique())
                tables += 1
            if (out / "manifest.json").exists() and proc.poll() is None:
                try:
                    build_report(out.parent)
                except UserError as exc:                                   # an unfinished run is not reported
                    assert "is not complete (status 'running')" in str(exc) or "in use" in str(exc), exc
                    reports += 1
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert refused == 1 and tables > 0 and reports > 0, (refused, tables, reports)
    html = build_report(out.parent).read_text()
    assert 'id="randomization"' in html
    assert len(pd.read_csv(out / "results.csv")) == 4 * 6


# ----- a full disk ----------------------------------------------------------------------------------
def test_a_full_disk_while_writing_a_snapshot_keeps_the_previous_one(tmp_path, genlab_cli, monkeypatch):
    import torch

    import genlab.engine.snapshot as snapshot

    args = SMOKE + ["--epochs", "11", "--out", str(tmp_path / "run")]
    real_save = torch.save
    calls = []

    def save_then_fill_disk(obj, f, *a, **k):
        calls.append(str(f))
        if len(calls) == 2:   # the epoch-10 snapshot: half written, then the disk is full
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(snapshot.torch, "save", save_then_fill_disk)
    code, err = genlab_cli(args)
    unit = tmp_path / "run" / "units" / "seed0"
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot write the resume snapshot" in err and "No space left on device" in err
    assert sorted(p.name for p in unit.iterdir()) == ["snapshot.pt"]          # no torn temporary file
    from genlab.engine.snapshot import load_snapshot as load_state

    assert load_state(unit / "snapshot.pt")["epoch"] == 5                      # the previous snapshot, intact
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"
    monkeypatch.setattr(snapshot.torch, "save", real_save)
    assert main(args) == 0                                                     # disk freed: resumes and finishes
    assert main(SMOKE + ["--epochs", "11", "--out", str(tmp_path / "clean")]) == 0
    assert (tmp_path / "run" / "results.csv").read_bytes() == (tmp_path / "clean" / "results.csv").read_bytes()


def test_a_full_disk_while_drawing_a_figure_keeps_the_previous_figure(tmp_path, genlab_cli, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "rep" / "randomization"
    assert main(SMOKE + ["--out", str(out)]) == 0
    png = out / "figures" / "randomization.png"
    before = png.read_bytes()
    real_savefig = Figure.savefig

    def full_disk(self, fname, *a, **k):
        Path(fname).write_bytes(b"torn")
        no_space()

    monkeypatch.setattr(Figure, "savefig", full_disk)
    code, err = genlab_cli(["report", str(out.parent)])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot write the figure {png}: No space left on device" in err
    assert png.read_bytes() == before
    assert sorted(p.name for p in png.parent.iterdir()) == ["randomization.png", "randomization.svg"]
    monkeypatch.setattr(Figure, "savefig", real_savefig)
    assert main(["report", str(out.parent)]) == 0


def test_a_full_disk_while_writing_the_tables_keeps_the_previous_tables(tmp_path, genlab_cli, monkeypatch):
    out = tmp_path / "run"
    args = SMOKE + ["--seeds", "0,1", "--out", str(out)]
    import genlab.run.store as store

    real_rebuild = store.RunStore.rebuild_tables
    seen = []

    def rebuild_then_fill(self, units):
        seen.append(1)
        if len(seen) == 2:   # after the second unit: the disk is full when results.csv is replaced
            monkeypatch.setattr(os, "fsync", no_space)
        return real_rebuild(self, units)

    monkeypatch.setattr(store.RunStore, "rebuild_tables", rebuild_then_fill)
    code, err = genlab_cli(args)
    assert code == 2 and "cannot write" in err and "results.csv: No space left on device" in err, err
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["seed"].unique()) == [0]                           # the tables of the first unit
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(args) == 0
    assert sorted(pd.read_csv(out / "results.csv")["seed"].unique()) == [0, 1]
