"""`genlab bench`: both sides of a workload run, on the same models, and the table reports them."""
import pytest

from genlab import bench


@pytest.mark.slow
def test_widths_workload_runs_the_naive_script_and_the_engine_on_the_same_models():
    result = bench.compare_workload("widths", epochs=1, repeats=1)
    naive, ours = result["naive"], result["genlab"]
    assert [m["model"] for m in naive["models"]] == [f"h={h}" for h in bench.WIDTHS]
    assert len(ours["models"]) == len(bench.WIDTHS)
    assert naive["model_flops"] == ours["model_flops"]  # the same arithmetic is asked of both
    for side in (naive, ours):
        assert side["wall_s"] > 0 and side["peak_rss_mb"] > 100 and len(side["wall_s_runs"]) == 1
        assert side["models"][-1]["test_acc"] > 0.8  # h = 200 learns in one epoch either way


def test_robustness_evaluation_gives_the_plain_loops_accuracies():
    result = bench.robustness_eval_workload(param_sets=8, repeats=1)
    assert result["max_acc_difference"] == 0.0
    assert result["naive_s"] > 0 and result["genlab_s"] > 0


def test_scaling_point_times_an_epoch_and_memory():
    point = bench.scaling_point(3000)
    assert point["n"] == 3000 and 0 < point["epoch_s"] < 30
    assert point["peak_rss_mb"] >= point["rss_before_training_mb"] > 0


def test_bench_fastfood_epoch_reports_times_and_memory():
    result = bench.bench_fastfood_epoch(d=500, epochs=2)
    assert set(result) >= {"direct_epoch_s", "fastfood_epoch_s", "ratio", "extra_memory_bytes"}
    assert result["D"] == 199_210 and result["direct_epoch_s"] > 0 and result["fastfood_epoch_s"] > 0
    assert result["ratio"] == pytest.approx(result["fastfood_epoch_s"] / result["direct_epoch_s"])
    # O(D) memory: far below a dense P (4 d D bytes = 398 MB)
    assert 4 * 199_210 < result["extra_memory_bytes"] < 4 * 500 * 199_210 / 10


def test_markdown_table_shows_every_workload():
    side = {"wall_s": 2.0, "gflops": 50.0, "peak_rss_mb": 400.0}
    report = {
        "machine": {"cpus": 2, "torch": "2.13.0", "torch_threads": 2}, "sgemm_peak_gflops": 200.0, "repeats": 3,
        "widths": {"naive": side, "genlab": {**side, "wall_s": 0.4}, "speedup": 5.0, "naive_fraction_of_peak": 0.25,
                   "genlab_fraction_of_peak": 0.5, "max_test_acc_difference": 0.01},
        "robustness_eval": {"param_sets": 120, "naive_s": 0.4, "genlab_s": 0.2, "speedup": 2.0, "max_acc_difference": 0.0},
        "rff": {"n": 4000, "values_of_N": 33, "wall_s": 27.0, "test_mse_peak_at": 4000},
        "fastfood": {"ratio": 2.5},
        "scaling": {"time_exponent": 1.0, "points": [{"n": 10000, "epoch_s": 0.2, "peak_rss_mb": 400.0}]},
    }
    report["ensemble"] = report["widths"]
    table = bench.markdown_table(report, "genlab bench")
    for text in ("| widths | 2.00 | 0.40 | 5.0x", "| ensemble |", "120 parameter sets", "2.50x", "exponent 1.00",
                 "3 time(s) in a fresh process"):
        assert text in table
