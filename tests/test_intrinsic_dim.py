"""Intrinsic dimension (Li et al. 2018): the engine's looped path for subspace models, the d search
and its log-d interpolation, the public API and the study end to end."""
import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from genlab.engine import InputGroup, ModelJob, TrainConfig, stack_modules, stacked_forward, train_models
from genlab.errors import UserError
from genlab.models import build_model
from genlab.probes.intrinsic_dim import (
    Crossing,
    SearchSettings,
    find_crossing,
    intrinsic_dimension,
    log_interpolate,
    matched_subspace_lr,
    search_dimension,
    subspace_model,
)
from genlab.probes.subspace import IdentityProjection, SubspaceModel
from genlab.spec import resolve_spec


def toy_data(n=120, dim=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x @ torch.randn(dim, classes, generator=g)).argmax(1)
    return x[:80], y[:80], x[80:], y[80:]


def small_mlp(seed: int, dim: int = 10, widths=(12,)) -> nn.Module:
    return build_model("mlp", (dim,), 3, widths=list(widths), seed=seed)


def identity_subspace(module: nn.Module) -> SubspaceModel:
    D = sum(p.numel() for p in module.parameters())
    model = SubspaceModel(module, d=D, projection=IdentityProjection(D))
    model._genlab_no_vmap = True
    return model


# ----- the engine trains subspace models -----------------------------------------------------

@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_identity_subspace_through_engine_reproduces_direct_training(optimizer, momentum):
    """d = D and P = I: theta_0 + theta_d after training equals directly trained theta (2 seeds batched)."""
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer=optimizer, momentum=momentum, lr=0.05 if optimizer == "sgd" else 0.01,
                      batch_size=16, epochs=3)
    inputs = [InputGroup(x, xt, yt)]
    direct = train_models([ModelJob(f"m{s}", small_mlp(s), seed=s, y_train=y) for s in (0, 1)], inputs, cfg)
    wrapped = [identity_subspace(small_mlp(s)) for s in (0, 1)]
    sub = train_models([ModelJob(f"m{s}", wrapped[s], seed=s, y_train=y) for s in (0, 1)], inputs, cfg)
    for k in (0, 1):
        theta = wrapped[k].theta_0 + sub.stack.params["theta_d"][k]
        expected = torch.cat([p.reshape(-1) for p in direct.stack.module(k).parameters()])
        torch.testing.assert_close(theta, expected, rtol=1e-4, atol=1e-5)
        assert sub.outcomes[k].test_acc == pytest.approx(direct.outcomes[k].test_acc)
        assert sub.outcomes[k].train_loss == pytest.approx(direct.outcomes[k].train_loss, rel=1e-4)


def test_looped_models_of_different_d_and_projection_train_as_if_alone():
    """Padding theta_d to the largest d, mixing projections and a diverging neighbour change nothing."""
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="adam", lr=0.05, batch_size=20, epochs=3)
    inputs = [InputGroup(x, xt, yt)]
    specs = [(5, "fastfood", None), (9, "dense", None), (7, "sparse", None), (6, "fastfood", 1e30)]

    def job(i, d, projection, lr):
        return ModelJob(f"j{i}", subspace_model(small_mlp(i), d, projection, seed=i), seed=i, y_train=y, lr=lr)

    together = train_models([job(i, *s) for i, s in enumerate(specs)], inputs, cfg)
    assert together.outcomes[3].diverged and not any(o.diverged for o in together.outcomes[:3])
    for i, (d, projection, lr) in enumerate(specs[:3]):
        alone = train_models([job(i, d, projection, lr)], inputs, cfg)
        theta_together = together.stack.params["theta_d"][i]
        torch.testing.assert_close(theta_together[:d], alone.stack.params["theta_d"][0], rtol=1e-4, atol=1e-6)
        assert bool((theta_together[d:] == 0).all())
        assert together.outcomes[i].test_acc == pytest.approx(alone.outcomes[0].test_acc)


def test_looped_stack_module_returns_the_trained_subspace_model_evaluated_without_dropout():
    x, y, xt, yt = toy_data()
    models = [subspace_model(build_model("mlp", (10,), 3, widths=[32], dropout=0.5, seed=s), 6, "fastfood", seed=s)
              for s in (0, 1)]
    out = train_models([ModelJob(f"m{s}", models[s], seed=s, y_train=y) for s in (0, 1)], [InputGroup(x, xt, yt)],
                       TrainConfig(optimizer="adam", lr=0.05, epochs=2, batch_size=40))
    for k in (0, 1):
        trained = out.stack.module(k)
        torch.testing.assert_close(trained.theta_d, out.stack.params["theta_d"][k])
        assert bool((models[k].theta_d == 0).all())  # the job's own module is left at its initial point
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(trained.eval()(xt), yt).item()
        assert loss == pytest.approx(out.outcomes[k].test_loss, rel=1e-5)  # evaluated in eval mode (no dropout)


class Scaled(nn.Module):
    """A module with a (per-model) buffer, to check buffers follow the active subset under vmap."""

    def __init__(self, seed: int, scale: float):
        super().__init__()
        self.linear = small_mlp(seed)
        self.register_buffer("scale", torch.tensor(scale))

    def forward(self, x):
        return self.linear(x) * self.scale


def test_vmapped_buffers_follow_the_active_models_after_one_diverges():
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=20, epochs=3)
    inputs = [InputGroup(x, xt, yt)]
    jobs = [ModelJob("bad", Scaled(0, 1.0), seed=0, y_train=y, lr=1e12),
            ModelJob("good", Scaled(1, 0.5), seed=1, y_train=y)]
    together = train_models(jobs, inputs, cfg)
    alone = train_models([ModelJob("good", Scaled(1, 0.5), seed=1, y_train=y)], inputs, cfg)
    assert together.outcomes[0].diverged
    for name, value in alone.stack.state_dict(0).items():
        torch.testing.assert_close(together.stack.state_dict(1)[name], value, rtol=1e-4, atol=1e-6)


def test_looped_forward_matches_each_model_called_alone():
    models = [subspace_model(small_mlp(s), d, "fastfood", seed=s) for s, d in ((0, 4), (1, 8))]
    stack = stack_modules(models)
    params = {"theta_d": torch.randn(2, 8, generator=torch.Generator().manual_seed(0)) * stack.masks["theta_d"]}
    x = torch.randn(5, 10)
    out = stacked_forward(stack, params, x, shared_input=True)
    for k, model in enumerate(models):
        with torch.no_grad():
            model.theta_d.copy_(params["theta_d"][k, :model.d])
        torch.testing.assert_close(out[k], model(x))
    only_second = stacked_forward(stack, {"theta_d": params["theta_d"][1:]}, x, shared_input=True,
                                  models=torch.tensor([1]))
    torch.testing.assert_close(only_second[0], out[1])


# ----- the search, on synthetic accuracy curves ----------------------------------------------

def test_log_interpolation_is_linear_in_log_d():
    assert log_interpolate(100, 0.5, 400, 0.9, 0.7) == pytest.approx(200.0)
    assert log_interpolate(100, 0.5, 400, 0.9, 0.9) == pytest.approx(400.0)
    assert log_interpolate(10, 0.0, 1000, 1.0, 0.25) == pytest.approx(10 * 100 ** 0.25)
    with pytest.raises(ValueError):
        log_interpolate(100, 0.95, 400, 0.99, 0.9)


def test_find_crossing_uses_the_smallest_d_reaching_the_target():
    # non-monotone: 400 already reaches, 566 dips below; d_int lies between 200 and 400
    crossing = find_crossing([800, 200, 566, 400], [0.95, 0.6, 0.85, 0.92], 0.9)
    assert (crossing.d_below, crossing.d_above, crossing.status) == (200, 400, "interpolated")
    assert crossing.d_int == pytest.approx(log_interpolate(200, 0.6, 400, 0.92, 0.9))
    assert find_crossing([50, 100], [0.95, 0.97], 0.9) == Crossing(50.0, None, 50, "upper_bound")
    assert find_crossing([50, 100], [0.3, 0.5], 0.9) == Crossing(None, 100, None, "not_reached")
    diverged = find_crossing([10, 20], [float("nan"), 1.0], 0.5)  # a diverged run counts as accuracy 0
    assert diverged.d_int == pytest.approx(log_interpolate(10, 0.0, 20, 1.0, 0.5))


def saturating(d: float, scale: float = 300.0) -> float:
    """accuracy(d) = 1 - exp(-d / scale): crosses 0.9 at d* = scale * ln 10."""
    return 1.0 - math.exp(-d / scale)


def test_search_brackets_then_bisects_to_the_crossing():
    calls = []

    def evaluate(d):
        calls.append(d)
        return saturating(d)

    points = search_dimension(evaluate, 0.9, d_start=50, d_max=100_000, growth=2.0, tolerance=1.1)
    assert len(calls) == len(set(calls)) == len(points)        # every d trained once
    assert calls[:6] == [50, 100, 200, 400, 800, 566]          # bracketing x2, then the log midpoint of 400, 800
    crossing = find_crossing(*zip(*points), 0.9)
    true = 300 * math.log(10)
    assert crossing.d_below < true <= crossing.d_above
    assert crossing.d_above / crossing.d_below <= 1.1
    assert crossing.d_int == pytest.approx(true, rel=0.01)     # log-d interpolation on a smooth curve


def test_search_goes_down_when_the_first_d_already_reaches():
    points = dict(search_dimension(saturating, 0.9, d_start=5000, d_max=10_000, growth=4.0, tolerance=1.2))
    assert list(points)[:3] == [5000, 1250, 312]
    crossing = find_crossing(list(points), list(points.values()), 0.9)
    assert crossing.d_below < 300 * math.log(10) <= crossing.d_above


def test_search_stops_at_d_max_and_at_one():
    points = search_dimension(saturating, 0.9, d_start=10, d_max=300, growth=3.0)
    assert [d for d, _ in points] == [10, 30, 90, 270, 300]
    assert find_crossing(*zip(*points), 0.9).status == "not_reached"
    points = search_dimension(lambda d: 1.0, 0.9, d_start=8, d_max=100, growth=2.0)
    assert [d for d, _ in points] == [8, 4, 2, 1]
    assert find_crossing(*zip(*points), 0.9).status == "upper_bound"


@settings(max_examples=60, deadline=None)
@given(threshold_d=st.integers(1, 50_000), d_start=st.integers(1, 50_000), growth=st.sampled_from([1.5, 2.0, 4.0]))
def test_search_finds_any_step_crossing_exactly(threshold_d, d_start, growth):
    """accuracy jumps from 0 to 1 at d*: with a tight tolerance the bracket closes on (d* - 1, d*]."""
    points = search_dimension(lambda d: float(d >= threshold_d), 0.5, d_start, 60_000, growth, tolerance=1 + 1e-6)
    crossing = find_crossing(*zip(*points), 0.5)
    assert crossing.d_above == threshold_d
    assert crossing.d_below == (threshold_d - 1 if threshold_d > 1 else None)
    assert len(points) <= 2 * math.log(60_000, growth) + math.log2(60_000) + 4


# ----- the public API --------------------------------------------------------------------------

def log_interpolated_crossing(accuracy_by_d: dict, target: float) -> Crossing:
    """Li et al.'s d_int90 written out for the test: the smallest measured d whose accuracy reaches
    the target, interpolated linearly in log d from the largest measured d below it."""
    ds = sorted(accuracy_by_d)
    reached = [d for d in ds if accuracy_by_d[d] >= target]
    if not reached:
        return Crossing(None, ds[-1], None, "not_reached")
    hi = reached[0]
    below = [d for d in ds if d < hi]
    if not below:
        return Crossing(float(hi), None, hi, "upper_bound")
    lo = below[-1]
    a_lo, a_hi = accuracy_by_d[lo], accuracy_by_d[hi]
    d_int = math.exp(math.log(lo) + (target - a_lo) / (a_hi - a_lo) * (math.log(hi) - math.log(lo)))
    return Crossing(pytest.approx(d_int), lo, hi, "interpolated")


def test_intrinsic_dimension_api_on_a_user_module_grid_and_auto():
    x, y, xt, yt = toy_data(n=200)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    before = [p.detach().clone() for p in net.parameters()]
    grid = intrinsic_dimension(net, (x, y), (xt, yt), epochs=3, seeds=[0, 1], search="grid", dims=[2, 8, 32, 1000],
                               lr=0.02, subspace_lr=0.1, batch_size=20)
    assert set(grid.table().query("kind == 'subspace'").lr) == {0.1}
    assert grid.D == 10 * 16 + 16 + 16 * 3 + 3
    table = grid.table()
    assert sorted(table[table.kind == "subspace"].d.unique()) == [2, 8, 32]   # 1000 > D is skipped
    assert len(table) == 2 + 3 * 2
    direct = table[table.kind == "direct"]
    assert len(direct) == 2 and grid.baseline_acc == pytest.approx(direct.test_acc.mean())
    by_d = table[table.kind == "subspace"].groupby("d").test_acc.mean().to_dict()
    assert grid.crossing == log_interpolated_crossing(by_d, 0.9 * grid.baseline_acc)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the user's module is untouched
    auto = intrinsic_dimension(lambda s: small_mlp(s, widths=(16,)), (x, y), (xt, yt), epochs=3, seeds=[0],
                               d_start=4, tolerance=2.0, lr=0.02, batch_size=20)
    assert auto.settings.mode == "auto" and len(auto.runs) >= 2
    accs = {run.d: run.test_acc for run in auto.runs}
    assert auto.crossing == log_interpolated_crossing(accs, 0.9 * auto.baseline_acc)
    assert auto.crossing.status == "interpolated"  # the search bracketed the target between two measured d
    for run in auto.runs:  # default subspace step: lr x sqrt(D / d)
        assert run.lr == pytest.approx(matched_subspace_lr(0.02, auto.D, run.d)) and run.lr >= 0.02


def test_intrinsic_dimension_api_rejects_bad_input():
    x, y, xt, yt = toy_data()
    net = small_mlp(0)
    with pytest.raises(UserError, match="train_data"):
        intrinsic_dimension(net, (x, y[:5]), (xt, yt), epochs=1)
    with pytest.raises(UserError, match="projection"):
        intrinsic_dimension(net, (x, y), (xt, yt), epochs=1, projection="hadamard")
    with pytest.raises(UserError, match="threshold"):
        SearchSettings(threshold=1.5)
    with pytest.raises(UserError, match="dims"):
        SearchSettings(mode="grid")
    with pytest.raises(UserError, match="model"):
        intrinsic_dimension("mlp", (x, y), (xt, yt), epochs=1)


# ----- the study ---------------------------------------------------------------------------------

def test_spec_validation_names_the_field():
    from genlab.studies.intrinsic_dim import IntrinsicDimSpec

    with pytest.raises(UserError, match="models"):
        resolve_spec(IntrinsicDimSpec, "smoke", None, {"models": ["mlp", "transformer"]})
    with pytest.raises(UserError, match="dataset"):
        resolve_spec(IntrinsicDimSpec, "smoke", None, {"dataset": "mnist1d"})
    with pytest.raises(UserError, match="dims"):
        resolve_spec(IntrinsicDimSpec, "smoke", None, {"dims": [10, 10]})
    with pytest.raises(UserError, match="threshold"):
        resolve_spec(IntrinsicDimSpec, "smoke", None, {"threshold": 0})
    spec = resolve_spec(IntrinsicDimSpec, "paper")
    assert spec.search_settings().tolerance == spec.tolerance and spec.width_factors == [1, 2]


def test_units_skip_models_that_do_not_fit_the_inputs():
    from genlab.studies import get_study

    study = get_study("intrinsic-dim")
    spec = resolve_spec(study.Spec, "smoke", None, {"datasets": ["mnist5k", "mnist1d"],
                                                    "models": ["mlp", "lenet", "cnn1d"], "width_factors": [1, 2]})
    assert [u.key for u in study.units(spec)] == ["mnist5k-mlp-16", "mnist5k-mlp-32", "mnist5k-lenet", "mnist1d-mlp-16",
                                 "mnist1d-mlp-32", "mnist1d-cnn1d"]


def test_smoke_study_end_to_end(tmp_path):
    from genlab.run.runner import run_study
    from genlab.studies import get_study

    study = get_study("intrinsic-dim")
    spec = resolve_spec(study.Spec, "smoke", None, {"width_factors": [1, 2], "n_train": 128, "n_test": 64,
                                                   "d_start": 32, "d_max": 512})
    store = run_study(study, spec, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    for column in ("model", "dataset", "projection", "D", "d", "seed", "test_acc", "baseline_acc",
                   "fraction_of_baseline", "kind", "d_int90", "D_over_d_int90"):
        assert column in results.columns, column
    summary = results[results.kind == "summary"]
    assert len(summary) == 2 and set(summary.unit) == {"mnist5k-mlp-16", "mnist5k-mlp-32"}
    direct = results[results.kind == "direct"]
    assert (direct.d == direct.D).all() and set(direct.projection) == {"none"}
    sub = results[results.kind == "subspace"]
    assert set(sub.projection) == {"fastfood"} and (sub.d <= sub.D).all()
    assert set(results[results.kind != "summary"].selected_on) == {"validation"}
    for _, row in summary.iterrows():
        # the crossing, recomputed here from the validation accuracies alone: the smallest d whose seed-mean
        # validation accuracy reaches 90% of the direct networks' mean validation accuracy
        unit = results[results.unit == row.unit]
        target = 0.9 * unit[unit.kind == "direct"].val_acc.mean()
        means = unit[unit.kind == "subspace"].groupby("d").val_acc.mean()
        reached = means[means >= target]
        assert row.target_acc == pytest.approx(target)
        if row.crossing == "interpolated":
            assert row.d_above == reached.index.min()
            assert row.d_below < row.d_int90 <= row.d_above
            at_d = unit[(unit.kind == "subspace") & (unit.d == row.d_above)].test_acc.mean()
            assert row.test_acc_at_d_int == pytest.approx(at_d)
    manifest = store.read_manifest()
    assert manifest["status"] == "complete"
    assert (tmp_path / "run" / "figures" / "intrinsic_dim.png").exists()
    text = study.summarize(results, pd.DataFrame(), spec)
    assert f"D = {int(summary.D.iloc[0]):,}" in text.reading and text.checks



def test_d_is_selected_without_the_test_set(tmp_path):
    """Another test set changes the reported test accuracies but not the d tried or d_int90 (#17.6: d used to be
    selected on the test set)."""
    from genlab.run.runner import run_study
    from genlab.studies import get_study

    study = get_study("intrinsic-dim")
    runs = []
    for n_test in (128, 80):
        spec = resolve_spec(study.Spec, "smoke", None, {"n_train": 160, "n_test": n_test, "d_start": 32,
                                                       "d_max": 512})
        runs.append(run_study(study, spec, tmp_path / f"test{n_test}").results())
    chosen = ["kind", "d", "seed", "val_acc"]
    pd.testing.assert_frame_equal(runs[0][runs[0].kind != "summary"][chosen].reset_index(drop=True),
                                  runs[1][runs[1].kind != "summary"][chosen].reset_index(drop=True))
    summaries = [r[r.kind == "summary"].reset_index(drop=True) for r in runs]
    pd.testing.assert_series_equal(summaries[0].d_int90, summaries[1].d_int90)
    assert not runs[0][runs[0].kind != "summary"].test_acc.reset_index(drop=True).equals(
        runs[1][runs[1].kind != "summary"].test_acc.reset_index(drop=True))
