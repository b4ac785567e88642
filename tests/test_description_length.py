"""Prequential description length (Blier & Ollivier 2018): the bits accounting on cases whose answer
is known, the block and validation bookkeeping, and tiny end-to-end runs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from genlab.errors import UserError
from genlab.probes.description_length import (
    best_checkpoints,
    block_boundaries,
    checkpoint_epochs,
    code_length_bits,
    parameter_code_bits,
    prequential_bits,
    uniform_code_bits,
    validation_split,
)
from genlab.progress import NullProgress
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.base import Context
from genlab.studies.description_length import _totals, parse_architecture


def test_uniform_prediction_costs_exactly_log2_k_bits_per_label():
    k, n = 10, 37
    logits = torch.full((n, k), 3.7)                     # any constant: softmax is uniform
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(0))
    bits = code_length_bits(logits, labels)
    assert bits.dtype == torch.float64
    assert torch.allclose(bits, torch.full((n,), math.log2(k), dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(bits.sum()) == pytest.approx(uniform_code_bits(n, k), abs=1e-9)


def test_code_length_matches_probabilities_and_stays_finite():
    # p = (1/2, 1/4, 1/4): label 0 costs 1 bit, labels 1 and 2 cost 2 bits
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]] * 3))
    assert code_length_bits(logits, torch.tensor([0, 1, 2])).tolist() == pytest.approx([1.0, 2.0, 2.0])
    confident = torch.tensor([[0.0, 200.0]])             # p(label 0) = e^-200: 200 / ln 2 bits, not inf
    assert float(code_length_bits(confident, torch.tensor([0]))) == pytest.approx(200 / math.log(2), rel=1e-9)
    stacked = torch.randn(3, 5, 4)                        # [models, examples, classes]
    y = torch.randint(0, 4, (3, 5))
    assert code_length_bits(stacked, y).shape == (3, 5)


def test_prequential_total_of_a_uniform_coder_is_the_uniform_code():
    n, k = 1000, 10
    ends = block_boundaries(n, 64)
    blocks = [uniform_code_bits(b - a, k) for a, b in zip(ends[:-1], ends[1:])]
    assert prequential_bits(ends[0], k, blocks) == pytest.approx(uniform_code_bits(n, k))
    assert parameter_code_bits(1234) == 32 * 1234


def test_block_boundaries_double_and_end_at_n():
    assert block_boundaries(2048, 64) == [64, 128, 256, 512, 1024, 2048]
    assert block_boundaries(1000, 64) == [64, 128, 256, 512, 1000]
    assert block_boundaries(10, 3, growth=1.2) == [3, 4, 5, 6, 7, 8, 10]
    with pytest.raises(UserError, match="first_block"):
        block_boundaries(64, 64)


def test_candidate_epochs_and_validation_split():
    assert checkpoint_epochs(16) == (0, 1, 2, 4, 8, 16)
    assert checkpoint_epochs(50) == (0, 1, 2, 4, 8, 16, 32, 50)
    fit, val = validation_split(100, 0.2, seed=3)
    assert len(val) == 20 and len(fit) == 80
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(100))
    again = validation_split(100, 0.2, seed=3)
    assert np.array_equal(fit, again[0]) and np.array_equal(val, again[1])
    assert len(validation_split(2, 0.4, seed=0)[0]) == 1   # always something left to fit


def test_best_checkpoint_uses_only_candidate_epochs_and_prefers_the_earliest_tie():
    curves = [{"key": "a", "epoch": e, "test_loss": v} for e, v in [(0, 2.3), (1, 1.0), (2, 0.5), (3, 0.1), (4, 0.5)]]
    curves += [{"key": "b", "epoch": e, "test_loss": v} for e, v in [(0, 2.3), (1, 0.7), (2, 0.7), (4, float("nan"))]]
    assert best_checkpoints(curves, ["a", "b"], (0, 1, 2, 4)) == [2, 1]


def test_architecture_names_and_spec_validation():
    assert parse_architecture("mlp-512-512") == ("mlp", [512, 512])
    assert parse_architecture("lenet") == ("lenet", None)
    study = get_study("description-length")
    with pytest.raises(UserError, match="unknown model family"):
        resolve_spec(study.Spec, "smoke", None, {"architectures": ["transformer-4"]})
    with pytest.raises(UserError, match="widths must be integers"):
        resolve_spec(study.Spec, "smoke", None, {"architectures": ["mlp-big"]})


def test_end_to_end_smoke_accounting(tmp_path):
    study = get_study("description-length")
    spec = resolve_spec(study.Spec, "smoke", None, {})
    store = run_study(study, spec, tmp_path / "run")
    results = store.results()
    k = int(results["num_classes"].iloc[0])
    for (_, _, _), part in results.groupby(["model", "labels", "seed"]):
        part = part.sort_values("block_end")
        assert part["block_start"].iloc[0] == 0 and part["block_end"].iloc[-1] == 128
        assert part["bits"].iloc[0] == pytest.approx(uniform_code_bits(spec.first_block, k))
        assert np.allclose(part["cumulative_bits"], part["bits"].cumsum())
        assert np.allclose(part["uniform_bits"], part["block_end"] * math.log2(k))
        assert (part["param_bits"] == 32 * part["params"]).all()
        assert (part["block_start"].iloc[1:].to_numpy() == part["block_end"].iloc[:-1].to_numpy()).all()
    assert (tmp_path / "run" / "figures" / "description_length.png").exists()


def _table(per_label: dict[str, list[float]], ends=(64, 128, 256, 512), k: int = 10) -> pd.DataFrame:
    """A results table whose blocks cost the given bits per label (the first block: uniform)."""
    rows = []
    for labels, costs in per_label.items():
        total, start = 0.0, 0
        for end, cost in zip(ends, [math.log2(k), *costs]):
            bits = cost * (end - start)
            total += bits
            rows.append({"model": "mlp-64", "labels": labels, "seed": 0, "block_start": start, "block_end": end,
                         "bits": bits, "bits_per_example": cost, "cumulative_bits": total,
                         "uniform_bits": end * math.log2(k), "params": 1000, "param_bits": 32000, "num_classes": k})
            start = end
    return pd.DataFrame(rows)


LAST_BLOCK = ("true labels: the code per label falls as data accumulate - the last block costs <= 25% of log2 K bits "
              "per label for every model")
RANDOM_BAND = "random labels: every model within 99%-102% of the uniform code (no compression, and no leaked labels " \
              "or lost bits)"


def test_checks_follow_the_measured_codes_and_can_fail():
    study = get_study("description-length")
    spec = resolve_spec(study.Spec, "smoke", None, {})
    log2k = math.log2(10)
    learned = {"true": [1.8, 1.2, 0.6], "random": [log2k * 1.003] * 3}
    checks = dict(study.summarize(_table(learned), pd.DataFrame(), spec).checks)
    assert checks[LAST_BLOCK] and checks[RANDOM_BAND]
    # a coder that stops learning (last block 1.2 bits = 36% of log2 10), one that leaks random labels (95%)
    # and one that loses bits (110%) each fail their check
    assert not dict(study.summarize(_table({**learned, "true": [1.8, 1.2, 1.2]}), pd.DataFrame(),
                                         spec).checks)[LAST_BLOCK]
    for factor in (0.95, 1.10):
        table = _table({**learned, "random": [log2k * factor] * 3})
        assert not dict(study.summarize(table, pd.DataFrame(), spec).checks)[RANDOM_BAND]


@pytest.mark.slow
def test_quick_preset_codes_show_learning_and_no_compression_of_noise(tmp_path):
    """The quick preset's mlp-64 on 2048 mnist5k labels (measured: last block 18% of log2 K on true labels,
    random labels 100.3% of uniform)."""
    study = get_study("description-length")
    spec = resolve_spec(study.Spec, "quick", None, {"architectures": ["mlp-64"]})
    store = run_study(study, spec, tmp_path / "run")
    checks = dict(study.summarize(store.results(), store.curves(), spec).checks)
    assert checks[LAST_BLOCK] and checks[RANDOM_BAND], checks
    assert all(checks.values()), checks


def test_true_labels_compress_and_random_labels_do_not(tmp_path):
    study = get_study("description-length")
    spec = resolve_spec(study.Spec, "smoke", None, {"n_train": 512, "first_block": 64, "epochs": 8, "min_steps": 40,
                                                    "batch_size": 64, "lr": 0.002, "architectures": ["mlp-64"]})
    ctx = Context(tmp_path / "unit", NullProgress())
    ctx.unit_dir.mkdir()
    rows = study.run_unit(spec, study.unit(spec, "mlp-64"), ctx).rows
    totals = _totals(pd.DataFrame(rows)).set_index("labels")
    assert 0.99 <= totals.loc["random", "ratio"] <= 1.02
    assert totals.loc["true", "ratio"] <= 0.75
    # a resumed unit reuses the finished blocks and gives the same rows
    assert study.run_unit(spec, study.unit(spec, "mlp-64"), ctx).rows == rows


def test_a_run_of_several_seeds_plots_and_completes(tmp_path):
    """The totals panel averages a model's seeds (one bar per model and label set)."""
    from genlab.cli import main

    assert main(["run", "description-length", "--preset", "smoke", "--seeds", "1,2", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert (tmp_path / "r" / "figures").is_dir() and any((tmp_path / "r" / "figures").glob("*.png"))
