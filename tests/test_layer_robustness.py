"""Layer robustness (Zhang, Bengio & Singer 2019): the re-initialization and re-randomization
operations, the batched evaluation, the API and the study end to end, and the paper's FCN 3x256
finding on mnist5k."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import genlab
from genlab.data import load_dataset
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.models import build_model
from genlab.probes.layer_robustness import (
    default_checkpoint_epochs,
    distance_from_init,
    draw_generator,
    evaluate_param_sets,
    fresh_draw,
    layer_groups,
    layer_verdicts,
    reinitialized,
    resolve_checkpoint_epochs,
    trained_model_table,
)
from genlab.studies.layer_robustness import claim_checks, per_layer_means

torch.set_num_threads(1)


def blobs(n: int, seed: int, dim: int = 12, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class clusters: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 2.5
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g), y


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def trained_blobs():
    """An MLP trained on blobs through the API, with checkpoints at 0, 2 and 6."""
    net = build_model("mlp", (12,), 3, widths=[32, 32], seed=3)
    table = genlab.layer_robustness(net, blobs(300, 0), blobs(200, 1), epochs=6, checkpoint_epochs=[2], lr=0.05,
                                    batch_size=50, draws=2, seed=3)
    return net, table


# ----- naming layers ------------------------------------------------------------------------

def test_mlp_layers_are_its_linear_layers_in_order():
    net = build_model("mlp", (1, 4, 4), 10, widths=[8, 8])
    groups = layer_groups(net)
    assert [g.name for g in groups] == ["1", "3", "5"]
    assert [g.label for g in groups] == ["Linear 16->8", "Linear 8->8", "Linear 8->10"]
    assert groups[0].param_names == ("1.weight", "1.bias")
    assert all(g.kind == "layer" for g in groups)


def test_residual_blocks_group_their_layers():
    net = build_model("resnet", (1, 8, 8), 10, channels=4, blocks=2)
    layers = [g.name for g in layer_groups(net, "layer")]
    assert layers == ["stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "head"]
    blocks = layer_groups(net, "block")
    assert [g.name for g in blocks] == ["stem", "blocks.0", "blocks.1", "head"]
    assert blocks[1].kind == "block" and blocks[1].leaves == ("blocks.0.conv1", "blocks.0.conv2")
    assert set(blocks[1].param_names) == {f"blocks.0.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    both = layer_groups(net, "both")
    assert [g.name for g in both] == layers + ["blocks.0", "blocks.1"]


def test_named_layers_and_their_errors():
    net = build_model("resnet", (1, 8, 8), 10, channels=4, blocks=2)
    groups = layer_groups(net, layers=["blocks.1", "head"])
    assert [(g.name, g.kind) for g in groups] == [("blocks.1", "block"), ("head", "layer")]
    with pytest.raises(UserError, match="no submodule named 'nope'"):
        layer_groups(net, layers=["nope"])
    with pytest.raises(UserError, match="no parameters"):
        layer_groups(net, layers=["pool"])
    with pytest.raises(UserError, match="granularity"):
        layer_groups(net, "stage")


def test_checkpoint_epochs():
    assert default_checkpoint_epochs(15) == [0, 1, 2, 3, 5, 10, 15]
    assert default_checkpoint_epochs(100) == [0, 1, 2, 3, 5, 10, 20, 50, 100]
    assert resolve_checkpoint_epochs([4, 2], 6) == [0, 2, 4, 6]
    with pytest.raises(UserError, match=r"checkpoint_epochs \[9\]"):
        resolve_checkpoint_epochs([9], 6)


# ----- the operations -----------------------------------------------------------------------

def test_reinitialization_changes_only_the_layer():
    final = params_of(build_model("mlp", (6,), 3, widths=[5, 5], seed=0))
    start = params_of(build_model("mlp", (6,), 3, widths=[5, 5], seed=1))
    for group in layer_groups(build_model("mlp", (6,), 3, widths=[5, 5])):
        mixed = reinitialized(final, start, group)
        assert list(mixed) == list(final)
        for name, value in mixed.items():
            expected = start[name] if name in group.param_names else final[name]
            assert torch.equal(value, expected), name
            assert value.data_ptr() == expected.data_ptr()  # other layers are the very same tensors


def test_rerandomization_draws_from_the_models_initializer():
    net = build_model("mlp", (20,), 4, widths=[50], init="default", seed=0)
    before = params_of(net)
    group = layer_groups(net)[0]
    first = fresh_draw(net, group, "default", draw_generator(0, 0, 0))
    again = fresh_draw(net, group, "default", draw_generator(0, 0, 0))
    other = fresh_draw(net, group, "default", draw_generator(0, 0, 1))
    assert all(torch.equal(first[n], again[n]) for n in first)            # deterministic in (seed, group, draw)
    assert not torch.equal(first["1.weight"], other["1.weight"])          # draws differ
    assert not torch.equal(first["1.weight"], before["1.weight"])         # a new draw, not the initial value
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # the model is untouched
    bound = 20 ** -0.5  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance bound^2 / 3
    assert first["1.weight"].abs().max() <= bound
    assert abs(float(first["1.weight"].var()) - bound ** 2 / 3) < 0.15 * bound ** 2 / 3
    kaiming = fresh_draw(net, group, "kaiming", draw_generator(0, 0, 0))
    assert abs(float(kaiming["1.weight"].std()) - (2 / 20) ** 0.5) < 0.1 * (2 / 20) ** 0.5
    assert torch.equal(kaiming["1.bias"], torch.zeros(50))


def test_rerandomization_refuses_parameters_it_cannot_draw():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.gain

    net = nn.Sequential(nn.Linear(3, 3), Scaled())
    with pytest.raises(UserError, match="'1'.*'gain'"):
        fresh_draw(net, layer_groups(net)[1], "default", draw_generator(0, 1, 0))


def test_distance_from_init():
    group = layer_groups(nn.Sequential(nn.Linear(2, 2)))[0]
    init = {"0.weight": torch.tensor([[3.0, 0.0], [0.0, 0.0]]), "0.bias": torch.tensor([0.0, 4.0])}
    final = {"0.weight": torch.tensor([[3.0, 1.0], [0.0, 2.0]]), "0.bias": torch.tensor([0.0, 4.0])}
    l2, rel = distance_from_init(final, init, group)
    assert l2 == pytest.approx(5 ** 0.5)
    assert rel == pytest.approx(5 ** 0.5 / 5)


# ----- batched evaluation -------------------------------------------------------------------

@pytest.mark.parametrize("family,shape,options", [("mlp", (1, 6, 6), {"widths": [16, 16]}),
                                                  ("lenet", (1, 12, 12), {"widths": [12]}),
                                                  ("resnet", (1, 8, 8), {"channels": 4, "blocks": 1})])
def test_batched_evaluation_equals_one_at_a_time(family, shape, options):
    nets = [build_model(family, shape, 5, seed=s, **options).eval() for s in range(5)]
    sets = [params_of(n) for n in nets]
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(70, *shape, generator=g), torch.randint(0, 5, (70,), generator=g)
    loss_all, acc_all = evaluate_param_sets(nets[0], {}, sets, x, y, batch_size=32, models_per_pass=5)
    loss_one, acc_one = evaluate_param_sets(nets[0], {}, sets, x, y, batch_size=32, models_per_pass=1)
    np.testing.assert_array_equal(acc_all, acc_one)
    np.testing.assert_allclose(loss_all, loss_one, rtol=1e-5)
    with torch.no_grad():  # and both are what each module computes on its own
        direct = [float((n(x).argmax(1) == y).double().mean()) for n in nets]
    np.testing.assert_array_equal(acc_one, direct)


@pytest.mark.parametrize("family,shape,options", [("mlp", (1, 6, 6), {"widths": [16, 16]}),
                                                  ("lenet", (1, 12, 12), {"widths": [12]})])
def test_sharing_the_unchanged_prefix_gives_the_same_numbers(family, shape, options):
    final = params_of(build_model(family, shape, 5, seed=0, **options))
    template = build_model(family, shape, 5, seed=0, **options).eval()
    donor = params_of(build_model(family, shape, 5, seed=1, **options))
    sets = [final] + [{**final, n: donor[n]} for n in final]  # each set resets one tensor
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(70, *shape, generator=g), torch.randint(0, 5, (70,), generator=g)
    plain = evaluate_param_sets(template, {}, sets, x, y, batch_size=32)
    shared = evaluate_param_sets(template, {}, sets, x, y, batch_size=32, reference=final)
    np.testing.assert_array_equal(shared[1], plain[1])
    np.testing.assert_allclose(shared[0], plain[0], rtol=1e-5)
    assert len(set(np.round(plain[1], 6))) > 1  # the resets do change the accuracy


def test_evaluation_is_in_eval_mode():
    net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 3))
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    first = evaluate_param_sets(net, {}, [params_of(net)] * 3, x, y, models_per_pass=3)
    with torch.no_grad():
        expected = float(net.eval()(x).argmax(1).eq(y).double().mean())
    assert np.all(first[1] == expected)


# ----- the API ------------------------------------------------------------------------------

def test_api_table_shape_and_final_checkpoint_reproduces_training(trained_blobs):
    net, table = trained_blobs
    groups = layer_groups(net)
    assert set(table["operation"]) == {"reinit", "rerandomize"}
    reinit = table[table.operation == "reinit"]
    assert sorted(reinit["checkpoint_epoch"].unique()) == [0, 2, 6]
    assert len(reinit) == 3 * len(groups) and len(table) - len(reinit) == 2 * len(groups)
    final = reinit[reinit.checkpoint_epoch == 6]
    assert (final["test_acc"] == final["trained_test_acc"]).all()   # exactly, not approximately
    assert (final["acc_drop"] == 0).all()
    assert table["trained_test_acc"].iloc[0] > 0.9


def test_a_layer_is_critical_exactly_when_its_measured_reset_cost_exceeds_the_threshold():
    """The ``threshold`` reaches the verdicts, in the right direction, on scikit-learn's digits
    (where resetting a layer of a briefly trained MLP costs 10-55 points): at 0.10 the layers whose
    reset costs more are critical, and just above the largest cost every layer is robust."""
    data = load_dataset("digits")
    net = build_model("mlp", data.input_shape, 10, widths=[32, 32], seed=3)

    def verdicts(threshold):
        table = genlab.layer_robustness(net, (data.x_train, data.y_train), (data.x_test, data.y_test), epochs=4,
                                        lr=0.05, batch_size=50, draws=1, seed=3, threshold=threshold)
        reset = table[(table.operation == "reinit") & (table.checkpoint_epoch == 0)].set_index("layer")
        return layer_verdicts(table).set_index("layer")["verdict"], reset["trained_test_acc"] - reset["test_acc"]

    at_ten, cost = verdicts(0.10)
    assert cost.max() > 0.2, cost
    assert (at_ten[cost.index[cost > 0.11]] == "critical").all() and (at_ten[cost.index[cost < 0.09]] == "robust").all()
    lenient, again = verdicts(float(cost.max()) + 0.01)
    assert again.equals(cost) and (lenient == "robust").all(), lenient


def test_rerandomized_accuracy_is_the_mean_over_draws(trained_blobs):
    _, table = trained_blobs
    verdicts = layer_verdicts(table)
    assert len(verdicts) == 3
    for row in verdicts.itertuples():
        assert row.rerandomized_test_acc == pytest.approx(
            table[(table.layer == row.layer) & (table.operation == "rerandomize")]["test_acc"].mean())


def test_api_leaves_the_model_alone_and_matches_the_engine():
    net = build_model("mlp", (12,), 3, widths=[16], seed=5)
    before = params_of(net)
    train, test = blobs(200, 2), blobs(100, 3)
    table = genlab.layer_robustness(net, train, test, epochs=3, lr=0.05, batch_size=50, draws=1, seed=5)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    job = ModelJob("m", build_model("mlp", (12,), 3, widths=[16], seed=5), seed=5, y_train=train[1])
    outcome = train_models([job], [InputGroup(train[0], test[0], test[1])],
                           TrainConfig(lr=0.05, batch_size=50, epochs=3, checkpoint_epochs=(0, 3)))
    assert table["trained_test_acc"].iloc[0] == outcome.outcomes[0].test_acc
    again = trained_model_table(outcome, 0, net, test[0], test[1], groups=layer_groups(net), draws=1, seed=5)
    pd.testing.assert_series_equal(table[table.checkpoint_epoch.isin([0, 3]) | table.draw.notna()]["test_acc"]
                                   .reset_index(drop=True), again["test_acc"].reset_index(drop=True))


@pytest.mark.parametrize("kwargs,message", [
    (dict(threshold=10), "threshold=10"),
    (dict(epochs=0), "epochs=0"),
    (dict(checkpoint_epochs=[7]), r"checkpoint_epochs \[7\]"),
    (dict(init="lecun"), "unknown init 'lecun'"),
    (dict(train_data=(torch.zeros(5, 12), torch.zeros(4, dtype=torch.long))), "5 inputs but 4 labels"),
    (dict(train_data=(torch.zeros(5, 12), torch.zeros(5))), "integer class indices"),
])
def test_api_user_errors(kwargs, message):
    args = dict(train_data=blobs(20, 0), test_data=blobs(20, 1), epochs=2)
    args.update(kwargs)
    with pytest.raises(UserError, match=message):
        genlab.layer_robustness(build_model("mlp", (12,), 3, widths=[4]), **args)


# ----- the study ----------------------------------------------------------------------------

def test_spec_validation():
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    spec_cls = get_study("layer-robustness").Spec
    assert resolve_spec(spec_cls, "quick").networks == ["fcn3x256", "fcn4x128", "lenet", "resnet"]
    with pytest.raises(UserError, match="unknown network 'vgg'"):
        resolve_spec(spec_cls, "quick", None, {"networks": ["vgg"]})
    with pytest.raises(UserError, match="unknown field 'widths'"):  # the study has no such setting
        resolve_spec(spec_cls, "quick", None, {"widths": [64]})


def test_study_end_to_end_tiny(tmp_path):
    from genlab.run.runner import run_study
    from genlab.spec import resolve_spec
    from genlab.studies import get_study

    study = get_study("layer-robustness")
    spec = resolve_spec(study.Spec, "smoke", None, {"networks": ["fcn2x32", "resnet"], "n_train": 120,
                                                    "n_test": 60, "resnet_channels": 4, "resnet_blocks": 1})
    store = run_study(study, spec, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    for column in ("model", "layer", "operation", "checkpoint_epoch", "draw", "test_acc", "test_err",
                   "trained_test_acc", "verdict", "dist_l2", "dist_rel"):
        assert column in results.columns
    assert set(results["model"]) == {"fcn2x32", "resnet"}
    resnet = results[results.model == "resnet"]
    assert {"stem", "blocks.0.conv1", "blocks.0.conv2", "head", "blocks.0"} == set(resnet["layer"])
    assert sorted(results[results.operation == "rerandomize"]["draw"].astype(int).unique()) == [0, 1]
    assert results[results.operation == "reinit"]["draw"].isna().all()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for name in ("layer_robustness_heatmaps.png", "layer_robustness_distances.png"):
        assert (store.figures_dir / name).stat().st_size > 10_000
    summary = study.summarize(store.results(), store.curves(), spec)
    assert "fcn2x32" in summary.verdict and "resnet" in summary.reading


def test_fcn_3x256_on_mnist5k_first_layer_critical_later_layers_robust():
    """The paper's (and the blog's) FCN finding at the quick preset's settings: on 4000 MNIST
    digits, SGD, 15 epochs. Re-randomizing any layer -> near chance; resetting the first layer to
    its initial value costs >= 20 points; resetting any later layer stays within 5 points."""
    data = load_dataset("mnist5k")
    net = build_model("mlp", data.input_shape, 10, widths=[256, 256, 256], seed=0)
    table = genlab.layer_robustness(net, (data.x_train, data.y_train), (data.x_test, data.y_test), epochs=15,
                                    checkpoint_epochs=[0], lr=0.03, momentum=0.9, batch_size=64, draws=3, seed=0)
    v = layer_verdicts(table)
    checks = dict(claim_checks(per_layer_means(v.assign(model="fcn3x256"))))
    assert checks["every layer of every network: re-randomizing costs >= 10 points more than resetting it to its "
                  "initial value"]
    assert checks["every FC network: the first layer is critical and at least one later layer is robust"]
    trained = v["trained_test_acc"].iloc[0]
    assert trained >= 0.90
    assert v["rerandomized_test_acc"].max() <= 0.20
    assert trained - v["reinit0_test_acc"].iloc[0] >= 0.20
    assert (trained - v["reinit0_test_acc"].iloc[1:]).max() <= 0.05
    assert v["verdict"].tolist() == ["critical", "robust", "robust", "robust"]


def test_claim_checks_fail_when_rerandomizing_is_no_worse_than_resetting():
    """The study's checks of the paper's claims, on hand-made per-layer numbers: each fails on the table that
    contradicts it."""
    def table(reinit0, rerand, critical):
        return pd.DataFrame({"model": "fcn2x8", "layer_index": range(len(reinit0)), "layer": map(str, range(3)),
                             "kind": "layer", "reinit0": reinit0, "rerand": rerand, "critical": critical})

    margin = ("every layer of every network: re-randomizing costs >= 10 points more than resetting it to its "
              "initial value")
    fcn = "every FC network: the first layer is critical and at least one later layer is robust"
    paper = dict(claim_checks(table([0.4, 0.9, 0.95], [0.1, 0.1, 0.12], [1.0, 0.0, 0.0])))
    assert paper[margin] and paper[fcn]
    # re-randomizing the last layer costs only 5 points more than resetting it
    assert not dict(claim_checks(table([0.4, 0.9, 0.95], [0.1, 0.1, 0.90], [1.0, 0.0, 0.0])))[margin]
    # every layer critical; or the first layer robust
    assert not dict(claim_checks(table([0.4, 0.5, 0.5], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0])))[fcn]
    assert not dict(claim_checks(table([0.9, 0.5, 0.9], [0.1, 0.1, 0.1], [0.0, 1.0, 0.0])))[fcn]
