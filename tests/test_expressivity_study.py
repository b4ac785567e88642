"""The expressivity study: Zhang et al. (2017), Theorem 1, run on real data through the runner."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from genlab.errors import UserError
from genlab.progress import NullProgress
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.base import Context
from genlab.studies.expressivity import (
    ExpressivitySpec,
    chance_band,
    fit_range,
    mlp_reference,
    power_law,
    time_exponent,
    toy_curves,
)

TIMING_COLUMNS = {"seconds", "check_seconds", "predict_seconds", "solve_seconds", "dense_seconds"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """Both offline datasets, true and random labels, n in {100, 1000}, one seed."""
    study = get_study("expressivity")
    spec = resolve_spec(study.Spec, "quick", None, {"sizes": [100, 1000], "toy_points": 6})
    store = run_study(study, spec, tmp_path_factory.mktemp("expressivity"))
    return study, spec, store


def test_results_table_has_the_issue_columns(tiny_run) -> None:
    _, _, store = tiny_run
    results = store.results()
    required = {"dataset", "labels", "n", "d", "params", "max_residual", "train_acc", "test_acc", "seconds",
                "min_gap", "condition_estimate", "relative_residual", "k", "mlp_params"}
    assert required <= set(results.columns)
    assert set(results["dataset"]) == {"mnist5k", "mnist1d"}
    assert set(results["labels"]) == {"true", "random"}
    assert sorted(results["n"].unique()) == [100, 1000]
    assert len(results) == 2 * 2 * 2
    assert store.read_manifest()["status"] == "complete"


def test_every_network_fits_its_training_set_exactly(tiny_run) -> None:
    results = tiny_run[2].results()
    assert (results["train_acc"] == 1.0).all()
    assert (results["relative_residual"] <= 1e-6).all()
    # one-hot targets: a residual below 1/2 already guarantees the argmax, here far below it
    assert results["max_residual"].max() < 1e-6
    assert (results["min_gap"] > 0).all()


def test_parameter_counts(tiny_run) -> None:
    results = tiny_run[2].results()
    assert (results["params"] == results["n"] * (results["k"] + 1) + results["d"]).all()
    assert (results["params_scalar"] == 2 * results["n"] + results["d"]).all()
    d = results.groupby("dataset")["d"].first()
    assert d["mnist5k"] == 784 and d["mnist1d"] == 40
    mlp = results.groupby("dataset")["mlp_params"].first()
    # the randomization quick preset's MLP d-512-10: d*512 + 512 + 512*10 + 10
    assert mlp["mnist5k"] == 407_050
    assert mlp["mnist1d"] == 40 * 512 + 512 + 512 * 10 + 10


def test_random_labels_give_chance_test_accuracy(tiny_run) -> None:
    results = tiny_run[2].results()
    random = results[(results["labels"] == "random") & (results["n"] == 1000)]
    assert len(random) == 2
    for _, row in random.iterrows():
        band = chance_band(row["chance"], int(row["n_test"]))
        assert abs(row["test_acc"] - 0.1) <= band, (row["dataset"], row["test_acc"], band)


def test_true_and_random_labels_share_the_direction(tiny_run) -> None:
    # w depends on (seed, dataset, n) only, so both labellings project the points identically
    results = tiny_run[2].results()
    columns = ["min_gap", "condition_estimate", "diagonal_ratio"]
    true = results[results["labels"] == "true"].set_index(["dataset", "n"])[columns].sort_index()
    random = results[results["labels"] == "random"].set_index(["dataset", "n"])[columns].sort_index()
    pd.testing.assert_frame_equal(true, random)


def test_figures_and_summary(tiny_run) -> None:
    study, spec, store = tiny_run
    for name in ("expressivity", "expressivity_toy"):
        for suffix in ("png", "svg"):
            path = store.figures_dir / f"{name}.{suffix}"
            assert path.exists() and path.stat().st_size > 10_000
    summary = study.summarize(store.results(), store.curves(), spec)
    assert "100.0% training accuracy" in summary.reading
    assert "407,050" in summary.reading
    exact = [passed for text, passed in summary.checks if "training accuracy" in text or "residual" in text]
    chance = [passed for text, passed in summary.checks if "within" in text]
    assert len(exact) == 3 and all(exact)
    assert len(chance) == 2 and all(chance)


def test_units_are_pure(tiny_run) -> None:
    study, spec, store = tiny_run
    unit = "mnist1d-random-seed0"
    ctx = Context(unit_dir=store.path / "scratch", progress=NullProgress())
    again = study.run_unit(spec, study.unit(spec, unit), ctx).rows
    stored = store.load_unit(unit)["rows"]
    strip = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in again]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in stored]


def test_toy_construction_passes_through_every_point() -> None:
    spec = ExpressivitySpec(toy_points=7)
    curves = pd.DataFrame(toy_curves(spec))
    points = curves[curves["kind"] == "toy_point"]
    assert len(points) == 7
    np.testing.assert_allclose(points["value"], points["y"], atol=1e-9)
    ramps = curves[curves["kind"] == "toy_ramp"]
    assert ramps["ramp"].nunique() == 7
    summed = ramps.groupby("x")["value"].sum()
    fit = curves[curves["kind"] == "toy_fit"].set_index("x")["value"]
    np.testing.assert_allclose(summed.loc[fit.index].to_numpy(), fit.to_numpy(), atol=1e-9)
    # each ramp is zero left of its bias and biases interleave the sorted points
    for _, ramp in ramps.groupby("ramp"):
        assert (ramp.loc[ramp["x"] <= ramp["bias"].iloc[0], "value"] == 0).all()
    biases = np.sort(ramps.groupby("ramp")["bias"].first().to_numpy())
    xs = np.sort(points["x"].to_numpy())
    assert np.all(biases < xs) and np.all(biases[1:] > xs[:-1])


def test_power_law_recovers_a_known_exponent() -> None:
    n = np.array([100, 300, 1000, 3000, 10000])
    exponent, prefactor = power_law(n, 3e-6 * n ** 1.5)
    assert exponent == pytest.approx(1.5) and prefactor == pytest.approx(3e-6)
    assert math.isnan(power_law(np.array([5, 5]), np.array([1.0, 2.0]))[0])
    assert fit_range(pd.Series([250, 500, 1000, 2000, 4000, 10000, 20000])) == (2000, 20000)
    assert fit_range(pd.Series([100, 1000])) == (100, 1000)
    rows = pd.DataFrame({"n": n, "seconds": np.where(n < 1000, 1.0, 1e-7 * n ** 2.0)})
    fitted, _, (low, high) = time_exponent(rows, "seconds")
    assert (low, high) == (1000, 10000) and fitted == pytest.approx(2.0)


def test_mlp_reference_for_a_dataset_shape() -> None:
    assert mlp_reference((1, 28, 28), 10) == ("784-512-10", 407_050)
    assert mlp_reference((1, 40), 10) == ("40-512-10", 26_122)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sizes": [0, 100]}, "sizes"),
        ({"sizes": [100, 100]}, "sizes"),
        ({"datasets": ["mnist2d"]}, "datasets"),
        ({"datasets": ["mnist1d", "mnist1d"]}, "datasets"),
        ({"labels": ["noisy"]}, "labels"),
        ({"bias_fraction": 1.0}, "bias_fraction"),
        ({"tries": 0}, "tries"),
        ({"toy_points": 1}, "toy_points"),
        ({"epochs": 3}, "epochs"),
    ],
)
def test_bad_spec_values_raise_user_error(overrides: dict, field: str) -> None:
    with pytest.raises(UserError, match=field):
        resolve_spec(get_study("expressivity").Spec, "quick", None, overrides)


def test_sizes_no_dataset_can_supply_are_refused(tmp_path) -> None:
    study = get_study("expressivity")
    spec = resolve_spec(study.Spec, "quick", None, {"datasets": ["digits"], "sizes": [5000], "labels": ["true"]})
    with pytest.raises(UserError, match=r"sizes \[5000\].*digits.*1397"):
        run_study(study, spec, tmp_path / "run")


def test_presets_cover_the_issue_sizes() -> None:
    quick = resolve_spec(ExpressivitySpec, "quick")
    paper = resolve_spec(ExpressivitySpec, "paper")
    assert quick.datasets == ["mnist5k", "mnist1d"] and quick.labels == ["true", "random"]
    assert {250, 500, 1000, 2000, 4000, 20000} <= set(quick.sizes)
    assert max(paper.sizes) == 100_000 and len(paper.seeds) == 3


def test_parameters_are_counted_on_the_built_networks_and_real_targets_are_fitted(tiny_run) -> None:
    study, spec, store = tiny_run
    results = store.results()
    assert (results["scalar_relative_residual"] <= 1e-6).all()
    checks = dict(study.summarize(results, store.curves(), spec).checks)
    counted = "counted parameters of every built network: n(k+1)+d (k one-hot outputs) and 2n+d (one output)"
    real = ("real-valued targets y ~ N(0,1): relative residual <= 1e-04 at every n (any function, not only the "
            "labels' argmax)")
    assert checks[counted] and checks[real]
    # a network with one hidden unit fewer, or a fit that only gets the argmax right, fails them
    broken = results.assign(params_scalar=results["params_scalar"] - 1, scalar_relative_residual=0.3)
    checks = dict(study.summarize(broken, store.curves(), spec).checks)
    assert not checks[counted] and not checks[real]


def test_dense_comparison_checks_fail_when_the_solve_is_as_slow_as_the_dense_one() -> None:
    from genlab.studies.expressivity import dense_comparison_checks

    n = np.array([1000, 2000, 4000, 10000])
    ours = 1e-5 * n
    dense = np.where(n <= 4000, 2e-8 * n ** 2.0, np.nan)
    table = pd.DataFrame({"dataset": "mnist1d", "n": n, "seconds": ours, "dense_seconds": dense})
    assert [ok for _, ok in dense_comparison_checks(table)] == [True, True]
    quadratic = table.assign(seconds=np.where(n <= 4000, 1.5e-8 * n ** 2.0, 1.0))
    assert [ok for _, ok in dense_comparison_checks(quadratic)] == [False, False]
    # the measured solves decide the speedup, whatever the construction's time: 2x fails, 800x passes
    assert [ok for _, ok in dense_comparison_checks(table.assign(solve_seconds=table["dense_seconds"] / 2))] \
        == [True, False]
    assert [ok for _, ok in dense_comparison_checks(table.assign(solve_seconds=1e-7 * n))] == [True, True]


def test_the_two_solves_are_timed_from_the_same_system() -> None:
    from genlab.probes.expressivity import interpolating_network
    from genlab.studies.expressivity import DENSE_MAX_N, solve_seconds

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    targets = np.eye(3)[rng.integers(0, 3, 300)]
    fast, dense = solve_seconds(interpolating_network(x, targets), x, targets)
    assert 0 < fast < 1 and 0 < dense < 1
    big = rng.standard_normal((DENSE_MAX_N + 1, 2))
    fast, dense = solve_seconds(interpolating_network(big, big[:, 0]), big, big[:, 0])
    assert fast > 0 and np.isnan(dense)

