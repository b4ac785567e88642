"""The command line: bad input is one line and exit code 2; TOML and flags resolve in order."""
import subprocess
import sys

import pytest

from genlab.cli import main
from genlab.errors import UserError
from genlab.spec import resolve_spec
from genlab.studies import get_study

TINY = ["--dataset", "digits", "--n-train", "200", "--n-test", "100", "--widths", "32", "--epochs", "2",
        "--corruptions", "1.0", "--pixel-variants", "gaussian", "--quiet"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


@pytest.mark.parametrize("args,needle", [
    (["run", "nosuch"], "unknown study 'nosuch'"),
    (["run", "randomization", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "randomization", "--corruptions", "0.2,1.5"], "p=1.5 must be in [0, 1]"),
    (["run", "randomization", "--widths", "64,-1"], "every width must be positive"),
    (["run", "randomization", "--widths", "0"], "every width must be positive"),
    (["run", "randomization", "--epochs", "0"], "'epochs'"),
    (["run", "randomization", "--epochs", "ten"], "valid integer"),
    (["run", "randomization", "--lr", "-1"], "'lr'"),
    (["run", "randomization", "--optimizer", "rmsprop"], "'optimizer'"),
    (["run", "randomization", "--label-noise", "gaussian"], "'label_noise'"),
    (["run", "randomization", "--pixel-variants", "inverted"], "'pixel_variants"),
    (["run", "randomization", "--model", "transformer"], "unknown model 'transformer'"),
    (["run", "randomization", "--seeds", "1,1"], "seeds must be distinct"),
    (["run", "randomization", "--device", "cuda:7"], "'device'"),
    (["run", "randomization", "--preset", "huge"], "preset"),
    (["run", "randomization", "--no-such-flag", "1"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, tmp_path):
    code, err = run_cli(args + ["--out", str(tmp_path / "run")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_misspelled_toml_field_gets_a_did_you_mean(tmp_path, capsys):
    cfg = tmp_path / "spec.toml"
    cfg.write_text('epoch = 5\n')
    code, err = run_cli(["run", "randomization", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "unknown field 'epoch'" in err and "did you mean 'epochs'" in err


def test_wrong_type_and_broken_toml(tmp_path, capsys):
    cfg = tmp_path / "spec.toml"
    cfg.write_text('widths = "wide"\n')
    code, err = run_cli(["run", "randomization", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "'widths'" in err
    cfg.write_text('epochs = [\n')
    code, err = run_cli(["run", "randomization", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "not valid TOML" in err


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(["run", "randomization", *TINY, "--out", str(blocker / "run")], capsys)
    assert code == 2 and "cannot write to run folder" in err


def test_spec_layers_defaults_preset_toml_flags(tmp_path):
    spec_cls = get_study("randomization").Spec
    cfg = tmp_path / "s.toml"
    cfg.write_text('epochs = 7\nlr = 0.5\npreset = "paper"\n')
    spec = resolve_spec(spec_cls, None, cfg, {"lr": "0.25"})
    assert spec.preset == "paper" and spec.optim.epochs == 7 and spec.optim.lr == 0.25
    assert spec.network.widths == spec_cls.presets["paper"]["widths"]
    assert spec.flat()["epochs"] == 7
    with pytest.raises(UserError):
        resolve_spec(spec_cls, None, None, {"corruptions": [2.0]})


def test_help_explains_every_field():
    out = subprocess.run([sys.executable, "-m", "genlab.cli", "run", "randomization", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for field in get_study("randomization").Spec.flat_fields():
        assert "--" + field.replace("_", "-") in out


def test_list_names_studies_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "randomization" in out and "mnist5k" in out and "mnist1d" in out


def test_commands_keep_their_imports_out_of_the_garbage_collector_walks():
    """Inside imports_frozen the objects of torch, pandas and the studies sit in the collector's
    permanent generation (skipped by full collections); after it they are back (a caller in the
    same process keeps its collections), and the exit hook that freezes them again for the last
    collection is registered once however often the block is entered."""
    code = ("import atexit, gc; import genlab.studies; from genlab.collector import imports_frozen; "
            "before = atexit._ncallbacks()\n"
            "with imports_frozen(): inside = gc.get_freeze_count()\n"
            "with imports_frozen(): pass\n"
            "print(inside, gc.get_freeze_count(), atexit._ncallbacks() - before)")
    inside, after, hooks = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                          check=True).stdout.split()
    assert int(inside) > 100_000 and int(after) == 0 and int(hooks) == 1


def test_the_time_estimate_is_worked_out_only_when_it_is_printed(monkeypatch, tmp_path, capsys):
    """Counting a conv net's FLOPs costs ~1 s in a fresh process (the first meta-device forward):
    only a paper run that shows its progress prints, and so computes, the estimate."""
    from types import SimpleNamespace

    import genlab.run.runner
    from genlab import cli

    calls = []

    class Study:
        name = "fake"

        def estimate_seconds(self, spec):
            calls.append(spec.preset)
            return 30.0

        def units(self, spec):
            return ["one"]

    monkeypatch.setattr(genlab.run.runner, "run_study", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli, "print_summary", lambda *args: None)
    for preset, quiet in (("quick", False), ("paper", True), ("paper", False)):
        cli.run_and_summarize(Study(), SimpleNamespace(preset=preset), tmp_path, quiet=quiet)
    assert calls == ["paper"]
    assert "fake: the paper preset is expected to take about 30 seconds" in capsys.readouterr().err
