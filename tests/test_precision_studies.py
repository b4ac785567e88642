"""--precision on the studies: it reaches the engine's TrainConfig in every study that trains networks,
the methods that need exactness ignore it, the manifest records it with what the engine ran (kept
exact by resume), and the report shows both."""
import json
import math
from unittest import mock

import pandas as pd
import pytest
import torch

from genlab.engine import trainer as engine_trainer
from genlab.progress import NullProgress
from genlab.reproduce import plan_spec
from genlab.run import store as store_module
from genlab.run.precision import at_precision, precision_settings, precisions_of
from genlab.run.runner import execution_order, run_study
from genlab.spec import resolve_spec
from genlab.studies import STUDIES
from genlab.studies.base import Context

TRAINING = [name for name, study in STUDIES.items() if precision_settings(study.Spec)]


class _ConfigSeen(Exception):
    """Raised in place of training, once the engine has been handed its TrainConfig."""


def engine_precisions(study, spec, tmp_path) -> list[str]:
    """The TrainConfig.precision of the first engine call of each unit of ``spec`` (units that need
    other units' rows are left out); nothing is trained."""
    seen = []

    def refuse_to_train(self, jobs, inputs, config):
        seen.append(config.precision)
        raise _ConfigSeen

    with mock.patch.object(engine_trainer.BatchTrainer, "__init__", refuse_to_train):
        for unit in execution_order(study.units(spec)):
            if unit.needs:
                continue
            try:
                study.run_unit(spec, unit, Context(tmp_path / unit.key, NullProgress()))
            except _ConfigSeen:
                pass
    return seen


def test_every_training_study_has_a_precision_setting_and_expressivity_has_none():
    assert set(TRAINING) == set(STUDIES) - {"expressivity"}
    assert precision_settings(STUDIES["double-descent"].Spec) == ["nn_precision", "noise_precision"]
    for name in TRAINING:
        assert resolve_spec(STUDIES[name].Spec, "quick").flat()["precision" if name != "double-descent"
                                                                  else "nn_precision"] == "fp32"


@pytest.mark.parametrize("name", TRAINING)
def test_the_precision_reaches_the_engines_train_config_in_every_study(name, tmp_path):
    study = STUDIES[name]
    spec = plan_spec(study, "smoke", precision="bf16")
    assert set(precisions_of(spec).values()) == {"bf16"}
    seen = engine_precisions(study, spec, tmp_path / "bf16")
    assert seen and set(seen) == {"bf16"}, seen
    assert set(engine_precisions(study, resolve_spec(study.Spec, "smoke"), tmp_path / "fp32")) == {"fp32"}


def test_double_descents_sweeps_each_train_at_their_own_precision(tmp_path):
    study = STUDIES["double-descent"]
    spec = resolve_spec(study.Spec, "smoke").replace(nn_precision="bf16", noise_precision="fp16", modes=["nn"])
    assert set(engine_precisions(study, spec, tmp_path / "nn")) == {"bf16"}
    assert set(engine_precisions(study, spec.replace(modes=["label_noise"]), tmp_path / "noise")) == {"fp16"}


def test_run_double_descent_precision_sets_both_sweeps(tmp_path):
    from click.testing import CliRunner

    from genlab.cli import cli

    help_text = CliRunner().invoke(cli, ["run", "double-descent", "--help"], terminal_width=200).output
    assert "--precision [fp32|bf16|fp16]" in help_text and "float64" in help_text
    with mock.patch("genlab.cli.run_and_summarize") as run:
        result = CliRunner().invoke(cli, ["run", "double-descent", "--preset", "smoke", "--precision", "bf16",
                                          "--noise-precision", "fp16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    spec = run.call_args.args[1]
    assert precisions_of(spec) == {"nn_precision": "bf16", "noise_precision": "fp16"}


def _rows(study, spec, unit, folder):
    """A unit's rows and curves, wall-time columns aside."""
    result = study.run_unit(spec, unit, Context(folder, NullProgress()))
    assert result.rows or result.curves
    return [pd.DataFrame(table).drop(columns=list(study.timing_columns), errors="ignore")
            for table in (result.rows, result.curves)]


@pytest.mark.parametrize("name,unit_prefix", [("expressivity", ""), ("double-descent", "rff")])
def test_exact_methods_ignore_the_precision_even_inside_a_bf16_autocast_region(name, unit_prefix, tmp_path):
    """The 2n+d construction and the random-features min-norm solve are float64: --precision bf16
    leaves their specs' effect and their numbers as they are, even when they run under autocast."""
    study = STUDIES[name]
    spec = resolve_spec(study.Spec, "smoke")
    assert study.own_precision and "float64" in study.own_precision
    bf16 = plan_spec(study, "smoke", precision="bf16")
    unit = next(u for u in study.units(spec) if u.key.startswith(unit_prefix))
    assert unit in study.units(bf16)
    reference = _rows(study, spec, unit, tmp_path / "fp32")
    for got, expected in zip(_rows(study, bf16, unit, tmp_path / "bf16"), reference):
        pd.testing.assert_frame_equal(got, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for got, expected in zip(_rows(study, bf16, unit, tmp_path / "autocast"), reference):
            pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize("projection", ["dense", "sparse", "fastfood"])
def test_the_subspace_transform_stays_float32_under_the_engines_bf16_autocast(projection):
    from genlab.engine.precision import autocast
    from genlab.probes.subspace import SubspaceModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    model = SubspaceModel(net, 7, projection, seed=1)
    with torch.no_grad():
        model.theta_d.normal_()
    exact = model.theta()
    with autocast("bf16", torch.device("cpu")):
        theta = model.theta()
        out = model(torch.randn(4, 20))
    assert theta.dtype == torch.float32 and torch.equal(theta, exact)
    assert out.dtype == torch.bfloat16  # the network's own products do follow the precision
    assert "float32" in STUDIES["intrinsic-dim"].own_precision


@pytest.mark.parametrize("projection", ["dense", "sparse", "fastfood"])
def test_a_subspace_model_trains_at_bf16_through_the_engine(projection):
    """The intrinsic-dimension study's models (looped, _genlab_no_vmap) train at bf16: their
    projection stays float32 and only the network's products are bf16 (the engine cast theta_d
    to bf16 and the float32 projection refused it: the study's quick preset ended in a traceback)."""
    from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
    from genlab.probes.subspace import SubspaceModel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 40, generator=g)
    y = x[:, :5].argmax(1)
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
        model = SubspaceModel(net, 60, projection, seed=1)
        model._genlab_no_vmap = True
        out = train_models([ModelJob("s", model, 0, y)], [InputGroup(x, x[:50], y[:50])],
                           TrainConfig(lr=2.0, batch_size=50, epochs=10, precision=precision))
        losses[precision] = out.outcomes[0].train_loss
        assert model.theta_0.dtype == torch.float32
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02), losses
    assert losses["fp32"] < math.log(5) - 0.05, losses  # it learned something: the comparison is not of two guesses


@pytest.fixture(scope="module")
def randomization_runs(tmp_path_factory):
    """The randomization smoke run at fp32 and at bf16 (through `genlab reproduce`), one report."""
    from genlab.cli import main

    out = tmp_path_factory.mktemp("precision")
    for precision in ("fp32", "bf16"):
        args = ["reproduce", "--preset", "smoke", "--only", "randomization,expressivity", "--precision", precision,
                "--out", str(out / precision), "--quiet"]
        assert main(args) == 0
    return out


def test_a_bf16_run_says_so_in_its_manifest_and_gives_other_numbers(randomization_runs):
    manifests = {p: json.loads((randomization_runs / p / "randomization" / "manifest.json").read_text())
                 for p in ("fp32", "bf16")}
    for precision, manifest in manifests.items():
        assert manifest["spec"]["precision"] == precision
        assert manifest["precision"] == {"precision": precision}
        assert set(manifest["engine"]) == set(manifest["units_done"])
        assert all(record["precision"] == [precision] and record["engine_calls"] >= 1 and record["strategies"]
                   for record in manifest["engine"].values())
    results = {p: pd.read_csv(randomization_runs / p / "randomization" / "results.csv") for p in manifests}
    assert results["fp32"].shape == results["bf16"].shape
    assert not results["fp32"]["train_loss"].equals(results["bf16"]["train_loss"])
    expressivity = {p: json.loads((randomization_runs / p / "expressivity" / "manifest.json").read_text())
                    for p in manifests}
    assert expressivity["bf16"]["spec"] == expressivity["fp32"]["spec"]
    assert expressivity["bf16"]["precision"] == {} and "float64" in expressivity["bf16"]["own_precision"]


def test_the_report_shows_the_precision_and_the_engines_strategies(randomization_runs):
    for precision in ("fp32", "bf16"):
        html = (randomization_runs / precision / "report.html").read_text()
        manifest = json.loads((randomization_runs / precision / "randomization" / "manifest.json").read_text())
        section = html[html.index('id="randomization"'):html.index('id="expressivity"')]
        assert f"networks trained at {precision}" in section
        for strategy in {s for record in manifest["engine"].values() for s in record["strategies"]}:
            assert f"{strategy} x" in section
        assert "no network trained; the 2n+d construction is solved and checked in float64" in html


class _StopAt(NullProgress):
    """KeyboardInterrupt at the ``at``-th engine epoch of the run."""

    def __init__(self, at: int):
        self.at, self.seen = at, 0

    def epoch(self, trainer) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def _deterministic(records: dict) -> dict:
    return {unit: {k: r[k] for k in ("precision", "engine_calls", "models", "strategies")}
            for unit, r in records.items()}


def test_resume_keeps_the_engine_records_of_snapshots_and_cached_sub_results(tmp_path, monkeypatch):
    """Lottery rounds are cached sub-results trained through engine snapshots: a run interrupted in a
    round after another round was cached, and again after a round was newly cached, records per unit
    what an uninterrupted run records."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "strategy-cache"))
    study = STUDIES["lottery"]
    spec = resolve_spec(study.Spec, "smoke").replace(precision="bf16", epochs=6)
    reference = run_study(study, spec, tmp_path / "whole")
    expected = json.loads(reference.manifest_path.read_text())["engine"]
    assert all(r["engine_calls"] > 1 for r in expected.values())  # several rounds per unit

    real = store_module.cached_value
    stored = []

    def interrupt_after_a_new_value(unit_dir, name, compute):
        new = not any((unit_dir / "cache" / f"{name}{ext}").exists() for ext in (".json", ".pt"))
        value = real(unit_dir, name, compute)
        if new:
            stored.append(name)
            if len(stored) == 2:
                raise KeyboardInterrupt
        return value

    folder = tmp_path / "resumed"
    with mock.patch.object(store_module, "cached_value", interrupt_after_a_new_value):
        with pytest.raises(KeyboardInterrupt):
            run_study(study, spec, folder)
    assert any((folder / "units").rglob("*.engine.json"))
    with pytest.raises(KeyboardInterrupt):
        run_study(study, spec, folder, progress=_StopAt(7))  # past the snapshot of epoch 5
    assert any((folder / "units").rglob("snapshot*.pt"))
    resumed = run_study(study, spec, folder)
    records = json.loads(resumed.manifest_path.read_text())["engine"]
    assert _deterministic(records) == _deterministic(expected)
    for unit, record in records.items():
        assert json.loads((folder / "units" / unit / "done.json").read_text())["engine"] == record


@pytest.mark.ray
def test_the_ray_executor_records_what_the_engine_ran_like_the_local_one(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'genlab[ray]')")
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "strategy-cache"))
    study = STUDIES["randomization"]
    spec = resolve_spec(study.Spec, "smoke").replace(precision="bf16")
    local = json.loads(run_study(study, spec, tmp_path / "local").manifest_path.read_text())
    try:
        remote = json.loads(run_study(study, spec, tmp_path / "ray", executor="ray").manifest_path.read_text())
    finally:
        ray.shutdown()
    assert remote["precision"] == local["precision"] == {"precision": "bf16"}
    assert set(remote["engine"]) == set(local["engine"]) == set(local["units_done"])
    assert _deterministic(remote["engine"]) == _deterministic(local["engine"])


def test_a_slow_precision_is_said_once_per_reproduce(monkeypatch, genlab_cli, tmp_path):
    from genlab.engine import precision as engine_precision

    monkeypatch.setattr(engine_precision, "_cpu_flags", lambda: frozenset())
    with mock.patch("genlab.reproduce.run_study"), mock.patch("genlab.reproduce.build_report"):
        code, err = genlab_cli(["reproduce", "--preset", "smoke", "--precision", "bf16", "--jobs", "1", "--out",
                                str(tmp_path), "--quiet"])
    assert code == 0 and err.count("no bf16 matrix unit") == 1, err


def test_a_check_failing_below_fp32_is_named_in_the_studys_reading():
    from genlab.report.build import with_precision_note
    from genlab.studies.base import Summary

    summary = Summary("v", "reading.", checks=[("train acc >= 99%", True), ("margin > 0", False)])
    spec = resolve_spec(STUDIES["lottery"].Spec, "smoke")
    assert with_precision_note(summary, spec) == summary                       # fp32: the reference
    noted = with_precision_note(summary, spec.replace(precision="bf16")).reading
    assert noted.startswith("reading. At bf16") and "'margin > 0'" in noted and "train acc" not in noted
    assert "8 significant bits" in noted
    passing = Summary("v", "reading.", checks=[("margin > 0", True)])
    assert with_precision_note(passing, spec.replace(precision="bf16")) == passing


def test_at_precision_leaves_a_spec_without_training_unchanged():
    spec = resolve_spec(STUDIES["expressivity"].Spec, "smoke")
    assert at_precision(spec, "fp16") == spec
