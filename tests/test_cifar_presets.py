"""The papers' CIFAR-10 experiments: every study's ``cifar`` preset resolves to the paper's network and
settings, trains through the engine at tiny size on files in CIFAR-10's python-batch format, hands
the device it is given to the engine, and ``genlab reproduce --preset cifar`` checks its data folder
and prints a time estimate before it starts."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import genlab.engine.config as engine_config
import genlab.spec.base as spec_base
from genlab.errors import UserError
from genlab.estimate import forward_flops, measured_flops_per_second, study_work, training_flops
from genlab.models import param_count
from genlab.reproduce import cifar_estimates, plan_spec, reproduce
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import STUDIES, get_study
from genlab.studies.cifar import EXPERIMENTS, cifar_references
from genlab.studies.description_length import parse_architecture

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def write_fake_cifar(root: Path, per_batch: int = 40, seed: int = 0) -> Path:
    """CIFAR-10's python version in miniature: 5 training batches and a test batch of pickled
    dicts with (N, 3072) uint8 rows in CHW order and a list of labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*CIFAR_TRAIN, "test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                 b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"))


# ----- the presets ---------------------------------------------------------------------------

def test_every_study_has_a_cifar_preset_on_cifar10():
    for name, study in STUDIES.items():
        assert name in EXPERIMENTS, f"{name} has no entry in genlab.studies.cifar"
        spec = resolve_spec(study.Spec, "cifar")
        flat = spec.flat()
        datasets = {v for k, v in flat.items() if k.endswith("dataset")} | {
            d for k, v in flat.items() if k.endswith("datasets") for d in v}
        assert "cifar10" in datasets, name
        assert study.units(spec), name


NETWORKS = {  # the preset's network and its published parameter count on CIFAR-10 shape
    "randomization": ("inception-small", 1_649_402),
    "regularization": ("inception-small", 1_649_402),
    "lottery": ("conv2", 4_301_642),
}


@pytest.mark.parametrize("study_name", sorted(NETWORKS))
def test_cifar_presets_build_the_papers_networks(study_name):
    spec = resolve_spec(get_study(study_name).Spec, "cifar")
    model, count = NETWORKS[study_name]
    assert spec.network.model == model
    assert param_count(model, (3, 32, 32), 10, **spec.network.zoo_options()) == count


def test_other_cifar_presets_name_the_papers_networks():
    lr = resolve_spec(get_study("layer-robustness").Spec, "cifar")
    assert lr.networks == ["vgg11", "resnet18"] and param_count("vgg11") == 9_231_114
    assert param_count("resnet18") == 11_173_962
    intrinsic = resolve_spec(get_study("intrinsic-dim").Spec, "cifar")
    assert set(intrinsic.models) == {"mlp", "lenet-li"}
    assert param_count("mlp", widths=intrinsic.widths) == 656_810  # Li et al.'s CIFAR-10 FC, D
    assert param_count("lenet-li") == 62_006
    dd = resolve_spec(get_study("double-descent").Spec, "cifar")
    assert dd.noise.model == "resnet18" and dd.noise.widths[-1] == 64 and dd.noise.optim.epochs == 4000
    assert dd.noise.augment.augment == "crop-flip" and dd.noise.level == 0.15


def test_zoo_init_paper_is_resolved_per_network():
    from genlab.studies.layer_robustness import network_plan

    spec = resolve_spec(get_study("layer-robustness").Spec, "cifar")
    assert network_plan(spec, "vgg11").init == "kaiming"
    assert network_plan(spec, "resnet18").granularity == "both"  # the residual-block view
    assert network_plan(spec, "vgg11").granularity == "layer"
    paper = spec.replace(init="paper", networks=["fcn2x32", "vgg11"])
    assert network_plan(paper, "fcn2x32").init == "default"


def test_description_length_parses_hyphenated_families():
    assert parse_architecture("inception-small") == ("inception-small", None)
    assert parse_architecture("alexnet-small") == ("alexnet-small", None)
    assert parse_architecture("lenet-li") == ("lenet-li", None)
    assert parse_architecture("lenet-120-84") == ("lenet", [120, 84])
    assert parse_architecture("mlp-512-512") == ("mlp", [512, 512])
    with pytest.raises(ValueError, match="unknown model family"):
        parse_architecture("inception")
    with pytest.raises(ValueError, match="integers"):
        parse_architecture("mlp-wide")


def test_cifar_references_only_for_the_cifar_preset():
    import pandas as pd

    study = get_study("randomization")
    quick = resolve_spec(study.Spec, "quick")
    assert cifar_references("randomization", quick, pd.DataFrame()) == []
    cifar = resolve_spec(study.Spec, "cifar")
    results = pd.DataFrame({"corruption": [0.0, 1.0], "inputs": ["clean", "clean"], "train_acc": [1.0, 0.99],
                            "test_acc": [0.8, 0.1]})
    rows = cifar_references("randomization", cifar, results)
    assert ("true labels: train / test accuracy (Table 1, no regularizer)", "100% / 85.75%", "100.0% / 80.0%") in rows


# ----- tiny runs of every cifar preset through the engine -------------------------------------

TINY = {  # the cifar preset's network at a size a CPU trains in seconds
    "lottery": dict(n_train=120, n_test=40, val_size=40, epochs=1, rounds=1, seeds=[0]),
    "layer-robustness": dict(n_train=80, n_test=40, epochs=1, zoo_width=4, draws=1, checkpoint_epochs=[0, 1],
                             batch_size=40),
    "intrinsic-dim": dict(n_train=80, n_test=40, val_size=20, epochs=1, seeds=[0], d_start=16, d_max=64, growth=4.0,
                          tolerance=4.0, batch_size=40),
    "double-descent": dict(noise_n_train=80, noise_n_test=40, noise_widths=[1, 2, 3], noise_epochs=1,
                           noise_eval_every=1, noise_batch_size=40),
    "description-length": dict(n_train=96, n_test=20, architectures=["lenet-li", "mlp-16"], epochs=1, first_block=32,
                               min_steps=1, labels=["true"]),
    "expressivity": dict(sizes=[50, 100]),
    "measures": dict(n_train=80, n_test=40, epochs=1, base_width=8, sweep_widths=[], base_depth=1, sweep_depths=[],
                     sweep_lrs=[], sweep_batch_sizes=[], sweep_dropouts=[], sweep_weight_decays=[0.0],
                     sweep_optimizers=[], base_batch_size=40, sharpness_points=10, sharpness_draws=1,
                     worst_case_points=10, worst_case_steps=1, worst_case_bisections=0, seeds=[0]),
}
SLOW_TINY = {  # networks without a width option: still seconds, but more of them
    "randomization": dict(n_train=40, n_test=40, epochs=1, corruptions=[1.0], pixel_variants=["gaussian"],
                          batch_size=40),
    "regularization": dict(n_train=40, n_test=40, epochs=1, batch_size=40),
}


def _tiny_run(study_name: str, overrides: dict, root: Path, tmp_path: Path):
    study = get_study(study_name)
    spec = plan_spec(study, "cifar", data_root=root).replace(**overrides)
    store = run_study(study, spec, tmp_path / study_name)
    results = store.results()
    assert len(results) > 0
    return spec, results


@pytest.mark.parametrize("study_name", sorted(TINY))
def test_cifar_preset_trains_at_tiny_size(study_name, cifar_root, tmp_path):
    spec, results = _tiny_run(study_name, TINY[study_name], cifar_root, tmp_path)
    if study_name == "layer-robustness":
        blocks = results[results["layer_kind"] == "block"]["layer"].dropna().unique()
        assert "stages.0.blocks.0" in set(blocks)  # the residual-block view of resnet18
        assert "features.conv1" in set(results["layer"].dropna())  # readable names, VGG-11
    if study_name == "lottery":
        assert set(results["model"]) == {"conv2"}


@pytest.mark.slow
@pytest.mark.parametrize("study_name", sorted(SLOW_TINY))
def test_cifar_preset_trains_at_tiny_size_inception(study_name, cifar_root, tmp_path):
    spec, results = _tiny_run(study_name, SLOW_TINY[study_name], cifar_root, tmp_path)
    assert set(results["model"]) == {"inception-small"}


# ----- the device reaches the engine in every study -------------------------------------------

class _Stop(Exception):
    pass


@pytest.mark.parametrize("study_name", sorted(set(TINY) | set(SLOW_TINY)))
def test_device_reaches_every_engine_call(study_name, cifar_root, tmp_path, monkeypatch):
    """``--device cuda:3`` (accepted here by a patched device check) is the device of the first
    TrainConfig each study builds (the run stops there), so no study trains on the CPU by default."""
    if study_name == "expressivity":
        pytest.skip("expressivity's construction is a float64 solve on the CPU, not engine training")
    monkeypatch.setattr(spec_base, "check_device", lambda value: value)
    seen: list[str] = []
    original = engine_config.TrainConfig.__post_init__

    def record(self):
        original(self)
        seen.append(self.device)
        raise _Stop

    monkeypatch.setattr(engine_config.TrainConfig, "__post_init__", record)
    study = get_study(study_name)
    overrides = {**TINY, **SLOW_TINY}[study_name]
    spec = plan_spec(study, "cifar", device="cuda:3", data_root=cifar_root).replace(**overrides)
    with pytest.raises(_Stop):
        for unit in [u for u in study.units(spec) if not u.needs]:
            from genlab.progress import NullProgress
            from genlab.studies.base import Context

            folder = tmp_path / unit.key
            folder.mkdir()
            study.run_unit(spec, unit, Context(folder, NullProgress()))
    assert seen == ["cuda:3"]


# ----- reproduce --preset cifar ---------------------------------------------------------------

def test_reproduce_cifar_refuses_a_missing_or_empty_data_folder(tmp_path):
    with pytest.raises(UserError, match="needs --data-root"):
        reproduce(tmp_path / "out", preset="cifar", only=["lottery"], quiet=True)
    with pytest.raises(UserError, match="no such folder"):
        reproduce(tmp_path / "out", preset="cifar", only=["lottery"], data_root=tmp_path / "absent", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds neither cifar-10-batches-py"):
        reproduce(tmp_path / "out", preset="cifar", only=["lottery"], data_root=tmp_path / "empty", quiet=True)
    assert not (tmp_path / "out").exists()


def test_reproduce_cifar_without_cuda_is_one_line(genlab_cli, cifar_root, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = genlab_cli(["reproduce", "--preset", "cifar", "--data-root", str(cifar_root), "--device", "cuda",
                            "--out", str(tmp_path / "out")])
    assert code == 2
    assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_reproduce_cifar_prints_the_estimate_before_it_starts(cifar_root, tmp_path, monkeypatch, capsys):
    import genlab.reproduce as reproduce_module

    started = []
    monkeypatch.setattr(reproduce_module, "run_study", lambda study, spec, folder, progress: started.append(
        (study.name, spec)))
    monkeypatch.setattr(reproduce_module, "build_report", lambda out, **_: out / "report.html")
    reproduce(tmp_path / "out", preset="cifar", only=["lottery", "double-descent"], data_root=cifar_root, jobs=1)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "expected about" in err and "lottery:" in err and "double-descent:" in err
    assert "assumed 20 GFLOP/s on cpu" in err
    names = [name for name, _ in started]
    assert names == ["lottery", "double-descent"]
    lottery_spec = started[0][1]
    assert lottery_spec.data.data_root == str(cifar_root) and lottery_spec.data.dataset == "cifar10"
    assert started[1][1].noise.data.data_root == str(cifar_root)


def test_a_plain_mlp_is_counted_from_its_shapes_as_the_flop_counter_counts_it():
    """MLPs skip the meta-device forward (~1 s the first time in a process) for 2 x in x out per
    Linear layer, which must be exactly what FlopCounterMode counts; other networks are still traced."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from genlab.estimate import _forward_flops, _plain_mlp_flops
    from genlab.models.zoo import _build

    for model, shape, options in (("mlp", (40,), {"widths": [37, 12]}), ("mlp", (1, 28, 28), {"widths": [512]})):
        with torch.device("meta"):
            net = _build(model, shape, 10, options)
            with FlopCounterMode(display=False) as counter:
                net(torch.empty(1, *shape))
        assert _plain_mlp_flops(net) == counter.get_total_flops() > 0
    assert _forward_flops("mlp", (40,), 10, (("widths", (37, 12)),)) == 2 * (40 * 37 + 37 * 12 + 12 * 10)
    with torch.device("meta"):
        assert _plain_mlp_flops(_build("lenet", (1, 28, 28), 10, {})) is None


def test_time_estimate_follows_flops_and_counts():
    # VGG-11 on CIFAR-10: 153M multiply-adds per image (2 FLOPs each), a quarter of ResNet-18's 556M
    assert forward_flops("vgg11", "cifar10") == pytest.approx(305.5e6, rel=1e-3)
    assert forward_flops("resnet18", "cifar10") == pytest.approx(1110.8e6, rel=1e-3)
    assert forward_flops("resnet18", "cifar10", width=32) == pytest.approx(forward_flops("resnet18", "cifar10") / 4,
                                                                           rel=0.05)
    assert training_flops("conv2", "cifar10", 100, 2) == pytest.approx(3 * 200 * forward_flops("conv2", "cifar10"))
    lottery = get_study("lottery")
    spec = resolve_spec(lottery.Spec, "cifar")
    work = study_work("lottery", spec)
    arms = len(spec.seeds) * (1 + spec.rounds * (1 + len(spec.controls)))
    assert work.flops == pytest.approx(arms * training_flops("conv2", "cifar10", 45000, spec.optim.epochs))
    more = study_work("lottery", spec.replace(rounds=spec.rounds * 2))
    assert more.flops > 1.9 * work.flops
    seconds, basis = cifar_estimates([(lottery, spec)], "cpu")
    assert seconds[0] == pytest.approx(work.seconds(20e9)) and "meta device" in basis
    assert study_work("expressivity", resolve_spec(get_study("expressivity").Spec, "cifar")) is None


def test_measured_throughput_runs_on_the_device():
    rate = measured_flops_per_second("lenet-li", "cifar10", "cpu", batch_size=8, steps=1)
    assert rate > 0


# ----- the phenomena on real data at reduced size (mnist5k; slow) -----------------------------

def _study_run(study_name: str, values: dict, tmp_path: Path):
    study = get_study(study_name)
    spec = resolve_spec(study.Spec, "smoke", None, values)
    store = run_study(study, spec, tmp_path / study_name)
    return spec, store.results()


@pytest.mark.slow
def test_narrow_vgg11_and_resnet18_layer_robustness_on_mnist5k(tmp_path):
    """Zhang, Bengio & Singer on mnist5k with VGG-11-BN and ResNet-18-BN of width 8: re-randomizing
    the first convolution destroys either network; most of the ResNet's layers are robust to being
    reset to their initial values (the paper: all but the first layers of some blocks)."""
    spec, results = _study_run("layer-robustness", dict(
        networks=["vgg11", "resnet18"], zoo_width=8, dataset="mnist5k", n_train=2000, n_test=500, epochs=4,
        optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64, checkpoint_epochs=[0, 1, 4], draws=1, seeds=[0]),
        tmp_path)
    rows = results[results["operation"].notna()]
    for network, first in (("vgg11", "features.conv1"), ("resnet18", "stem.conv")):
        part = rows[rows["model"] == network]
        trained = float(part["trained_test_acc"].iloc[0])
        assert trained > 0.8, (network, trained)  # trained (measured: ResNet-18 0.87 after 4 epochs)
        rerand = part[(part["operation"] == "rerandomize") & (part["layer"] == first)]["test_acc"].mean()
        assert rerand < 0.5, (network, rerand)
    resnet = rows[(rows["model"] == "resnet18") & (rows["operation"] == "reinit") & (rows["checkpoint_epoch"] == 0)
                  & (rows["layer_kind"] == "layer")]
    trained = float(rows[rows["model"] == "resnet18"]["trained_test_acc"].iloc[0])
    robust = (trained - resnet["test_acc"] <= spec.threshold).mean()
    assert robust >= 0.5, robust


@pytest.mark.slow
def test_conv2_lottery_tickets_on_mnist5k(tmp_path):
    """Frankle & Carbin's Conv-2 (Gaussian Glorot, Adam 2e-4) on mnist5k: after pruning to a few
    percent of the fully connected weights the winning ticket trains at least as well as the same
    mask re-initialized at random."""
    spec, results = _study_run("lottery", dict(
        model="conv2", init="paper", dataset="mnist5k", n_train=1200, n_test=500, val_size=200, optimizer="adam",
        lr=2e-4, batch_size=60, epochs=5, rounds=3, prune_rate=0.6, conv_prune_rate=0.3, output_prune_rate=0.3,
        controls=["reinit"], seeds=[0]), tmp_path)
    last = results[results["round"] == results["round"].max()].set_index("arm")
    dense = float(results[results["round"] == 0]["test_acc_at_early_stop"].iloc[0])
    assert dense > 0.85, dense
    assert float(last.loc["ticket", "weights_remaining"]) < 10  # percent of the prunable weights
    assert float(last.loc["ticket", "test_acc_at_early_stop"]) >= float(last.loc["reinit", "test_acc_at_early_stop"])


@pytest.mark.slow
def test_small_inception_fits_random_labels_on_mnist5k(tmp_path):
    """Zhang et al.'s small Inception memorizes random labels of mnist5k images (test accuracy at
    chance) and learns the true ones."""
    spec, results = _study_run("randomization", dict(
        model="inception-small", dataset="mnist5k", n_train=200, n_test=500, corruptions=[1.0], pixel_variants=[],
        optimizer="adam", lr=1e-3, batch_size=50, epochs=40, stop_train_acc=1.0, seeds=[0]), tmp_path)
    by = results.set_index("variant")
    assert float(by.loc["random_labels", "train_acc"]) >= 0.95
    assert float(by.loc["random_labels", "test_acc"]) < 0.2
    assert float(by.loc["true_labels", "test_acc"]) > 0.6
