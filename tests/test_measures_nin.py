"""The measures study on Jiang et al.'s network-in-network: the design (one engine call per NiN
width), the BatchNorm statistics of the networks it measures (the engine's trained ones, the
epoch-0 checkpoint's for the initial network), a comparison with one NiN trained alone in a plain
PyTorch loop, the cifar preset, and an end-to-end run on real digits."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import genlab.studies.measures as measures_module
from genlab.estimate import CPU_FLOPS, forward_flops, study_work
from genlab.models import build_model
from genlab.probes.measures import compute_measures
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.cifar import EXPERIMENTS
from genlab.studies.measures import (
    MEASURES,
    build_network,
    call_key,
    config_id,
    sweep_configs,
    sweep_groups,
)

STUDY = get_study("measures")
TINY_NIN = dict(network="nin", dataset="digits", n_train=60, n_test=60, base_width=16, base_depth=1,
                sweep_widths=[8], sweep_depths=[], base_lr=0.1, sweep_lrs=[0.05], sweep_batch_sizes=[],
                sweep_dropouts=[], sweep_weight_decays=[], sweep_optimizers=[], base_batch_size=60, epochs=40,
                sharpness_points=20, sharpness_draws=1, worst_case_points=20, worst_case_steps=1,
                worst_case_bisections=0, seeds=[0])


def _bn_layers(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


# ----------------------------------------------------------------------------- the zoo's NiN


def test_nin_dropout_ends_every_block_and_is_off_by_default():
    plain = build_model("nin", (3, 32, 32), 10, depth=3, width=16)
    dropped = build_model("nin", (3, 32, 32), 10, depth=3, width=16, dropout=0.25)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    for block in dropped.features:
        assert isinstance(block[-1], nn.Dropout) and block[-1].p == 0.25
        assert isinstance(block[-2], nn.ReLU)
    # dropout holds no parameters, so the two nets are the same function in eval mode
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in dropped.named_parameters()]
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(plain.eval()(x), dropped.eval()(x))


# ----------------------------------------------------------------------------- the design


def test_nin_sweep_trains_each_width_in_its_own_engine_call_and_names_the_network():
    spec = resolve_spec(STUDY.Spec, "quick", None, {"network": "nin"})
    configs = sweep_configs(spec)
    assert all(c["network"] == "nin" for c in configs)
    keys = sweep_groups(spec)
    for key in keys:
        widths = {c["width"] for c in configs if call_key(c) == key}
        assert len(widths) == 1, key
    assert len(keys) == len(resolve_spec(STUDY.Spec, "quick", None, {}).sweep_widths) + 9
    assert all(config_id(c, 0).startswith("nin-") for c in configs)
    # the MLP sweep keeps its keys and ids (they seed its sharpness searches)
    mlp = sweep_configs(resolve_spec(STUDY.Spec, "quick", None, {}))
    assert call_key(mlp[0]) == "depth2-bs64-dropout0-sgd"
    assert config_id(mlp[0], 1) == "base-w128-d2-lr0.05-bs64-do0-wd0-sgd-noise0-seed1"


# ----------------------------------------------------------------------------- what is measured


@pytest.fixture(scope="module")
def measured_sweep(tmp_path_factory):
    """A tiny NiN sweep on digits with the networks handed to compute_measures and every engine
    outcome recorded."""
    seen, outcomes = [], []
    real_measures, real_train = measures_module.compute_measures, measures_module.train_models

    def record_measures(model, data, *, init_model=None, **kwargs):
        seen.append((copy.deepcopy(model), copy.deepcopy(init_model)))
        return real_measures(model, data, init_model=init_model, **kwargs)

    def record_train(jobs, inputs, config, **kwargs):
        outcome = real_train(jobs, inputs, config, **kwargs)
        outcomes.append((list(jobs), outcome, config))
        return outcome

    patch = pytest.MonkeyPatch()
    patch.setattr(measures_module, "compute_measures", record_measures)
    patch.setattr(measures_module, "train_models", record_train)
    try:
        spec = resolve_spec(STUDY.Spec, "smoke", None, {**TINY_NIN, "strategy": "lockstep"})
        store = run_study(STUDY, spec, tmp_path_factory.mktemp("nin") / "measures")
    finally:
        patch.undo()
    return spec, store.results(), seen, outcomes


def test_measured_nins_carry_the_engines_trained_batchnorm_statistics(measured_sweep):
    spec, results, seen, outcomes = measured_sweep
    models = results[results["kind"] == "model"].set_index("model_id")
    data = spec.data.load()
    pairs = [(job, outcome, k) for jobs, outcome, _ in outcomes for k, job in enumerate(jobs)]
    assert len(pairs) == len(seen) == 3  # base (w16), width 8, lr 0.05: widths in two engine calls
    assert len(outcomes) == 2
    for (job, outcome, k), (trained, initial) in zip(pairs, seen):
        fresh = job.module  # the engine never writes the job's module: it is the initialization
        for name, buffer in trained.named_buffers():
            assert torch.equal(buffer, outcome.stack.buffers[name][k]), name          # the engine's own
        for bn, start in zip(_bn_layers(trained), _bn_layers(fresh)):
            assert int(bn.num_batches_tracked) == spec.optim.epochs                   # one full batch per epoch
            assert not torch.allclose(bn.running_var, start.running_var)              # not fresh statistics
        for (name, buffer), (_, start) in zip(initial.named_buffers(), fresh.named_buffers()):
            assert torch.equal(buffer, start), name                                   # epoch 0: the initial ones
        for (name, p), (_, p0) in zip(initial.named_parameters(), fresh.named_parameters()):
            assert torch.equal(p, p0), name
        # in eval mode the measured network classifies the training set as the engine reported
        with torch.no_grad():
            acc = float((trained.eval()(data.x_train).argmax(-1) == data.y_train).float().mean())
        assert acc == pytest.approx(models.loc[job.key, "train_acc"], abs=1e-6)
        with torch.no_grad():  # and with the initialization's statistics it would not
            restarted = copy.deepcopy(trained)
            for bn, start in zip(_bn_layers(restarted), _bn_layers(fresh)):
                bn.running_mean.copy_(start.running_mean), bn.running_var.copy_(start.running_var)
            unfit = float((restarted(data.x_train).argmax(-1) == data.y_train).float().mean())
        assert abs(unfit - acc) > 0.1


def _plain_sgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, momentum: float, weight_decay: float,
               epochs: int) -> nn.Module:
    """Full-batch SGD in a plain PyTorch loop (the batch is the whole training set, so the engine's
    data order cannot matter)."""
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_a_swept_nin_matches_the_same_nin_trained_alone_in_a_plain_loop(measured_sweep):
    spec, results, seen, outcomes = measured_sweep
    data = spec.data.load()
    base = results[(results["kind"] == "model") & (results["axis"] == "base")].iloc[0]
    assert int(base["epochs"]) == spec.optim.epochs and spec.base_batch_size == spec.data.n_train
    config = sweep_configs(spec)[0]
    alone = _plain_sgd(build_network(spec, data, config, 0), data.x_train, data.y_train, config["lr"],
                       spec.optim.momentum, config["weight_decay"], spec.optim.epochs)
    trained, initial = seen[0]
    for (name, a), (_, b) in zip(alone.state_dict().items(), trained.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    plain = compute_measures(alone, (data.x_train, data.y_train), init_model=initial, sharpness=False)
    for measure in ("l2_norm", "dist_from_init", "spectral_product", "frobenius_product", "path_norm", "margin"):
        assert base[measure] == pytest.approx(plain[measure], rel=1e-3), measure
    assert base["train_acc"] == pytest.approx(plain["train_acc"], abs=1 / len(data.y_train) + 1e-9)


def test_nin_sweep_rows_and_ranking(measured_sweep):
    spec, results, _, _ = measured_sweep
    models = results[results["kind"] == "model"]
    assert set(models["network"]) == {"nin"} and all(models["model_id"].str.startswith("nin-"))
    ranked = results[results["kind"] == "rank"]
    assert set(ranked["measure"]) == set(MEASURES)
    summary = STUDY.summarize(results, results.iloc[0:0], spec)
    assert "NiNs on 60 digits examples" in summary.reading


# ----------------------------------------------------------------------------- the cifar preset


def test_cifar_preset_is_jiangs_nin_on_cifar10_with_a_nin_sized_estimate():
    spec = resolve_spec(STUDY.Spec, "cifar")
    assert spec.network == "nin" and spec.data.dataset == "cifar10" and spec.stop_loss == 0.01
    assert "measures" in EXPERIMENTS
    configs = sweep_configs(spec)
    assert len(configs) == 15 and len(sweep_groups(spec)) == 11
    assert {c["lr"] for c in configs if c["axis"] in ("base", "lr")} == {0.1, 0.032, 0.01}
    assert {c["dropout"] for c in configs} == {0.0, 0.25, 0.5}
    assert {c["weight_decay"] for c in configs} == {0.0, 1e-4, 5e-4}
    work = study_work("measures", spec)
    # at least the training of every model's full budget, and it grows with the width (NiN FLOPs)
    training = sum(3 * 50000 * spec.optim.epochs * forward_flops("nin", "cifar10", width=c["width"], depth=c["depth"])
                   for c in configs) * len(spec.seeds)
    assert training < work.flops < 1.6 * training
    wider = study_work("measures", spec.replace(base_width=384))
    assert wider.flops > 1.5 * work.flops
    assert STUDY.estimate_seconds(spec) == pytest.approx(work.seconds(CPU_FLOPS))
    assert math.isfinite(STUDY.estimate_seconds(resolve_spec(STUDY.Spec, "quick")))


# ----------------------------------------------------------------------------- real data, end to end


@pytest.mark.slow
def test_nin_sweep_on_mnist5k_trains_to_the_stop_rule_and_ranks_finite_measures(tmp_path):
    values = dict(network="nin", dataset="mnist5k", n_train=300, n_test=300, base_width=16, base_depth=2,
                  sweep_widths=[32], sweep_depths=[], sweep_lrs=[0.1], sweep_batch_sizes=[], sweep_dropouts=[],
                  sweep_weight_decays=[], sweep_optimizers=[], base_lr=0.05, base_batch_size=50, epochs=60,
                  stop_loss=0.05, speed_loss=0.1, sharpness_points=100, sharpness_draws=1, worst_case_points=50,
                  worst_case_steps=2, worst_case_bisections=1, seeds=[0, 1])
    spec = resolve_spec(STUDY.Spec, "smoke", None, values)
    results = run_study(STUDY, spec, tmp_path / "measures").results()
    models = results[results["kind"] == "model"]
    assert len(models) == 6 and models["fit"].astype(bool).all()
    assert (models["train_loss"] <= spec.stop_loss + 1e-6).all()
    assert (models["epochs"] < spec.optim.epochs).all()       # stopped by the rule, not the budget
    for measure in MEASURES:
        assert models[measure].map(lambda v: v is not None and math.isfinite(float(v))).all(), measure
    ranked = results[results["kind"] == "rank"]
    assert len(ranked) == len(MEASURES) and (ranked["n"] == len(models)).all()
    assert ranked["tau"].notna().sum() >= len(MEASURES) - 2
