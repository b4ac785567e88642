"""Bad input of every kind: one clear line naming the field, file or value; exit code 2; no traceback;
no run folder marked complete. Plus a fuzz test of the spec loader."""
import errno
import gzip
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genlab.cli import main
from genlab.errors import UserError
from genlab.spec import resolve_spec
from genlab.studies import STUDIES, get_study

R = ["run", "randomization"]

TABLE = [
    # (arguments, expected text in the one error line)
    (["run", "nosuch"], "unknown study 'nosuch'"),
    (["run", "Randomization"], "unknown study 'Randomization'"),
    (R + ["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (R + ["--model", "vit"], "unknown model 'vit'"),
    (R + ["--corruptions", "1.5"], "p=1.5 must be in [0, 1]"),
    (R + ["--corruptions", "-0.2"], "p=-0.2 must be in [0, 1]"),
    (R + ["--corruptions", "half"], "'corruptions"),
    (R + ["--widths", "-4"], "every width must be positive"),
    (R + ["--widths", "0,64"], "every width must be positive"),
    (R + ["--widths", "wide"], "'widths"),
    (R + ["--epochs", "0"], "'epochs'"),
    (R + ["--epochs", "-3"], "'epochs'"),
    (R + ["--epochs", "2.5"], "'epochs'"),
    (R + ["--batch-size", "0"], "'batch_size'"),
    (R + ["--lr", "0"], "'lr'"),
    (R + ["--lr", "fast"], "'lr'"),
    (R + ["--momentum", "1.0"], "'momentum'"),
    (R + ["--dropout", "1.0"], "'dropout'"),
    (R + ["--weight-decay", "-1e-4"], "'weight_decay'"),
    (R + ["--stop-train-acc", "1.2"], "'stop_train_acc'"),
    (R + ["--optimizer", "lbfgs"], "'optimizer'"),
    (R + ["--schedule", "exponential"], "'schedule'"),
    (R + ["--init", "orthogonal"], "'init'"),
    (R + ["--label-noise", "flip"], "'label_noise'"),
    (R + ["--pixel-variants", "blur"], "'pixel_variants"),
    (R + ["--seeds", "1,1"], "seeds must be distinct"),
    (R + ["--seeds", "-1"], "seeds must be non-negative"),
    (R + ["--device", "tpu"], "'device'"),
    (R + ["--device", "cuda:3"], "'device'"),
    (R + ["--preset", "fast"], "preset"),
    (R + ["--n-train", "0"], "'n_train'"),
    (R + ["--n-train", "99999"], "n_train=99999 is larger than mnist5k's 4000 examples"),
    (R + ["--unknown-flag", "3"], "No such option"),
    (["run", "expressivity", "--sizes", "-5"], "sizes"),
    (["run", "expressivity", "--labels", "shuffled"], "labels"),
    (["run", "intrinsic-dim", "--projection", "hadamard"], "'projection'"),
    (["run", "intrinsic-dim", "--preset", "smoke", "--search", "grid", "--dims", "100000000"], "exceeds the model's "
     "D="),
    (["run", "lottery", "--prune-rate", "1.0"], "'prune_rate'"),
    (["run", "lottery", "--prune-rate", "0"], "'prune_rate'"),
    (["run", "double-descent", "--modes", "sideways"], "'modes"),
    (["reproduce", "--only", "randomization,nosuch"], "unknown study 'nosuch'"),
    (["report", "{tmp}/empty"], "holds no study run folders"),
]


@pytest.mark.parametrize("args,needle", TABLE, ids=[" ".join(a[:4]) for a, _ in TABLE])
def test_bad_input_table(args, needle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "run":
        args += ["--out", str(tmp_path / "run"), "--quiet"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert "Traceback" not in err
    manifest = tmp_path / "run" / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] != "complete"


def _write_idx(path, array, magic, truncate=0):
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape) + \
        array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(payload[:len(payload) - truncate])


@pytest.mark.parametrize("damage,needle", [("truncate", "train-images-idx3-ubyte.gz"),
                                           ("magic", "magic"), ("not-gzip", "train-labels-idx1-ubyte.gz")])
def test_corrupt_dataset_files_are_named(damage, needle, tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, 0x803, truncate=100 if damage == "truncate" else 0)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 0x801 if damage != "magic" else 0x999)
    if damage == "not-gzip":
        (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs, 0x803)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 0x801)
    with pytest.raises(SystemExit) as e:
        main(R + ["--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing was computed: no run is left behind


def test_a_run_stopped_by_bad_input_before_any_work_leaves_the_folder_free(tmp_path, capsys):
    out = tmp_path / "given"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    missing = ["--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"), "--quiet"]
    for folder in (out, out / "new" / "deeper"):
        with pytest.raises(SystemExit) as e:
            main(R + missing + ["--out", str(folder)])
        assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file kept, ours and new/ gone
    assert main(R + ["--out", str(out), "--quiet"]) == 0  # any other spec may use the folder
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_run_folder_with_a_different_spec_is_refused(tmp_path, capsys):
    base = R + ["--preset", "smoke", "--quiet", "--out", str(tmp_path / "run")]
    assert main(base) == 0
    with pytest.raises(SystemExit) as e:
        main(base + ["--epochs", "4"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "different spec (epochs: 3 there, 4 asked)" in err and "--force-new" in err
    assert main(base + ["--epochs", "4", "--force-new"]) == 0
    assert len(list(tmp_path.glob("run.old-*"))) == 1


def test_full_disk_ends_clearly_and_keeps_earlier_results(tmp_path, capsys, monkeypatch):
    args = R + ["--preset", "smoke", "--seeds", "0,1", "--quiet", "--out", str(tmp_path / "run")]
    import genlab.run.store as store

    real_save = store.RunStore.save_unit
    calls = {"n": 0}

    def failing_save(self, unit, rows, curves, seconds, **options):
        calls["n"] += 1
        if calls["n"] == 2:
            raise UserError(f"cannot write {self.path / 'units' / unit / 'done.json'}: {errno.errorcode[errno.ENOSPC]} "
                            "(No space left on device)")
        return real_save(self, unit, rows, curves, seconds, **options)

    monkeypatch.setattr(store.RunStore, "save_unit", failing_save)
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "No space left on device" in err
    assert (tmp_path / "run" / "units" / "seed0" / "done.json").exists()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"
    monkeypatch.setattr(store.RunStore, "save_unit", real_save)
    assert main(args) == 0                        # disk freed: the run completes, seed0 not redone


def test_atomic_write_turns_os_errors_into_one_line(tmp_path, monkeypatch):
    import os

    from genlab.run.store import atomic_write_text

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "results.csv").write_text("old\n")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write_text(tmp_path / "results.csv", "new\n")
    assert (tmp_path / "results.csv").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


values = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.one_of(st.integers(-5, 600), st.floats(-2, 2),
                                                            st.text(max_size=5)),
                                                  max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study=st.sampled_from(sorted(STUDIES)),
       data=st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(["epochs", "widths", "lr", "seeds",
                                                                             "corruptions", "dataset", "preset",
                                                                             "sizes", "device", "n_train"])),
                            values, max_size=5))
@example(study="randomization", data={"device": "\n"})  # found by this test: torch's message quoted the newline
def test_fuzzed_specs_are_accepted_or_refused_with_a_user_error(study, data):
    spec_cls = get_study(study).Spec
    try:
        spec = resolve_spec(spec_cls, None, None, data)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert isinstance(spec, spec_cls)
