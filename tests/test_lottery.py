"""Lottery tickets: masks, iterative magnitude pruning, the engine's validation split, and the study."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

import genlab.probes.lottery as pruning
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.models import initialize
from genlab.probes.lottery import (
    IterativePruning,
    Mask,
    PruningPlan,
    layer_rates,
    magnitude_prune,
    prunable_weights,
    random_prune,
    reset_weights,
)

torch.set_num_threads(1)


def _mlp(seed: int, widths=(12, 8), d_in: int = 6, classes: int = 3) -> nn.Module:
    layers, prev = [], d_in
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return initialize(nn.Sequential(*layers, nn.Linear(prev, classes)), "default", seed)


def _blobs(n: int, d: int = 6, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=gen) * 2
    y = torch.randint(0, classes, (n,), generator=gen)
    return centers[y] + torch.randn(n, d, generator=gen), y


def _half_mask(model: nn.Module, seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in model.named_parameters() if p.dim() >= 2})


# ----- the mask under training ---------------------------------------------------------------------
@pytest.mark.parametrize("optimizer,momentum,weight_decay", [("sgd", 0.9, 1e-2), ("adam", 0.0, 1e-2), ("adamw", 0.0,
                                                                                                       1e-2)])
def test_pruned_weights_stay_exactly_zero_under_training(optimizer, momentum, weight_decay):
    x, y = _blobs(96)
    xt, yt = _blobs(32, seed=1)
    model = _mlp(0)
    mask = _half_mask(model, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=momentum,
                         weight_decay=weight_decay, batch_size=16, epochs=4, eval_train=False)
    # the module is handed over unmasked: the engine must zero the pruned entries itself
    out = train_models([ModelJob("m", model, seed=0, y_train=y, mask=mask.as_dict())], [InputGroup(x, xt, yt)], config)
    trained = out.stack.state_dict(0)
    for name, m in mask.items():
        assert torch.all(trained[name][~m] == 0.0), name
        assert not torch.equal(trained[name][m], before[name][m]), f"survivors of {name} did not train"


# ----- which weights are prunable ---------------------------------------------------------------------
def test_biases_and_normalization_layers_are_never_prunable():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 8),
                        nn.LayerNorm(8), nn.Linear(8, 2))
    assert prunable_weights(net) == ["0.weight", "3.weight", "5.weight"]
    rates = layer_rates(net, 0.2, conv_rate=0.1)
    assert rates == {"0.weight": 0.1, "3.weight": 0.2, "5.weight": 0.1}  # output at half of 0.2


# ----- magnitude pruning against a hand-computed reference ------------------------------------------
def _tiny() -> dict[str, torch.Tensor]:
    return {"a": torch.tensor([[0.1, -0.9], [0.5, 0.05], [-0.3, 0.7]]),
            "b": torch.tensor([[2.0, -1.0, 0.8], [0.6, 1.4, -0.02]])}


def _dense(weights) -> Mask:
    return Mask({n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()})


def test_layerwise_pruning_matches_hand_reference():
    w = _tiny()
    got = magnitude_prune(w, _dense(w), 0.5, "layerwise")
    # a: drop 3 smallest of |0.1, .9, .5, .05, .3, .7| -> .05, .1, .3;  b: drop .02, .6, .8
    assert torch.equal(got["a"], torch.tensor([[False, True], [True, False], [False, True]]))
    assert torch.equal(got["b"], torch.tensor([[True, True, False], [False, True, False]]))


def test_global_pruning_matches_hand_reference():
    w = _tiny()
    got = magnitude_prune(w, _dense(w), 0.5, "global")
    # pooled |w| sorted: .02 .05 .1 .3 .5 .6 | .7 .8 .9 1 1.4 2 -> drop the first six
    assert torch.equal(got["a"], torch.tensor([[False, True], [False, False], [False, True]]))
    assert torch.equal(got["b"], torch.tensor([[True, True, True], [False, True, False]]))
    # a second round ranks only the survivors: 6 left, drop 3 (.7, .8, .9)
    again = magnitude_prune(w, got, 0.5, "global")
    assert torch.equal(again["a"], torch.zeros(3, 2, dtype=torch.bool))
    assert torch.equal(again["b"], torch.tensor([[True, True, False], [False, True, False]]))


def test_global_pruning_keeps_a_layer_with_its_own_rate_apart():
    w = _tiny()
    got = magnitude_prune(w, _dense(w), 0.5, "global", layer_rates={"b": 0.25})
    # a alone at 0.5 (same as layer-wise); b at 0.25: round(1.5) = 2 dropped -> .02 and .6
    assert torch.equal(got["a"], torch.tensor([[False, True], [True, False], [False, True]]))
    assert torch.equal(got["b"], torch.tensor([[True, True, True], [False, True, False]]))


def test_iterated_pruning_gives_the_geometric_density_layer_by_layer():
    model = _mlp(0, widths=(40, 30), d_in=25, classes=10)
    rates = layer_rates(model, 0.2)   # output layer at 0.1 by default
    mask = Mask.dense(model)
    expected = {n: mask[n].numel() for n in mask}
    gen = torch.Generator().manual_seed(0)
    for k in range(1, 9):
        trained = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
        mask = magnitude_prune(trained, mask, 0.2, "layerwise", rates)
        for name in mask:
            expected[name] -= math.floor(rates[name] * expected[name] + 0.5)
            kept, total = int(mask[name].sum()), mask[name].numel()
            assert kept == expected[name]
            assert abs(kept / total - (1 - rates[name]) ** k) <= k / total + 1e-12
    hidden = [n for n in mask if rates[n] == 0.2]
    assert all(abs(mask.layer_density()[n] - 0.8 ** 8) < 0.01 for n in hidden)


def test_random_prune_keeps_per_layer_counts_and_is_seeded():
    model = _mlp(0, widths=(30,), d_in=20)
    w = {n: p.detach() for n, p in model.named_parameters()}
    mask = magnitude_prune(w, Mask.dense(model), 0.7)
    a = random_prune(mask, torch.Generator().manual_seed(3))
    b = random_prune(mask, torch.Generator().manual_seed(3))
    assert a == b
    assert all(int(a[n].sum()) == int(mask[n].sum()) for n in mask)
    assert not torch.equal(a["0.weight"], mask["0.weight"])


def test_reset_restores_the_exact_initial_values_of_survivors():
    model = _mlp(0)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = {n: t + 1.0 for n, t in init.items()}
    mask = magnitude_prune(trained, Mask.dense(model), 0.5)
    reset = reset_weights(trained, init, mask)
    for name, value in reset.items():
        if name in mask:
            assert torch.equal(value[mask[name]], init[name][mask[name]])
            assert torch.all(value[~mask[name]] == 0)
        else:
            assert torch.equal(value, init[name])  # biases: back to init, never pruned


# ----- the iterative procedure --------------------------------------------------------------------------
def _imp(plan: PruningPlan, epochs: int = 2, seeds=(0, 1)):
    x, y = _blobs(120)
    xt, yt = _blobs(40, seed=1)
    xv, yv = _blobs(40, seed=2)
    modules = [_mlp(s, widths=(16,)) for s in seeds]
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=20, epochs=epochs, eval_train=False)
    return IterativePruning(modules, list(seeds), InputGroup(x, xt, yt, xv, yv), y, config, plan), modules


def test_tickets_are_reset_to_initialization_each_round_and_all_arms_train_in_one_call(monkeypatch):
    calls = []

    def recording(jobs, inputs, config, **kw):
        calls.append([j.key for j in jobs])
        return train_models(jobs, inputs, config, **kw)

    monkeypatch.setattr(pruning, "train_models", recording)
    imp, modules = _imp(PruningPlan(rounds=2, rate=0.3))
    results = imp.run()
    assert [len(c) for c in calls] == [2, 6, 6]  # dense round: tickets only; then 3 arms x 2 seeds per call
    assert {a.arm for a in results[1].arms} == {"ticket", "reinit", "random_prune"}
    jobs, arms = imp.round_jobs()  # round 3's networks, built from round 2's mask
    for job, arm in zip(jobs, arms):
        init = dict(modules[[0, 1].index(arm.seed)].named_parameters())
        for name, p in job.module.named_parameters():
            m = job.mask.get(name)
            if arm.arm == "reinit" or m is None:
                continue
            assert torch.equal(p[m], init[name].detach()[m])
            assert torch.all(p[~m] == 0)
    densities = [r.arms[0].density for r in results]
    assert densities[0] == 1.0 and densities[1] == (67 + 41) / 144 and densities[2] < densities[1]  # 96 -> 67, 48 -> 41
    for r in results[1:]:
        ticket = {a.seed: a.layer_density for a in r.arms if a.arm == "ticket"}
        for a in r.arms:
            assert a.layer_density == ticket[a.seed]  # controls at exactly the ticket's per-layer sparsity


def test_rewinding_starts_survivors_from_the_dense_run_after_k_epochs():
    imp, modules = _imp(PruningPlan(rounds=1, rate=0.5, rewind_epoch=1), epochs=3, seeds=(0,))
    imp.run_round()
    single = IterativePruning([_mlp(0, widths=(16,))], [0], imp.inputs, imp.y_train,
                              TrainConfig(**{**imp.config.__dict__, "epochs": 1}), PruningPlan(rounds=0))
    after_one = single.run_round().outcome.stack.state_dict(0)
    start = imp.lineages[0].start
    init = dict(modules[0].named_parameters())
    for name, value in start.items():
        assert torch.allclose(value, after_one[name], atol=1e-6)
        assert not torch.allclose(value, init[name].detach())


def test_pruning_state_round_trips():
    imp, _ = _imp(PruningPlan(rounds=2, rate=0.4))
    imp.run_round()
    imp.run_round()
    fresh, _ = _imp(PruningPlan(rounds=2, rate=0.4))
    fresh.load_state_dict(imp.state_dict())
    a_jobs, a_arms = imp.round_jobs()
    b_jobs, b_arms = fresh.round_jobs()
    assert [a.key for a in a_arms] == [b.key for b in b_arms]
    for ja, jb in zip(a_jobs, b_jobs):
        assert all(torch.equal(ja.mask[n], jb.mask[n]) for n in ja.mask)
        assert all(torch.equal(p, q) for p, q in zip(ja.module.parameters(), jb.module.parameters()))


def test_bad_plans_are_user_errors():
    with pytest.raises(UserError, match="rate"):
        PruningPlan(rounds=2, rate=1.0)
    with pytest.raises(UserError, match="controls"):
        PruningPlan(rounds=2, controls=("shuffle",))
    with pytest.raises(UserError, match="rewind_epoch"):
        _imp(PruningPlan(rounds=1, rewind_epoch=2), epochs=2)


# ----- the engine's validation split ------------------------------------------------------------------
def test_engine_records_validation_metrics_when_a_validation_set_is_given():
    x, y = _blobs(60)
    xt, yt = _blobs(30, seed=1)
    xv, yv = _blobs(30, seed=2)            # disjoint from the test set
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=20, epochs=2)
    job = lambda: ModelJob("m", _mlp(0), seed=0, y_train=y)  # noqa: E731
    with_val = train_models([job()], [InputGroup(x, xt, yt, xv, yv)], config)
    assert len(with_val.curves) == 3
    assert any(c["val_loss"] != c["test_loss"] for c in with_val.curves)
    # the recorded validation accuracy is the trained model's accuracy on (xv, yv), computed here by hand
    trained = with_val.stack.state_dict(0)
    model = _mlp(0)
    model.load_state_dict({n: t for n, t in trained.items() if n in model.state_dict()})
    with torch.no_grad():
        by_hand = float((model.eval()(xv).argmax(1) == yv).double().mean())
        on_test = float((model(xt).argmax(1) == yt).double().mean())
    assert with_val.outcomes[0].val_acc == pytest.approx(by_hand, abs=1e-9)
    assert with_val.outcomes[0].test_acc == pytest.approx(on_test, abs=1e-9)
    without = train_models([job()], [InputGroup(x, xt, yt)], config)
    assert "val_loss" not in without.curves[0] and math.isnan(without.outcomes[0].val_loss)
    with pytest.raises(ValueError, match="together"):
        InputGroup(x, xt, yt, x_val=xt)


def test_rewound_arms_train_the_epochs_left_after_the_rewind_point():
    """#17.5: with rewinding to epoch k, the ticket and random-pruning control start from weights already
    trained k epochs, so they get epochs - k more; reinit starts fresh and gets all epochs."""
    imp, _ = _imp(PruningPlan(rounds=1, rate=0.5, rewind_epoch=1), epochs=3, seeds=(0,))
    dense = imp.run_round()
    assert [a.epochs for a in dense.arms] == [3]
    result = imp.run_round()
    budgets = {a.arm: a.epochs for a in result.arms}
    assert budgets == {"ticket": 2, "reinit": 3, "random_prune": 2}
    assert PruningPlan(rounds=1).epochs_after_start("ticket", 1, 3) == 3   # no rewinding: no head start


def test_default_reinit_uses_the_models_own_initializer():
    from genlab.models import build_model

    for scheme in ("glorot-normal", "kaiming", "default"):
        net = build_model("mlp", (6,), 3, widths=[12, 8], init=scheme, seed=0)
        fresh = pruning.default_reinit(net, 7)
        same_scheme = build_model("mlp", (6,), 3, widths=[12, 8], init=scheme, seed=7)
        for (name, p), q in zip(fresh.named_parameters(), same_scheme.parameters()):
            assert torch.equal(p, q), (scheme, name)
    plain = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))   # not built by genlab: PyTorch's scheme
    expected = initialize(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), "default", 3)
    assert all(torch.equal(p, q) for p, q in zip(pruning.default_reinit(plain, 3).parameters(),
                                                  expected.parameters()))


# ----- the study ---------------------------------------------------------------------------------------
def test_early_stop_is_chosen_on_validation_not_test():
    from genlab.studies.lottery import early_stop

    curve = pd.DataFrame({"epoch": [0, 1, 2, 3], "step": [0, 10, 20, 30], "val_loss": [9.0, 0.5, 0.4, 0.6],
                          "val_acc": [0.1, 0.8, 0.85, 0.84], "test_acc": [0.1, 0.9, 0.7, 0.95]})
    stop = early_stop(curve, "val_loss")
    assert int(stop["step"]) == 20 and stop["test_acc"] == 0.7
    by_acc = early_stop(curve.assign(val_acc=[0.1, 0.85, 0.85, 0.84]), "val_acc")
    assert int(by_acc["epoch"]) == 1  # ties go to the earliest evaluation
    assert early_stop(curve.assign(val_loss=[1.0, float("nan"), float("nan"), float("nan")])) is None


def test_spec_rejects_rewinding_past_the_budget():
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    with pytest.raises(UserError, match="rewind_epoch"):
        resolve_spec(get_study("lottery").Spec, "quick", None, {"epochs": 3, "rewind_epoch": 3})


def test_study_end_to_end_tiny(tmp_path):
    from genlab.run.runner import run_study
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    study = get_study("lottery")
    spec = resolve_spec(study.Spec, "smoke", None, {})
    store = run_study(study, spec, tmp_path / "run")
    results, curves = store.results(), store.curves()
    for column in ("model", "round", "weights_remaining", "arm", "seed", "early_stop_iter",
                   "test_acc_at_early_stop", "final_test_acc"):
        assert column in results
    assert len(results) == 2 + 2 * 2 * 3
    assert set(results["arm"]) == {"ticket", "reinit", "random_prune"}
    per_round = results.groupby("round")["weights_remaining"].agg(["min", "max"])
    assert per_round.loc[0, "min"] == 100.0 and (per_round["max"] - per_round["min"]).max() < 1e-9
    assert per_round.loc[2, "max"] < per_round.loc[1, "min"] < 100.0
    assert (results["early_stop_iter"] > 0).all() and results["test_acc_at_early_stop"].between(0, 1).all()
    assert {"val_loss", "val_acc", "test_acc", "round", "arm"} <= set(curves.columns)
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").glob("*.png"))
    assert figures == ["lottery_curves.png", "lottery_sparsity.png"]
    summary = study.summarize(results, curves, spec)
    assert len(summary.checks) == 2 and "dense" in summary.verdict


def test_no_test_set_statistic_is_used_for_selection(tmp_path, monkeypatch):
    """The validation split is carved from the training set, disjoint from the test set, and early stopping
    and pruning look at it alone: a run whose test labels are shuffled (its test loss then rises from the
    first epoch on) selects the same stopping points and masks."""
    import dataclasses

    import genlab.data
    from genlab.data.splits import split_validation
    from genlab.run.runner import run_study
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    data_x = torch.arange(20.0).reshape(10, 2)
    x_fit, _, x_val, _ = split_validation(data_x, torch.arange(10), 3, seed=0)
    assert len(x_val) == 3 and not set(x_val[:, 0].tolist()) & set(x_fit[:, 0].tolist())
    study = get_study("lottery")
    spec = resolve_spec(study.Spec, "smoke", None, {"epochs": 6, "rounds": 1})
    runs = [run_study(study, spec, tmp_path / "clean").results()]
    load = genlab.data.load_dataset

    def shuffled_test_labels(*args, **kwargs):
        data = load(*args, **kwargs)
        order = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(0))
        return dataclasses.replace(data, y_test=data.y_test[order])

    monkeypatch.setattr(genlab.data, "load_dataset", shuffled_test_labels)
    runs.append(run_study(study, spec, tmp_path / "shuffled").results())
    chosen = ["round", "arm", "seed", "weights_remaining", "layer_density", "early_stop_epoch", "early_stop_iter",
              "val_loss_at_early_stop", "val_acc_at_early_stop"]
    pd.testing.assert_frame_equal(runs[0][chosen], runs[1][chosen])
    assert (runs[1]["test_acc_at_early_stop"] < runs[0]["test_acc_at_early_stop"]).all()


def test_augmentation_reaches_every_arm_of_every_round(monkeypatch):
    """``--augment crop-flip`` (Frankle et al.'s VGG/ResNet runs, open_lth's CIFAR default) is passed
    to every network the rounds train, and changes what they learn."""
    from genlab.data.augment import RandomShift
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    spec = resolve_spec(get_study("lottery").Spec, "smoke", None, {"augment": "crop-flip", "crop_padding": 2})
    augment = spec.augment.build()
    assert isinstance(augment, RandomShift)
    seen = []

    def recording(jobs, inputs, config, **kw):
        seen.extend(job.augment for job in jobs)
        return train_models(jobs, inputs, config, **kw)

    monkeypatch.setattr(pruning, "train_models", recording)
    x = torch.rand(60, 1, 6, 6)
    y = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(0))
    inputs = InputGroup(x, x[:20], y[:20], x[:20], y[:20])
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=20, epochs=2, eval_train=False)
    modules = [initialize(nn.Sequential(nn.Flatten(), nn.Linear(36, 3)), "default", s) for s in (0, 1)]
    plain = IterativePruning(modules, [0, 1], inputs, y, config, PruningPlan(rounds=1, rate=0.5)).run()
    assert seen == [None] * len(seen)
    seen.clear()
    shifted = IterativePruning(modules, [0, 1], inputs, y, config, PruningPlan(rounds=1, rate=0.5),
                               augment=augment).run()
    assert len(seen) == 2 + 6 and all(a is augment for a in seen)
    assert plain[0].outcome.outcomes[0].test_loss != shifted[0].outcome.outcomes[0].test_loss
