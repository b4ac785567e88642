"""The randomization study end to end at small size, and the phenomenon it must show."""
import pandas as pd

from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.randomization import variants


def small_spec(**kw):
    study = get_study("randomization")
    base = dict(dataset="digits", n_train=500, n_test=300, widths=[256], optimizer="adam", lr=0.003, batch_size=32,
                epochs=120, corruptions=[0.5, 1.0])
    return study, resolve_spec(study.Spec, "quick", None, {**base, **kw})


def test_variants_always_include_true_labels_and_name_random_labels():
    _, spec = small_spec(corruptions=[1.0, 0.2])
    names = [v["variant"] for v in variants(spec)]
    assert names[:3] == ["true_labels", "corrupt_labels_0.2", "random_labels"]
    assert names[3:] == ["shuffled_pixels", "random_pixels", "gaussian"]


def test_random_labels_and_pixels_are_memorized_while_test_accuracy_falls_to_chance(tmp_path):
    study, spec = small_spec()
    store = run_study(study, spec, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(study.result_columns) <= set(results.columns)
    assert len(results) == 6 and not results["diverged"].any()
    by = results.set_index("variant")
    assert (results["train_acc"] == 1.0).all(), results[["variant", "train_acc"]]
    assert by.loc["true_labels", "test_acc"] >= 0.85
    assert by.loc["random_labels", "test_acc"] <= 0.2
    assert by.loc["corrupt_labels_0.5", "test_acc"] < by.loc["true_labels", "test_acc"]
    assert by.loc["random_labels", "steps_to_fit"] > by.loc["true_labels", "steps_to_fit"]
    assert abs(by.loc["random_labels", "fraction_wrong"] - 0.9) < 0.06
    assert (tmp_path / "run" / "figures" / "randomization.png").stat().st_size > 20_000
    summary = study.summarize(results, store.curves(), spec)
    assert summary.verdict.startswith("every variant fitted to 100% train accuracy")
    assert all(ok for _, ok in summary.checks)
    curves = pd.read_csv(tmp_path / "run" / "curves.csv")
    assert {"variant", "step", "train_loss", "test_acc"} <= set(curves.columns)


def test_same_spec_gives_the_same_numbers(tmp_path):
    study, spec = small_spec(epochs=3, corruptions=[1.0], pixel_variants=["gaussian"])
    run_study(study, spec, tmp_path / "a")
    run_study(study, spec, tmp_path / "b")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "results.csv"),
                                  pd.read_csv(tmp_path / "b" / "results.csv"))
    study, other = small_spec(epochs=3, corruptions=[1.0], pixel_variants=["gaussian"], seeds=[5])
    run_study(study, other, tmp_path / "c")
    assert not pd.read_csv(tmp_path / "a" / "results.csv")["train_loss"].equals(
        pd.read_csv(tmp_path / "c" / "results.csv")["train_loss"])


def test_corrupted_test_labels_only_on_request(tmp_path):
    study, spec = small_spec(epochs=2, corruptions=[1.0], pixel_variants=[], corrupt_test_labels=True)
    run_study(study, spec, tmp_path / "r")
    results = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(results["test_labels"]) == {"corrupted"}
