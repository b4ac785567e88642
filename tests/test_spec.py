"""Composed specs: flat names, groups, the mapping to the engine, and validation at the boundary."""
import dataclasses
import math
import subprocess
import sys
import typing

import pytest
import torch

from genlab.cli import main
from genlab.engine import TrainConfig
from genlab.errors import UserError
from genlab.reproduce import plan_spec
from genlab.spec import OptimSpec, StudySpec, resolve_spec
from genlab.studies import STUDIES, get_study

ALL = sorted(STUDIES)


def _help(study: str) -> str:
    return subprocess.run([sys.executable, "-m", "genlab.cli", "run", study, "--help"], capture_output=True,
                          text=True, check=True).stdout


def test_help_lists_only_the_settings_a_study_has():
    text = _help("layer-robustness")
    assert "--networks" in text and "--resnet-lr" in text and "--lr " in text
    assert "--model " not in text and "--widths " not in text and "not used" not in text
    text = _help("intrinsic-dim")
    assert "--datasets" in text and "--dataset " not in text and "--model " not in text


def test_every_setting_of_every_study_is_a_flag_of_its_command():
    for name in ("double-descent", "measures"):
        text = _help(name)
        for flat in get_study(name).Spec.flat_fields():
            assert "--" + flat.replace("_", "-") in text, (name, flat)


def test_flat_names_follow_the_group_prefixes():
    spec = resolve_spec(get_study("double-descent").Spec, "quick", None, {"nn_lr": "0.5", "noise_epochs": "7",
                                                                          "rff_n_train": "300"})
    assert spec.nn.optim.lr == 0.5 and spec.noise.optim.epochs == 7 and spec.rff.data.n_train == 300
    assert spec.noise.optim.lr == 0.05  # the other group keeps its own value
    flat = spec.flat()
    assert flat["nn_lr"] == 0.5 and flat["noise_epochs"] == 7 and "lr" not in flat


def test_old_names_are_aliases():
    measures = get_study("measures").Spec
    spec = resolve_spec(measures, "smoke", None, {"lr": ["0.2", "0.4"], "batch_size": ["32"], "widths": ["8"]})
    assert spec.sweep_lrs == [0.2, 0.4] and spec.sweep_batch_sizes == [32] and spec.sweep_widths == [8]
    dd = resolve_spec(get_study("double-descent").Spec, "smoke", None, {"ridges": [0.0, 0.5]})
    assert dd.rff.ridges == [0.0, 0.5]
    with pytest.raises(UserError, match="'sweep_lrs'.*> 0"):  # the old name is refused as the field it names
        resolve_spec(measures, "smoke", None, {"lr": [0.1, -1.0]})


def test_a_partial_group_starts_from_the_study_defaults():
    lottery = get_study("lottery").Spec
    spec = lottery(optim={"lr": 0.5})
    assert spec.optim.lr == 0.5 and spec.optim.optimizer == "adam" and spec.optim.batch_size == 60
    assert spec.network.widths == [300, 100]


def test_train_config_maps_every_setting_of_the_group():
    changed = OptimSpec(optimizer="adamw", lr=0.3, momentum=0.5, nesterov=True, weight_decay=0.01, batch_size=7,
                        epochs=9, schedule="step", step_every=4, step_gamma=0.5, precision="bf16",
                        strategy="lockstep")
    config = changed.train_config("mse", stop_train_acc=0.9)
    expected = TrainConfig(loss="mse", optimizer="adamw", lr=0.3, momentum=0.5, nesterov=True, weight_decay=0.01,
                           batch_size=7, epochs=9, schedule="step", milestones=(4, 8), gamma=0.5, stop_train_acc=0.9,
                           precision="bf16", strategy="lockstep")
    assert config == expected
    assert OptimSpec().train_config("ce", epochs=3, lr=1.0) == TrainConfig(epochs=3, lr=1.0, batch_size=128)
    covered = {"optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "epochs", "schedule",
               "precision", "strategy"}
    assert covered | {"step_every", "step_gamma"} == set(OptimSpec.model_fields)
    assert covered <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_lr_inf_on_the_command_line_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "randomization", "--preset", "smoke", "--lr", "inf", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "'lr'" in err and "finite" in err
    assert not (tmp_path / "r" / "manifest.json").exists()


@pytest.mark.parametrize("content", [bytes(range(256)), b"\x89PNG\r\n\x1a\n\x00\x00", "epochs = 3\n".encode("utf-16")])
def test_a_binary_config_file_is_one_line(tmp_path, capsys, content):
    config = tmp_path / "binary.toml"
    config.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "randomization", "--preset", "smoke", "--config", str(config), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(config) in err and ("not a TOML text file" in err or "not valid TOML" in err)


def test_cuda_devices_are_checked_against_the_device_count(monkeypatch):
    spec_cls = get_study("randomization").Spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for ok in ("cuda", "cuda:0", "cuda:1"):
        assert resolve_spec(spec_cls, "smoke", None, {"device": ok}).device == ok
    with pytest.raises(UserError, match=r"'device'.*has 2 CUDA devices \(cuda:0..cuda:1\), so cuda:2 does not exist"):
        resolve_spec(spec_cls, "smoke", None, {"device": "cuda:2"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="has 1 CUDA device "):
        resolve_spec(spec_cls, "smoke", None, {"device": "cuda:7"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_spec(spec_cls, "smoke", None, {"device": "cuda:0"})
    for bad in ("tpu", "meta", "cuda:x"):
        with pytest.raises(UserError, match="'device'"):
            resolve_spec(spec_cls, "smoke", None, {"device": bad})


@pytest.mark.parametrize("study", ALL)
def test_reproduce_dataset_reaches_every_dataset_of_every_study(study):
    spec = plan_spec(STUDIES[study], "smoke", "mnist1d")
    flat = spec.flat()
    named = {k: v for k, v in flat.items() if k.endswith("dataset") or k.endswith("datasets")}
    assert named, study
    for key, value in named.items():
        if key == "resnet_dataset":
            assert value == "mnist1d"
        else:
            assert value in ("mnist1d", ["mnist1d"]), (key, value)
    if study == "layer-robustness":
        assert "lenet" not in spec.networks and "resnet" in spec.networks  # lenet needs images


def test_reproduce_dataset_errors_name_the_study():
    with pytest.raises(UserError, match=r"^randomization: invalid value for 'dataset': unknown dataset 'nosuch'"):
        plan_spec(STUDIES["randomization"], "smoke", "nosuch")
    with pytest.raises(UserError, match=r"^intrinsic-dim: .*'datasets"):
        plan_spec(STUDIES["intrinsic-dim"], "smoke", "nosuch")


def test_on_dataset_keeps_other_settings_and_validates():
    base = resolve_spec(get_study("lottery").Spec, "smoke")
    moved = base.on_dataset("digits")
    assert moved.data.dataset == "digits" and moved.flat() == {**base.flat(), "dataset": "digits"}
    assert isinstance(moved, StudySpec)
    assert math.isfinite(moved.optim.lr)


@pytest.mark.slow
def test_reproduce_smoke_on_mnist1d_runs_every_study(tmp_path):
    import pandas as pd

    assert main(["reproduce", "--preset", "smoke", "--dataset", "mnist1d", "--out", str(tmp_path), "--quiet"]) == 0
    for study in ALL:
        results = pd.read_csv(tmp_path / study / "results.csv")
        if "dataset" in results:
            assert set(results["dataset"].dropna()) == {"mnist1d"}, study


def test_a_run_folder_of_the_old_spec_layout_is_refused_with_one_line(tmp_path, capsys):
    """Run folders written before the composed specs store measures' sweeps under their old names."""
    import json

    folder = tmp_path / "measures"
    folder.mkdir()
    old = {"preset": "smoke", "seeds": [0], "device": "cpu", "dataset": "mnist5k", "model": "mlp", "lr": [0.05, 0.1],
           "batch_size": [64], "widths": [8, 16]}
    (folder / "manifest.json").write_text(json.dumps({"study": "measures", "spec": old, "status": "complete"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "measures", "--preset", "smoke", "--out", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "holds a run with a different spec" in err and "--force-new" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "does not describe a run this version of genlab can read" in err and "'model'" in err
    assert "--force-new" in err


def test_strategy_setting_names_the_engines_strategies_and_reaches_train_config(genlab_cli):
    from genlab.engine.config import STRATEGIES
    from genlab.spec.fields import Strategy

    assert typing.get_args(Strategy) == tuple(STRATEGIES)
    spec = resolve_spec(get_study("randomization").Spec, "smoke", None, {"strategy": "lockstep"})
    assert spec.optim.train_config("ce").strategy == "lockstep"
    assert resolve_spec(get_study("randomization").Spec, "smoke").optim.train_config("ce").strategy == "auto"
    code, err = genlab_cli(["run", "randomization", "--preset", "smoke", "--strategy", "fastest", "--out", "x"])
    assert code == 2 and "fastest" in err and len(err.strip().splitlines()) == 1
