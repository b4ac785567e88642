"""The generalization-measures study (Jiang et al. 2019): its design, ranking and checks, the public
API name, and sweeps through the engine (tiny by default; the quick preset's claims marked slow)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

import genlab
import genlab.probes.measures
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.measures import (
    AXES,
    MEASURES,
    SHARPNESS,
    base_config,
    module_at,
    one_intra_op_thread,
    ranking_rows,
    seed_replicate_tau,
    steps_to_loss,
    sweep_configs,
    sweep_groups,
)


def test_public_api_name_keeps_the_measures_module_importable():
    assert genlab.generalization_measures is genlab.probes.measures.compute_measures
    assert callable(genlab.probes.measures.rank_measures)        # the submodule is not shadowed


def test_steps_to_loss_takes_the_first_evaluation_at_or_below_the_threshold():
    curve = [{"epoch": 0, "step": 0, "train_loss": 0.05},  # epoch 0 (init) never counts
             {"epoch": 2, "step": 20, "train_loss": 0.1},
             {"epoch": 1, "step": 10, "train_loss": 0.3},
             {"epoch": 3, "step": 30, "train_loss": 0.01}]
    assert steps_to_loss(curve, 0.1) == 20
    assert steps_to_loss(curve, 0.05) == 30
    assert math.isnan(steps_to_loss(curve, 0.001))


def test_one_intra_op_thread_restores_the_callers_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_intra_op_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_intra_op_thread():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_module_at_cuts_padded_checkpoints_back_to_each_model():
    def net(width, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))

    narrow, wide = net(4, 0), net(9, 1)
    x = torch.randn(12, 1, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(1))
    out = train_models([ModelJob("n", narrow, 0, y), ModelJob("w", wide, 1, y)], [InputGroup(x, x, y)],
                       TrainConfig(lr=0.1, batch_size=4, epochs=2, checkpoint_epochs=(0,)))
    for k, original in enumerate((narrow, wide)):
        initial = module_at(out.stack, out.checkpoints[0], k, original)
        for name, value in original.state_dict().items():
            assert torch.equal(initial.state_dict()[name], value)
        trained = module_at(out.stack, out.stack.params, k, original)
        assert not torch.equal(trained.state_dict()["1.weight"], original.state_dict()["1.weight"])


# ----------------------------------------------------------------------------- the design


def test_quick_design_varies_jiangs_seven_axes_one_at_a_time_around_the_base():
    spec = resolve_spec(get_study("measures").Spec, "quick", None, {})
    base = base_config(spec)
    configs = sweep_configs(spec)
    assert configs[0] == base
    assert len(configs) == 1 + 2 * 7   # two other values on each of the seven axes
    for config in configs[1:]:
        changed = [h for h in AXES if config[h] != base[h]]
        # one axis changes; the optimizer axis also sets its own learning rate
        assert changed in ([config["axis"]], ["lr", "optimizer"]), config
    varied = {(c["axis"], c[c["axis"]]) for c in configs[1:]}
    assert varied == {("width", 32), ("width", 256), ("depth", 1), ("depth", 4), ("lr", 0.02), ("lr", 0.2),
                      ("batch_size", 32), ("batch_size", 128), ("dropout", 0.25), ("dropout", 0.5),
                      ("weight_decay", 3e-4), ("weight_decay", 1e-3), ("optimizer", "adam"),
                      ("optimizer", "sgd_plain")}
    lrs = {c["optimizer"]: c["lr"] for c in configs if c["axis"] == "optimizer"}
    assert lrs == {"adam": 1e-3, "sgd_plain": 0.2}
    assert all(c["label_noise"] == 0 for c in configs)       # not one of Jiang's axes: off by default
    # engine calls: the base's (widths, lrs, weight decays share it) + one per other depth, batch size,
    # dropout and optimizer
    assert len(sweep_groups(spec)) == 1 + 2 + 2 + 2 + 2


def test_label_noise_is_an_optional_axis_of_base_models():
    spec = resolve_spec(get_study("measures").Spec, "quick", None, {"label_noise": [0.1, 0.2]})
    noisy = [c for c in sweep_configs(spec) if c["axis"] == "label_noise"]
    assert [c["label_noise"] for c in noisy] == [0.1, 0.2]
    assert all({h: c[h] for h in AXES} == {h: base_config(spec)[h] for h in AXES} for c in noisy)


def test_spec_validation():
    study = get_study("measures")
    with pytest.raises(UserError, match="lr"):
        resolve_spec(study.Spec, "smoke", None, {"lr": [0.1, -1.0]})
    with pytest.raises(UserError, match="model"):
        resolve_spec(study.Spec, "smoke", None, {"model": "lenet"})
    with pytest.raises(UserError, match="speed_loss"):
        resolve_spec(study.Spec, "smoke", None, {"speed_loss": 0.001})
    with pytest.raises(UserError, match="label_noise"):
        resolve_spec(study.Spec, "smoke", None, {"label_noise": [0.0]})


# ----------------------------------------------------------------------------- ranking and checks


def _model_rows(gap_of, seeds=(0, 1), fit_of=None) -> list[dict]:
    """Synthetic model rows of a one-at-a-time design: a measure 'good' that tracks the gap, the
    spectral product running against it, the other measures noise."""
    rng = np.random.default_rng(0)
    configs = [("base", 0)] + [(axis, v) for axis in ("width", "depth", "lr") for v in (1, 2)]
    rows = []
    for (axis, value), seed in itertools.product(configs, seeds):
        config_gap = 0.1 + 0.02 * gap_of(axis, value)
        gap = config_gap + 0.001 * rng.normal()
        row = {"kind": "model", "model_id": f"{axis}-{value}-seed{seed}", "axis": axis, "seed": seed,
               "gen_gap": gap, "fit": True if fit_of is None else fit_of(axis, value, seed)}
        for m in MEASURES:
            row[m] = float(rng.normal())
        row["pacbayes_sharpness"] = 5.0 + 10 * gap
        row["spectral_product"] = 3.0 - 10 * gap
        rows.append(row)
    return rows


def test_every_tau_is_over_the_same_models_those_that_fit_with_every_measure_defined():
    rows = _model_rows(gap_of=lambda a, v: {"base": 0, "width": v, "depth": 2 + v, "lr": 4 + v}[a],
                       fit_of=lambda a, v, s: not (a == "lr" and v == 2 and s == 1))
    rows[3]["keskar_sharpness"] = None        # one measure undefined on one model: the model leaves every tau
    ranked = pd.DataFrame(ranking_rows(rows))
    assert set(ranked["measure"]) == set(MEASURES)
    assert (ranked["n"] == len(rows) - 2).all()
    used = pd.DataFrame(rows).drop(index=[3, len(rows) - 1])
    tau = ranked.set_index("measure")["tau"]
    assert tau["pacbayes_sharpness"] == pytest.approx(stats.kendalltau(used["pacbayes_sharpness"],
                                                                       used["gen_gap"]).statistic)
    assert list(ranked["measure"][:1]) == ["pacbayes_sharpness"]   # signed: the anti-correlated one is last
    assert ranked["measure"].iloc[-1] == "spectral_product" and tau["spectral_product"] == pytest.approx(-1.0)
    assert ranked["tau"].is_monotonic_decreasing


def _summary(rows, **overrides):
    study = get_study("measures")
    spec = resolve_spec(study.Spec, "quick", None, overrides)
    results = pd.DataFrame(rows + ranking_rows(rows))
    return dict(study.summarize(results, pd.DataFrame(), spec).checks)


def test_checks_pass_on_jiangs_picture_and_fail_without_it():
    jiang = _model_rows(gap_of=lambda a, v: {"base": 0, "width": v, "depth": 2 + v, "lr": 4 + v}[a])
    checks = _summary(jiang)
    assert all(checks.values()), checks
    # the sweep's gaps are noise (seed 1 ranks the configurations backwards): the replicate check fails
    noise = [{**r, "gen_gap": 0.1 + 0.01 * (i // 2 if r["seed"] == 0 else -(i // 2))} for i, r in enumerate(jiang)]
    assert seed_replicate_tau(pd.DataFrame(noise)) == pytest.approx(-1.0)
    assert not next(ok for text, ok in _summary(noise).items() if "seed replicates" in text)
    # the sharpness measure anti-correlated with the gap: the signed ranking puts it last
    flipped = [{**r, **{m: -10 * r["gen_gap"] + i for i, m in enumerate(SHARPNESS)}} for r in jiang]
    flipped_checks = _summary(flipped)
    assert not next(ok for text, ok in flipped_checks.items() if "top 3" in text)
    # a model that never reached the stop rule
    unfit = _model_rows(gap_of=lambda a, v: {"base": 0, "width": v, "depth": 2 + v, "lr": 4 + v}[a],
                        fit_of=lambda a, v, s: a != "depth")
    assert not next(ok for text, ok in _summary(unfit).items() if "every model reached" in text)


# ----------------------------------------------------------------------------- through the engine


def test_end_to_end_tiny_sweep(tmp_path):
    study = get_study("measures")
    spec = resolve_spec(study.Spec, "smoke", None, {"epochs": 4, "label_noise": [0.5], "seeds": [0, 1]})
    store = run_study(study, spec, tmp_path / "run")
    results = store.results()
    models = results[results["kind"] == "model"]
    ranked = results[results["kind"] == "rank"].sort_values("rank")
    assert len(models) == len(sweep_configs(spec)) * 2 == 10
    assert set(ranked["measure"]) == set(MEASURES)
    assert (models["dist_from_init"] > 0).all()            # trained away from the epoch-0 checkpoint
    noisy = models.groupby("label_noise")["fraction_wrong"].mean()
    assert noisy[0.0] == 0 and 0.3 < noisy[0.5] < 0.6     # uniform redraw: p (K - 1) / K wrong
    assert (results["kind"] == "rank_label_noise").any()
    assert (tmp_path / "run" / "figures" / "measures.png").exists()
    checks = dict(study.summarize(results, store.curves(), spec).checks)
    # 4 epochs on 200 examples cannot reach cross-entropy 0.01: the first check must say so
    assert not next(ok for text, ok in checks.items() if "every model reached" in text)


@pytest.mark.slow
def test_quick_preset_shows_jiangs_claims(tmp_path):
    """The quick preset (30 MLPs, CE 0.01): every check of the study holds (FINDINGS sec. 2)."""
    study = get_study("measures")
    spec = resolve_spec(study.Spec, "quick", None, {})
    store = run_study(study, spec, tmp_path / "run")
    checks = dict(study.summarize(store.results(), store.curves(), spec).checks)
    failed = [text for text, ok in checks.items() if not ok]
    assert not failed, failed
