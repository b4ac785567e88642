"""Double-descent study (Belkin et al. 2019 Figs. 2-3; Nakkiran et al. 2019) and weight reuse."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from genlab.errors import UserError
from genlab.models import build_model
from genlab.models.grow import copy_into_leading_units
from genlab.probes.random_features import default_sigma, rff_sweep
from genlab.progress import NullProgress
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.base import Context
from genlab.studies.double_descent import (
    DoubleDescentSpec,
    classical_best_and_peak,
    first_interpolating,
    one_hidden_layer_params,
    padding_groups,
    reuse_plan,
    risk_peak,
    run_rff,
    summarize_rff,
    threshold_width,
    width_grid,
)
from genlab.studies.double_descent.label_noise import summarize_label_noise
from genlab.studies.double_descent.nn import peak_check, pooled, summarize_nn

# ----------------------------------------------------------------------------- weight reuse


def _glorot_bound(layer: torch.nn.Linear) -> float:
    fan_out, fan_in = layer.weight.shape
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_grow_copies_previous_weights_exactly_into_first_units():
    small = build_model("mlp", (1, 28, 28), 10, init="glorot", seed=1, widths=[7])
    with torch.no_grad():  # a "trained" net: weights no initializer would produce, nonzero biases
        for p in small.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    wide = build_model("mlp", (1, 28, 28), 10, init="glorot", seed=2, widths=[19])
    fresh = {name: p.detach().clone() for name, p in wide.named_parameters()}
    copy_into_leading_units(small, wide)
    first, last = wide[1], wide[3]
    assert torch.equal(first.weight[:7], small[1].weight)
    assert torch.equal(first.bias[:7], small[1].bias)
    assert torch.equal(last.weight[:, :7], small[3].weight)
    assert torch.equal(last.bias, small[3].bias)
    # everything outside the leading blocks is the wide net's own fresh draw
    assert torch.equal(first.weight[7:], fresh["1.weight"][7:])
    assert torch.equal(last.weight[:, 7:], fresh["3.weight"][:, 7:])


def test_grow_new_units_are_glorot_uniform_within_their_bound():
    small = build_model("mlp", (1, 28, 28), 10, init="glorot", seed=3, widths=[5])
    wide = copy_into_leading_units(small, build_model("mlp", (1, 28, 28), 10, init="glorot", seed=4, widths=[300]))
    incoming, outgoing = wide[1].weight[5:], wide[3].weight[:, 5:]
    for new, bound in ((incoming, _glorot_bound(wide[1])), (outgoing, _glorot_bound(wide[3]))):
        new = new.detach()
        assert new.abs().max() <= bound
        assert new.abs().max() > 0.95 * bound  # uniform on [-a, a] fills the interval
        assert abs(float(new.mean())) < 0.05 * bound
        assert float(new.std()) == pytest.approx(bound / math.sqrt(3.0), rel=0.05)  # sd of U(-a, a)
    assert torch.equal(wide[1].bias[5:], torch.zeros(295))  # Glorot scheme: zero biases


def test_grown_net_with_silenced_new_units_computes_the_small_net():
    """Units 1..h are copied exactly: with the new units' outgoing weights zeroed, f_wide = f_small."""
    small = build_model("mlp", (1, 8, 8), 10, init="glorot", seed=5, widths=[6, 4])
    wide = copy_into_leading_units(small, build_model("mlp", (1, 8, 8), 10, init="glorot", seed=6, widths=[11, 9]))
    with torch.no_grad():
        wide[3].weight[:, 6:] = 0.0
        wide[5].weight[:, 4:] = 0.0
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(wide(x), small(x), rtol=0, atol=1e-6)


def test_grow_rejects_a_target_smaller_than_the_source_or_of_another_family():
    small = build_model("mlp", (1, 8, 8), 10, seed=0, widths=[6])
    with pytest.raises(UserError, match="does not fit"):
        copy_into_leading_units(small, build_model("mlp", (1, 8, 8), 10, seed=0, widths=[5]))
    with pytest.raises(UserError, match="different parameters"):
        copy_into_leading_units(small, build_model("mlp", (1, 8, 8), 10, seed=0, widths=[6, 6]))


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("n,d,k", [(1000, 784, 10), (4000, 784, 10), (500, 40, 3)])
def test_threshold_width_has_exactly_n_k_parameters(n, d, k):
    h_star = threshold_width(n, d, k)
    assert (d + 1) * h_star + (h_star + 1) * k == pytest.approx(n * k)
    below, above = math.floor(h_star), math.ceil(h_star)
    assert one_hidden_layer_params(d, below, k) <= n * k <= one_hidden_layer_params(d, above, k)
    net = build_model("mlp", (1, d), k, seed=0, widths=[above])
    assert sum(p.numel() for p in net.parameters()) == one_hidden_layer_params(d, above, k)


def test_width_grid_spans_the_threshold_and_includes_both_sides():
    h_star = threshold_width(1000, 784, 10)  # 12.56
    grid = width_grid(h_star, 0.15, 8.0, 12)
    assert grid == sorted(set(grid))
    assert 12 in grid and 13 in grid
    assert grid[0] <= 0.15 * h_star + 1 and grid[-1] >= 8 * h_star - 1
    assert len(grid) >= 12


@pytest.mark.parametrize("rule,expected_chain", [("below_threshold", [2, 6, 12]), ("always", [2, 6, 12, 13, 40]),
                                                 ("never", [])])
def test_reuse_plan_splits_at_the_threshold(rule, expected_chain):
    widths = [40, 2, 12, 13, 6]
    chain, fresh = reuse_plan(widths, 10_000, lambda h: one_hidden_layer_params(784, h, 10), rule)
    assert chain == expected_chain
    assert sorted(chain + fresh) == sorted(widths)


def test_padding_groups_bound_the_padding_and_keep_every_width():
    widths = [2, 3, 5, 9, 13, 17, 30, 52, 100]
    groups = padding_groups(widths, 2.0)
    assert [w for g in groups for w in g] == widths
    assert all(g[-1] <= 2.0 * g[0] for g in groups)
    assert padding_groups(widths, 100.0) == [widths]


def test_first_interpolating_width():
    curve = pd.Series([0.5, 0.2, 0.004, 0.02, 0.0], index=[4, 8, 16, 32, 64])
    assert first_interpolating(curve, 0.01) == 16
    assert first_interpolating(curve, 0.0) == 64
    assert first_interpolating(curve + 1, 0.01) is None


def test_peak_is_taken_after_the_bottom_of_the_classical_u():
    """Under-fitting of the smallest models (the left arm of the U) is not the double-descent peak."""
    widths = [8, 16, 24, 48, 64, 96, 128]
    test = pd.Series([0.58, 0.49, 0.51, 0.54, 0.555, 0.46, 0.47], index=widths)
    assert classical_best_and_peak(test) == (16, 64)
    falling = pd.Series([0.5, 0.4, 0.3], index=[1, 2, 3])
    assert classical_best_and_peak(falling) == (3, 3)


def _risk_rows(curves: dict[int, list[float]], sizes: list[int]) -> pd.DataFrame:
    """One row per (size, seed) from {seed: test risk per size}."""
    return pd.DataFrame([{"params": p, "seed": s, "test_mse": v} for s, values in curves.items()
                         for p, v in zip(sizes, values)])


SIZES = [1000, 2000, 3000, 4000, 5000, 7000, 10000, 20000]   # threshold n K = 5000


def test_risk_peak_standard_errors_are_those_of_the_per_seed_differences():
    seeds = {0: [0.9, 0.8, 1.2, 1.0, 0.8, 0.6, 0.5, 0.40],
             1: [0.8, 0.9, 1.4, 1.1, 0.9, 0.7, 0.5, 0.45],
             2: [1.0, 0.7, 1.0, 0.9, 0.8, 0.6, 0.4, 0.38]}
    peak = risk_peak(_risk_rows(seeds, SIZES), "params", "test_mse", 2500, 10000)
    assert peak.x == 3000 and peak.value == pytest.approx(1.2)
    assert peak.before_x == 2000 and peak.before == pytest.approx(0.8)      # lowest mean before the peak
    assert peak.largest_x == 20000 and peak.largest == pytest.approx((0.40 + 0.45 + 0.38) / 3)
    before_diffs = np.array([1.2 - 0.8, 1.4 - 0.9, 1.0 - 0.7])
    assert peak.before_se == pytest.approx(before_diffs.std(ddof=1) / math.sqrt(3))
    largest_diffs = np.array([1.2 - 0.40, 1.4 - 0.45, 1.0 - 0.38])
    assert peak.largest_se == pytest.approx(largest_diffs.std(ddof=1) / math.sqrt(3))
    assert peak.stands_out()


@pytest.mark.parametrize("case", ["within_noise", "one_seed", "only_falls", "small_step", "peak_is_largest"])
def test_risk_peak_does_not_stand_out_when_the_curve_does_not_show_one(case):
    if case == "within_noise":   # mean bump of 0.1 over the left arm, but the seeds disagree by more
        seeds = {0: [0.8, 0.8, 1.3, 0.9, 0.8, 0.6, 0.5, 0.4], 1: [0.8, 0.8, 0.5, 0.9, 0.8, 0.6, 0.5, 0.4],
                 2: [0.8, 0.8, 1.1, 0.9, 0.8, 0.6, 0.5, 0.4]}
    elif case == "one_seed":      # a clear peak, but no seed spread to judge it by
        seeds = {0: [0.9, 0.8, 1.2, 1.0, 0.8, 0.6, 0.5, 0.4]}
    elif case == "only_falls":    # the issue's quick run: no peak at all
        seeds = {s: [0.7 - 0.05 * i + 0.01 * s for i in range(8)] for s in range(3)}
    elif case == "small_step":    # 5% above the left arm with no seed noise: below the 10% floor
        seeds = {s: [0.80, 0.80, 0.84, 0.82, 0.8, 0.6, 0.5, 0.4] for s in range(3)}
    else:                         # risk still rising at the largest net
        seeds = {s: [0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1 + 0.01 * s] for s in range(3)}
    peak = risk_peak(_risk_rows(seeds, SIZES), "params", "test_mse", 500, 40000)
    assert not peak.stands_out()


def test_nn_peak_check_passes_on_a_peaked_curve_and_fails_on_the_issues_curve():
    def rows(values_by_seed):
        out = _risk_rows(values_by_seed, SIZES)
        return out.assign(n=500, threshold_params=5000)

    peaked = {0: [0.9, 0.8, 1.2, 1.0, 0.8, 0.6, 0.5, 0.40], 1: [0.8, 0.9, 1.4, 1.1, 0.9, 0.7, 0.5, 0.45],
              2: [1.0, 0.7, 1.0, 0.9, 0.8, 0.6, 0.4, 0.38]}
    text, ok = peak_check(rows(peaked), 5000)
    assert ok and "peak 1.2 at 0.6 nK" in text
    # the issue's quick preset: 0.450 just below n K, 0.486 just above, then falling (one seed)
    issue = {0: [0.60, 0.55, 0.50, 0.45, 0.486, 0.40, 0.35, 0.306]}
    text, ok = peak_check(rows(issue), 5000)
    assert not ok and "fewer than the 3" in text


def test_pooling_averages_each_block_and_moves_the_threshold(tmp_path):
    from genlab.data import load_dataset

    data = load_dataset("digits", n_train=20, n_test=10)
    small = pooled(data, 2)
    assert small.input_shape == (1, 4, 4) and small.input_dim == 16
    block = data.x_train[3, 0, 2:4, 4:6]
    assert float(small.x_train[3, 0, 1, 2]) == pytest.approx(float(block.mean()))
    assert torch.equal(small.y_train, data.y_train)
    study = get_study("double-descent")
    with pytest.raises(UserError, match="nn_pool"):
        resolve_spec(study.Spec, "quick", None, {"nn_dataset": "mnist1d", "nn_pool": 2})
    with pytest.raises(UserError, match="nn_pool"):
        resolve_spec(study.Spec, "quick", None, {"nn_dataset": "digits", "nn_pool": 3})  # 8 is not divisible by 3


# ----------------------------------------------------------------------------- rff with several ridges


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    x, y = bunch.data / 16.0, bunch.target
    return x[:300], np.eye(10)[y[:300]], x[300:500], y[300:500]


def test_rff_sweep_over_several_ridges_equals_one_sweep_per_ridge(digits):
    X_train, Y_train, X_test, y_test = digits
    counts, sigma = [60, 290, 300, 310, 900], default_sigma(X_train)
    together = rff_sweep(X_train, Y_train, X_test, y_test, counts, sigma, seed=3, ridge=[0.0, 1e-2])
    assert [(r["features"], r["ridge"]) for r in together] == [(p, lam) for p in counts for lam in (0.0, 1e-2)]
    for ridge in (0.0, 1e-2):
        alone = rff_sweep(X_train, Y_train, X_test, y_test, counts, sigma, seed=3, ridge=ridge)
        mine = [r for r in together if r["ridge"] == ridge]
        for a, b in zip(alone, mine):
            for key in ("train_mse", "test_mse", "train_err", "test_err", "norm"):
                assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    with pytest.raises(UserError, match="ridge"):
        rff_sweep(X_train, Y_train, X_test, y_test, counts, sigma, seed=3, ridge=[0.0, -1.0])


# ----------------------------------------------------------------------------- spec


def test_spec_rejects_bad_values_with_the_field_name():
    study = get_study("double-descent")
    with pytest.raises(UserError, match="ridges"):
        resolve_spec(study.Spec, "quick", None, {"ridges": [0.0, -1e-3]})
    with pytest.raises(UserError, match="modes"):
        resolve_spec(study.Spec, "quick", None, {"modes": ["rff", "rff"]})
    with pytest.raises(UserError, match="modes"):
        resolve_spec(study.Spec, "quick", None, {"modes": ["kernel"]})
    with pytest.raises(UserError, match="nn_reuse"):
        resolve_spec(study.Spec, "quick", None, {"nn_reuse": "sometimes"})
    with pytest.raises(UserError, match="noise_widths"):
        resolve_spec(study.Spec, "quick", None, {"noise_widths": [8, 0, 16]})
    assert resolve_spec(study.Spec, "quick").modes == ["rff", "nn", "label_noise"]
    assert resolve_spec(study.Spec, "paper").noise.optim.epochs == 500
    assert resolve_spec(study.Spec, "smoke").flat()["nn_epochs"] <= 3


# ----------------------------------------------------------------------------- end to end


TINY = {
    "rff": dict(rff_dataset="digits", rff_n_train=150, rff_n_test=200, rff_points=11, ridges=[0.0, 1e-2]),
    # threshold width h* = 15.9 at n = 120, d = 64: widths 3..15 continue the reuse chain, 16 and 40 are fresh
    "nn": dict(nn_dataset="digits", nn_n_train=120, nn_n_test=100, nn_pool=1, nn_widths=[3, 8, 15, 16, 40],
               nn_reuse="below_threshold", nn_group_ratio=4.0, nn_seeds=[0, 1], nn_epochs=3, nn_eval_every=1),
    "label_noise": dict(noise_n_train=200, noise_n_test=100, noise_widths=[4, 8, 16], noise_epochs=3,
                        noise_eval_every=1),
}
COLUMNS = ["mode", "dataset", "n", "features_or_width", "params", "seed", "train_mse", "test_mse", "train_err",
           "test_err", "norm", "scheme", "ridge", "epochs"]


@pytest.mark.parametrize("mode", ["rff", "nn", "label_noise"])
def test_each_mode_runs_end_to_end(mode, tmp_path):
    study = get_study("double-descent")
    spec = resolve_spec(study.Spec, "quick", None, dict(modes=[mode], seeds=[0, 1], **TINY[mode]))
    store = run_study(study, spec, tmp_path / "run")
    results, curves = store.results(), store.curves()
    assert set(COLUMNS) <= set(results.columns)
    assert set(results["mode"]) == {mode}
    assert sorted(results["seed"].unique()) == [0, 1]
    assert results["train_err"].between(0, 1).all() and results["test_err"].between(0, 1).all()
    assert (results["norm"] > 0).all()
    figures = list((tmp_path / "run" / "figures").glob("*.png"))
    assert [f.name for f in figures] == [f"double_descent_{mode}.png"]
    summary = study.summarize(results, curves, spec)
    checks = dict(summary.checks)
    assert mode in summary.verdict
    if mode == "rff":
        assert len(results) == 2 * 2 * results["features_or_width"].nunique()  # seeds x ridges x N
        assert (results["params"] == results["features_or_width"] * 10).all()
    if mode == "nn":
        threshold = 120 * 10
        reused = results["params"] < threshold
        assert (results.loc[reused, "scheme"] == "reuse").all()
        assert (results.loc[~reused, "scheme"] == "glorot").all()
        assert (results["params"] == [one_hidden_layer_params(64, h, 10) for h in results["features_or_width"]]).all()
        assert set(curves["scheme"]) == {"reuse", "glorot"}
        # 3 epochs on 120 digits: nothing interpolates and, with 2 seeds, no peak can be judged
        peak = [ok for text, ok in checks.items() if "peak near the threshold" in text]
        assert peak == [False]
        assert not checks[next(t for t in checks if "train error reaches" in t)]
        assert "NO test-MSE peak" in summary.verdict
    if mode == "label_noise":
        assert (results["noise_mode"] == "other").all()
        assert results["fraction_wrong"].between(0.08, 0.22).all()
        assert set(curves["epoch"]) == {0, 1, 2, 3} and set(curves["width"]) == {4, 8, 16}
        # 3 epochs: no width fits its noisy labels, so the peak cannot sit near an interpolation width
        assert not checks[next(t for t in checks if "within a factor 2" in t)]


def test_rff_mode_shows_the_peak_at_n_and_ridge_flattens_it(tmp_path):
    """Belkin Fig. 2 at small size (8x8 digits, n = 300): test MSE and norm peak at N = n, ridge flattens it."""
    study = get_study("double-descent")
    spec = resolve_spec(study.Spec, "quick", None, dict(modes=["rff"], rff_dataset="digits", rff_n_train=300,
                                                         rff_points=17, ridges=[0.0, 1e-3]))
    rows = run_rff(spec, 0, Context(unit_dir=tmp_path, progress=NullProgress())).rows
    checks = dict(summarize_rff(pd.DataFrame(rows)).checks)
    failed = [text for text, ok in checks.items() if not ok]
    assert not failed, failed
    assert len(checks) == 4


def test_label_noise_peak_must_stand_above_the_seed_spread():
    """Nakkiran's peak: >= 2 points above the bottom of the U and the widest, and (with seeds)
    above 2 standard errors of the per-seed differences."""
    widths = [8, 16, 32, 64, 128]

    def rows(per_seed):
        return pd.DataFrame([{"features_or_width": w, "seed": s, "train_err": t, "test_err": e,
                              "fraction_wrong": 0.15, "dataset": "mnist1d", "n": 4000}
                             for s, errs in per_seed.items()
                             for w, e, t in zip(widths, errs, [0.3, 0.1, 0.005, 0.0, 0.0])])

    spec = resolve_spec(get_study("double-descent").Spec, "quick", None, {})
    steady = {s: [0.50, 0.45, 0.52, 0.44, 0.40] for s in range(3)}   # 7 points above the U's bottom, every seed
    assert all(ok for _, ok in summarize_label_noise(rows(steady), pd.DataFrame(), spec).checks)
    noisy = {0: [0.50, 0.45, 0.62, 0.44, 0.40], 1: [0.50, 0.45, 0.46, 0.44, 0.40],
             2: [0.50, 0.45, 0.48, 0.44, 0.40]}                       # mean 5.3 points, driven by one seed
    text, ok = summarize_label_noise(rows(noisy), pd.DataFrame(), spec).checks[1]
    assert not ok and "standard errors" in text


@pytest.mark.slow
def test_nn_mode_shows_belkins_peak_at_the_quick_settings(tmp_path):
    """Belkin Fig. 3 at the smallest size found to show it (FINDINGS sec. 1): 2x2-pooled MNIST, n = 500,
    3 seeds, trained to interpolation: a test-MSE peak near n K beyond seed noise, then a descent."""
    study = get_study("double-descent")
    spec = resolve_spec(study.Spec, "quick", None, {"modes": ["nn"]})
    from genlab.studies.double_descent.nn import run_nn
    rows = pd.DataFrame(run_nn(spec, Context(unit_dir=tmp_path, progress=NullProgress())).rows)
    checks = dict(summarize_nn(rows, spec).checks)
    failed = [text for text, ok in checks.items() if not ok]
    assert not failed, failed


def test_spec_class_is_registered():
    assert get_study("double-descent").Spec is DoubleDescentSpec


def test_label_noise_text_names_the_network_swept():
    """The reading, the references and the verdict speak of the ResNet's width k when ResNets were swept."""
    rows = pd.DataFrame([{"features_or_width": w, "seed": 0, "train_err": t, "test_err": e, "fraction_wrong": 0.15,
                          "dataset": "cifar10", "n": 50000}
                         for w, e, t in zip([1, 2, 4, 8, 16], [0.5, 0.45, 0.52, 0.44, 0.40],
                                            [0.3, 0.1, 0.0, 0.0, 0.0])])
    spec = resolve_spec(get_study("double-descent").Spec, "quick", None, {"noise_model": "resnet18"})
    summary = summarize_label_noise(rows, pd.DataFrame(), spec)
    assert "ResNet-18" in summary.reading and "MLP" not in summary.reading
    assert "k = 4" in summary.verdict and "h = " not in summary.verdict
    assert "Nakkiran et al. Fig. 1" in summary.references[0][1]
    mlp = summarize_label_noise(rows, pd.DataFrame(), resolve_spec(get_study("double-descent").Spec, "quick", None, {}))
    assert "MLP 40-h-h-10" in mlp.reading and "h = 4" in mlp.verdict


def test_the_sweep_estimates_count_each_width_own_network_not_the_widest():
    """The engine batches a sweep's widths in buckets, so the narrow widths of a sweep cost their
    own work: adding widths 4 and 8 to a sweep of 200, 250 and 300 adds ~0.2% of its work, not 2 x 300's."""
    from genlab.estimate import forward_flops, label_noise_work
    from genlab.studies.double_descent.nn import nn_seconds_estimate

    study = get_study("double-descent")
    spec = resolve_spec(study.Spec, "paper", None, {"modes": ["label_noise"], "noise_epochs": 30})
    wide, swept = (label_noise_work(spec.replace(noise_widths=w)) for w in ([200, 250, 300], [4, 8, 200, 250, 300]))
    assert 1.0 < swept.flops / wide.flops < 1.01
    # 3 seeds x (30 epochs x 4000 examples x 3 + 16 evaluations x (4000 + 1000 test examples)) forwards
    forwards = sum(forward_flops("mlp", "mnist1d", widths=[h, h]) for h in (200, 250, 300))
    assert wide.flops == pytest.approx(3 * forwards * (30 * 4000 * 3 + 16 * 5000))
    nn = resolve_spec(study.Spec, "quick", None, {"modes": ["nn"], "nn_widths": [80, 96]})
    with_narrow = resolve_spec(study.Spec, "quick", None, {"modes": ["nn"], "nn_widths": [4, 8, 80, 96]})
    assert nn_seconds_estimate(with_narrow) < 1.2 * nn_seconds_estimate(nn)
    assert study.estimate_seconds(with_narrow) == pytest.approx(nn_seconds_estimate(with_narrow))


def test_durations_read_as_seconds_minutes_or_hours():
    from genlab.cli import duration

    assert [duration(s) for s in (0.4, 14.2, 89, 95, 3000, 5500, 44000)] == [
        "under a second", "about 14 seconds", "about 89 seconds", "about 2 minutes", "about 50 minutes",
        "about 1.5 hours", "about 12.2 hours"]
