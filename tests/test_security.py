"""Reading a run folder, a dataset or an archive never executes code from it (issue #22).

Each crafted file here would, if unpickled without restrictions, create a marker file; the tests
require one clear line, exit code 2, and no marker.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from genlab.cli import main


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))




def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def crafted(path, marker, form: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"keys": ["true_labels"], "imp": CreatesMarker(marker)}
    if form == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))


RUNS = {
    "randomization": (["run", "randomization", "--preset", "smoke", "--epochs", "1", "--quiet"], "seed0",
                      "snapshot.pt"),
    "lottery": (["run", "lottery", "--preset", "smoke", "--epochs", "1", "--rounds", "1", "--seeds", "0", "--quiet"],
                "imp", "cache/round0.pt"),  # a round's state, cached through the run store
}


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """One finished run folder per study of RUNS (copied per test)."""
    folders = {}
    for study, (args, _, _) in RUNS.items():
        out = tmp_path_factory.mktemp(study) / "run"
        assert main(args + ["--out", str(out)]) == 0
        folders[study] = out
    return folders


def _unfinished_copy(folder, tmp_path, unit):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(folder, run)
    (run / "units" / unit / "done.json").unlink()
    return run


@pytest.mark.parametrize("form", ["torch", "pickle"])
@pytest.mark.parametrize("study", sorted(RUNS))
def test_a_crafted_resume_file_is_refused_and_runs_nothing(study, form, finished_runs, tmp_path, genlab_cli):
    args, unit, name = RUNS[study]
    run = _unfinished_copy(finished_runs[study], tmp_path, unit)
    marker = tmp_path / "marker"
    crafted(run / "units" / unit / name, marker, form)
    code, err = genlab_cli(args + ["--out", str(run)])
    assert_one_line_error(code, err, name, "written by an older genlab", "--force-new")
    assert not marker.exists(), "code from the crafted file ran"
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_snapshot_is_named_with_the_way_out(damage, finished_runs, tmp_path, genlab_cli):
    args, unit, name = RUNS["randomization"]
    run = _unfinished_copy(finished_runs["randomization"], tmp_path, unit)
    real = io.BytesIO()
    torch.save({"params": {"w": torch.ones(50, 50)}}, real)
    data = {"truncated": real.getvalue()[: len(real.getvalue()) // 2], "empty": b"",
            "garbage": bytes(range(256)) * 8}[damage]
    (run / "units" / unit / name).write_bytes(data)
    code, err = genlab_cli(args + ["--out", str(run)])
    assert_one_line_error(code, err, name, "--force-new")
    assert main(args + ["--out", str(run), "--force-new"]) == 0  # the way out works


# ----- datasets --------------------------------------------------------------------------------------
def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}


CIFAR = ["run", "randomization", "--dataset", "cifar10", "--preset", "smoke", "--epochs", "1", "--n-train", "20",
         "--n-test", "10", "--quiet"]


def test_a_crafted_cifar_pickle_is_refused_by_the_allow_list(tmp_path, genlab_cli):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        (folder / name).write_bytes(pickle.dumps(_cifar_batch(10, i), protocol=2))
    marker = tmp_path / "marker"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": CreatesMarker(marker), b"labels": []}, protocol=2))
    code, err = genlab_cli(CIFAR + ["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "data_batch_3", "refusing to load global io.open")
    assert not marker.exists()


def _add(tar, info, payload=b""):
    info.size = len(payload) if info.isfile() else 0
    tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)


@pytest.mark.parametrize("kind,reason", [("parent", "path with '..'"), ("absolute", "absolute path"),
                                         ("symlink", "link or special file"), ("hardlink", "link or special file")])
def test_an_archive_with_escaping_members_is_refused_before_writing(kind, reason, tmp_path, genlab_cli):
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        _add(tar, tarfile.TarInfo("cifar-10-batches-py/data_batch_1"), pickle.dumps(_cifar_batch(4, 0), protocol=2))
        if kind == "parent":
            _add(tar, tarfile.TarInfo("cifar-10-batches-py/../../outside.txt"), b"escaped")
        elif kind == "absolute":
            _add(tar, tarfile.TarInfo(str(outside)), b"escaped")
        else:
            link = tarfile.TarInfo("cifar-10-batches-py/data_batch_2")
            link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            link.linkname = str(outside) if kind == "symlink" else "../../outside.txt"
            _add(tar, link)
    code, err = genlab_cli(CIFAR + ["--data-root", str(root), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "cifar-10-python.tar.gz", "refusing to extract member", reason)
    assert not outside.exists()
    assert not (root / "cifar-10-batches-py").exists()  # nothing extracted at all
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]


# ----- the report ------------------------------------------------------------------------------------
SCRIPT = '<script>alert("genlab")</script>'


def test_the_report_escapes_strings_from_specs_and_tables(tmp_path, genlab_cli):
    out = tmp_path / "rep"
    args = ["run", "randomization", "--preset", "smoke", "--epochs", "1", "--quiet", "--data-root", f"/data/{SCRIPT}",
            "--out", str(out / "randomization")]
    assert main(args) == 0
    results = out / "randomization" / "results.csv"
    # a variant name from the results table reaches the verdict (no variant fits in one epoch)
    results.write_text(results.read_text().replace("random_labels", SCRIPT.replace('"', "'")))
    manifest_path = out / "randomization" / "manifest.json"   # as if the run had written that table
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["results.csv"] = hashlib.sha256(results.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;genlab&#34;)&lt;/script&gt;" in html        # the data root, escaped
    assert "&lt;script&gt;alert(&#39;genlab&#39;)&lt;/script&gt;" in html        # the table's string, escaped
