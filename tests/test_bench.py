"""`genlab bench`: the plain-loop baselines in benchmarks/ do the same work as genlab's side, the
same work as the team's reference scripts when those are present, and the report shows every row."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import engine_side  # noqa: E402
import plain_loops  # noqa: E402
import points  # noqa: E402
import step_breakdown  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"


@pytest.mark.parametrize("name", plain_loops.WORKLOADS)
def test_both_sides_build_the_same_models_from_the_same_seeds(name):
    w = plain_loops.workload(name)
    assert len(w.models) in (8, 16)
    for i in (0, len(w.models) - 1):
        a, b = plain_loops.build(w, i), plain_loops.build(w, i)
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb and torch.equal(pa, pb)
    if len(w.models) > 1:  # different seeds, different weights
        first = next(iter(plain_loops.build(w, 0).parameters()))
        second = next(iter(plain_loops.build(w, 1).parameters()))
        assert first.shape != second.shape or not torch.equal(first, second)


def same_work(name: str) -> tuple[dict, dict]:
    plain = plain_loops.run(name, epochs=1)
    ours = engine_side.run(name, epochs=1)
    assert plain["model_flops"] == ours["model_flops"] > 0
    assert [m["model"] for m in plain["models"]] == [m["model"] for m in ours["models"]]
    assert [m["steps"] for m in plain["models"]] == [m["steps"] for m in ours["models"]]
    assert ours["strategies"] and ours["strategies"][0]["strategy"]
    return plain, ours


def test_plain_and_genlab_sides_do_the_same_work():
    plain, ours = same_work("widths")
    for a, b in zip(plain["models"][2:], ours["models"][2:]):  # h >= 20: one epoch gives a stable accuracy
        assert abs(a["test_acc"] - b["test_acc"]) < 0.05  # same models and optimizer; only the data order differs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deep-widths", "lenet-seeds", "bn-cnn-seeds", "ensemble"])
def test_plain_and_genlab_sides_do_the_same_work_for_the_other_workloads(name):
    same_work(name)


def test_flops_are_counted_per_example_times_examples():
    w = plain_loops.workload("widths")
    probe = torch.zeros(1, 784)
    assert plain_loops.workload_flops(w, 4000, 2, probe) == sum(
        2 * 3 * (784 * h + h * 10) * 4000 * 2 for h in plain_loops.WIDTHS)


def test_step_breakdown_records_every_product_of_a_step():
    """A lockstep step of the width sweep is exactly its models' products: forward and weight gradient
    of both layers, and the input gradient of the second (the data needs none); the packed step does
    the same work plus its padding. Replaying them takes time, and a step takes at least as long."""
    batch, widths = 128, plain_loops.WIDTHS
    needed = 2 * batch * sum(2 * (784 * h + h * 10) + h * 10 for h in widths)
    plain = step_breakdown.breakdown("widths", epochs=1, strategy="lockstep")
    assert plain["strategy"] == ["lockstep"] and plain["steps"] == 32
    assert plain["products"] == 5 * len(widths) and plain["product_gflop"] * 1e9 == needed
    packed = step_breakdown.breakdown("widths", epochs=1, strategy="packed")
    assert needed <= packed["product_gflop"] * 1e9 <= 1.2 * needed
    assert packed["products"] < plain["products"]
    for row in (plain, packed):
        assert 0 < row["products_ms"] and 0 < row["forward_backward_ms"] <= row["step_ms"]
        assert row["rest_ms"] == pytest.approx(row["step_ms"] - row["forward_backward_ms"] - row["optimizer_ms"])


def test_step_breakdown_copies_are_seeds_of_each_model():
    w = plain_loops.workload("deep-widths")
    jobs = engine_side.model_jobs(w, w.data()[1], copies=2)
    assert len(jobs) == 2 * len(w.models) and len({j.key for j in jobs}) == len(jobs)
    first, again = (next(iter(jobs[i].module.parameters())) for i in (0, len(w.models)))
    assert first.shape == again.shape and not torch.equal(first, again)
    assert jobs[0].seed != jobs[len(w.models)].seed  # deep-widths: every model its own data order


@pytest.mark.skipif(not SHARED.exists(), reason="the team's reference scripts (../shared/bench) are not beside this "
                    "clone")
@pytest.mark.parametrize("name,script", [("widths", "naive_sweep.py"), ("deep-widths", "naive_study_sweeps.py")])
def test_baselines_match_the_reference_scripts(name, script):
    """Cross-check: the same models, initial weights, data order and FLOPs as ../shared's loops,
    hence the same final accuracies."""
    ours = plain_loops.run(name, epochs=1)
    proc = subprocess.run([sys.executable, str(SHARED / script), name, "--epochs", "1"], capture_output=True,
                          text=True, check=True)
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [m["model"] for m in theirs["models"]] == [m["model"] for m in ours["models"]]
    for a, b in zip(theirs["models"], ours["models"]):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-6)
    if name == "widths":
        assert theirs["model_flops"] == ours["model_flops"]


def test_robustness_evaluation_gives_the_plain_loops_accuracies():
    result = points.robustness_eval_workload(param_sets=8, repeats=1)
    assert result["max_acc_difference"] == 0.0
    assert result["naive_s"] > 0 and result["genlab_s"] > 0


def test_scaling_point_times_an_epoch_and_memory():
    point = points.scaling_point(3000)
    assert point["n"] == 3000 and point["epoch_s"] > 0
    assert point["peak_rss_mb"] >= point["rss_before_training_mb"] > 0


def test_bench_fastfood_epoch_reports_times_and_memory():
    result = points.bench_fastfood_epoch(d=500, epochs=2)
    assert result["D"] == 199_210 and result["direct_epoch_s"] > 0 and result["fastfood_epoch_s"] > 0
    assert result["ratio"] == pytest.approx(result["fastfood_epoch_s"] / result["direct_epoch_s"])
    # O(D) memory: far below a dense P (4 d D bytes = 398 MB)
    assert 4 * 199_210 < result["extra_memory_bytes"] < 4 * 500 * 199_210 / 10


def test_markdown_table_shows_every_row():
    side = {"wall_s": 2.0, "gflops": 50.0, "peak_rss_mb": 400.0, "models": [{"test_acc": 0.9}]}
    row = {"plain": side, "genlab": {**side, "wall_s": 0.4}, "speedup": 5.0, "plain_fraction_of_fp32_peak": 0.25,
           "genlab_fraction_of_fp32_peak": 0.5, "max_test_acc_difference": 0.01, "calibration_s": 0.3,
           "strategies": [{"strategy": "packed"}], "paired_speedup": bench.paired([2.0, 2.4, 1.8], [0.4, 0.4, 0.5])}
    report = {
        "machine": {"cpus": 2, "cpu": "Xeon", "torch": "2.13.0", "torch_threads": 2},
        "peak": {"sgemm_gflops": 200.0, "bf16_gemm_gflops": 800.0}, "repeats": 3,
        "workloads": {"widths": {"fp32": row, "bf16": {"skipped": "no bfloat16 matrix unit on this CPU"}},
                      "lenet-seeds": {"fp32": {**row, "strategies": [{"strategy": "threads-cl"}]}}},
        "study_label_noise": {"epochs": 30, "plain_s": 60.0, "genlab_s": 15.0, "speedup": 4.0,
                              "paired_speedup": bench.paired([60.0], [20.0])},
        "robustness_eval": {"param_sets": 120, "naive_s": 0.4, "genlab_s": 0.2, "speedup": 2.0,
                            "max_acc_difference": 0.0},
        "rff": {"n": 4000, "values_of_N": 33, "wall_s": 27.0, "test_mse_peak_at": 4000},
        "fastfood": {"ratio": 2.5},
        "scaling": {"time_exponent": 1.0, "points": [{"n": 10000, "epoch_s": 0.2, "peak_rss_mb": 400.0}]},
    }
    table = bench.markdown_table(report, "genlab bench")
    for text in ("| widths | fp32 | 2.00 | 0.40 | 5.00x", "| lenet-seeds | fp32 |", "threads-cl", "packed",
                 "no bfloat16 matrix unit", "| 60.0 | 15.0 | 4.00x |", "120 parameter sets", "2.50x",
                 "exponent 1.00", "3 time(s) in a fresh process", "bfloat16 800 GFLOP/s", "| 5.00x (3.60-6.00) |",
                 "| 4.00x | 3.00x (3.00-3.00) |"):
        assert text in table


def test_a_bench_times_the_engine_choices_in_a_strategy_cache_of_its_own(tmp_path, monkeypatch):
    """The machine's cache may hold a choice timed while something else loaded the machine: the bench
    gives genlab's side an empty strategy cache of its own, for the whole bench, and removes it after."""
    import os

    monkeypatch.delenv("GENLAB_STRATEGY_CACHE", raising=False)
    seen = []

    def fake_compare(name, epochs, repeats, precision, peak):
        seen.append(os.environ.get("GENLAB_STRATEGY_CACHE"))
        assert not Path(seen[-1]).exists()  # empty at the start: the untimed first run calibrates
        return {}

    monkeypatch.setattr(bench, "side", lambda script, args: {"sgemm_gflops": 100.0, "bf16_gemm_gflops": 200.0})
    monkeypatch.setattr(bench, "compare", fake_compare)
    report = bench.run_bench(None, only=["widths", "ensemble"])
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0] is not None
    assert not Path(seen[0]).parent.exists() and "GENLAB_STRATEGY_CACHE" not in os.environ
    assert "own" in report["strategy_cache"]
    monkeypatch.setenv("GENLAB_STRATEGY_CACHE", str(tmp_path / "mine.json"))  # one set by the user is kept
    seen.clear()
    assert bench.run_bench(None, only=["widths"])["strategy_cache"] == str(tmp_path / "mine.json")
    assert seen == [str(tmp_path / "mine.json")]


def test_paired_ratios_cancel_a_slow_spell_that_medians_do_not():
    # the machine is twice as slow during the third round: every round's own ratio is 3x, while the
    # medians of each side come from different rounds
    plain, genlab = [3.0, 3.3, 6.6], [1.0, 1.1, 2.2]
    p = bench.paired(plain, genlab)
    assert p["median"] == pytest.approx(3.0) and p["min"] == pytest.approx(3.0) and p["max"] == pytest.approx(3.0)
    assert bench.paired([2.0, 1.0], [1.0, 2.0])["ratios"] == [2.0, 0.5]
    with pytest.raises(ValueError):
        bench.paired([1.0, 2.0], [1.0])


@pytest.mark.parametrize("args, message", [(["--only", "nonsense"], "unknown workload 'nonsense'"),
                                           (["--repeats", "0"], "--repeats")])
def test_bench_refuses_bad_options_in_one_line(capsys, tmp_path, args, message):
    from genlab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *args, "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
