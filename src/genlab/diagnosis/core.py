"""``genlab.diagnose``: everything that can be said about a network trained anywhere.

The trained model, its training and test data and optionally a record of its training
(:class:`genlab.Recorder`) go in; one HTML page comes out (``OUT/report.html``, with the
figures beside it in ``OUT/figures`` and the numbers in ``OUT/diagnosis.json`` and
``OUT/layer_robustness.csv``). Everything is written to a temporary folder inside ``OUT`` first
and moved into place at the end, the page last: a failed diagnosis never leaves a page that
looks complete.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from genlab.diagnosis import analysis, figures, retrain
from genlab.diagnosis.inputs import build, check_data
from genlab.diagnosis.prequential import description_length
from genlab.diagnosis.retrain_settings import PARTS, RetrainSettings, checked_examples, checked_parts
from genlab.diagnosis.subspace_dim import intrinsic_dimension
from genlab.diagnosis.summary import Answer, answer
from genlab.diagnosis.ticket import lottery_ticket
from genlab.errors import UserError
from genlab.models import INITIALIZERS
from genlab.probes.measures import compute_measures
from genlab.recorder import Recorder, load_record, unwrap
from genlab.seeding import seeded_generator

BUDGETS = {
    "quick": {"max_points": 2000, "sharpness_points": 500, "sharpness_draws": 2, "sharpness_steps": 5, "draws": 2,
              "retrain": False},
    "full": {"max_points": None, "sharpness_points": 2000, "sharpness_draws": 4, "sharpness_steps": 6, "draws": 3,
             "retrain": False},
    "retrain": {"max_points": 2000, "sharpness_points": 500, "sharpness_draws": 2, "sharpness_steps": 5,
                "draws": 2, "retrain": True},
}
"""quick: no retraining, evaluations of many modified networks on at most 2000 points; full: the
same on all points with more noise draws; retrain: quick plus the retraining experiments of
:data:`genlab.diagnosis.retrain_settings.PARTS` (the randomization test, prequential description
length, intrinsic dimension, a lottery ticket), each training fresh copies of the factory's
architecture through the engine at the sizes of :class:`RetrainSettings`."""

RETRAINED = ("description_length", "intrinsic_dim", "lottery")
"""The retraining results beside the randomization test, in the order the report shows them."""


FIGURES = ("performance", "trajectory", "margins", "layer_robustness_heatmaps", "layer_robustness", "spectra",
           "randomization", "description_length", "intrinsic_dim", "lottery")
"""The figures a diagnosis may draw (files of these names in OUT/figures belong to it)."""


@dataclass
class Diagnosis:
    """What :func:`diagnose` measured; ``report`` is the page written."""

    answer: Answer
    performance: dict
    measures: dict
    spectra: pd.DataFrame
    layers: pd.DataFrame
    robustness: pd.DataFrame
    trajectory: pd.DataFrame | None
    randomization: dict | None
    retrained: dict[str, dict] = field(default_factory=dict)
    """description_length / intrinsic_dim / lottery results (each with ``value``, ``suggests``,
    ``settings``, ``caveat``; ``skipped`` with the reason when the probe cannot handle the model)."""
    notes: list[str] = field(default_factory=list)
    margins: tuple | None = None
    report: Path | None = None
    seconds: float = 0.0


def diagnose(model: nn.Module, train_data, test_data, record=None, out: str | Path = "diagnosis",
             budget: str = "quick", *, factory: Callable[[], nn.Module] | None = None, init: str = "default",
             threshold: float = 0.10, seed: int = 0, retrain_epochs: int = 30, retrain_parts=None,
             retrain_examples: int = RetrainSettings.examples, command: str | None = None,
             dataset: str = "data") -> Diagnosis:
    """Diagnose the trained ``model`` on ``train_data`` (what it was trained on) and ``test_data``
    (held out), both ``(inputs, integer labels)``; write ``out/report.html``.

    ``record``: a folder written by :class:`genlab.Recorder` (or the Recorder), adding distances
    from initialization, the test curve across epochs and layer re-initialization. ``budget``:
    ``"quick"``, ``"full"`` or ``"retrain"`` (see :data:`BUDGETS`; ``"retrain"`` needs
    ``factory``, a function returning the untrained architecture). ``init``: the initializer
    layers are re-randomized from (``genlab.models.INITIALIZERS``; PyTorch's ``default``).
    A layer is critical when resetting it costs more than ``threshold`` of test accuracy.
    With ``budget="retrain"``: ``retrain_parts`` (default all of
    :data:`~genlab.diagnosis.retrain_settings.PARTS`) chooses the retraining experiments,
    ``retrain_epochs`` bounds the randomization test's epochs and ``retrain_examples`` is the
    training subset the description length, intrinsic dimension and lottery ticket train on.
    """
    started = time.perf_counter()
    if budget not in BUDGETS:
        raise UserError(f"budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    if init not in INITIALIZERS:
        raise UserError(f"init {init!r}: choose one of {', '.join(INITIALIZERS)}")
    if not 0.0 < threshold < 1.0:
        raise UserError(f"threshold={threshold} must be a fraction of accuracy in (0, 1), e.g. 0.10")
    settings = BUDGETS[budget]
    if settings["retrain"] and factory is None:
        raise UserError("budget 'retrain' needs factory=, a function returning the untrained model")
    if not settings["retrain"] and retrain_parts is not None:
        raise UserError(f"retrain_parts={retrain_parts!r} needs budget 'retrain' (budget {budget!r} retrains nothing)")
    parts = checked_parts(PARTS if retrain_parts is None else retrain_parts) if settings["retrain"] else ()
    retrain_settings = RetrainSettings(examples=checked_examples(retrain_examples))
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    train, test, classes = check_data(model, train_data, test_data)
    states = _record_states(record, model)
    out = Path(out)
    work_dir = _work_dir(out)
    try:
        result = _measure(model, train, test, states, settings, factory=factory, init=init, threshold=threshold,
                          seed=seed, retrain_epochs=retrain_epochs, parts=parts, retrain_settings=retrain_settings,
                          classes=classes)
        result.seconds = time.perf_counter() - started
        figure_paths = _figures(result, work_dir / "figures", type(model).__name__, dataset, seed)
        _write_tables(result, work_dir)
        from genlab.diagnosis.page import render

        (work_dir / "report.html").write_text(render(result, figure_paths, work_dir, model, dataset=dataset,
                                                     budget=budget, record=record, command=command))
        result.report = _publish(work_dir, out)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


def _record_states(record, model: nn.Module) -> dict[int, dict[str, torch.Tensor]] | None:
    if record is None:
        return None
    folder = record.folder if isinstance(record, Recorder) else Path(record)
    return load_record(folder, model)


def _subsample(data, limit: int | None, seed: int, stream: int):
    x, y = data
    if limit is None or len(y) <= limit:
        return data
    order = torch.randperm(len(y), generator=seeded_generator(seed, stream))[:limit].sort().values
    return x[order], y[order]


def _measure(model, train, test, states, settings, *, factory, init, threshold, seed, retrain_epochs, parts,
             retrain_settings, classes) -> Diagnosis:
    notes: list[str] = []
    perf = analysis.performance(model, train, test)
    perf["n_train"], perf["n_test"] = len(train[1]), len(test[1])
    init_model = None
    if states and 0 in states:
        init_model = build(lambda: _copy_with(model, states[0]), "record epoch 0")
    elif states:
        notes.append("the record holds no epoch 0 (the initialization): distances from init and re-initialization "
                     "are left out")
    measures = compute_measures(model, train, init_model=init_model, seed=seed,
                                sharpness_points=settings["sharpness_points"],
                                sharpness_draws=settings["sharpness_draws"],
                                sharpness_steps=settings["sharpness_steps"])
    train_few = _subsample(train, settings["max_points"], seed, 1)
    test_few = _subsample(test, settings["max_points"], seed, 2)
    trajectory = analysis.trajectory(model, states, train_few, test_few) if states else None
    robustness, layer_notes = analysis.layer_robustness_rows(model, states, test_few, init=init,
                                                             draws=settings["draws"], threshold=threshold, seed=seed)
    notes += layer_notes
    layers = analysis.per_layer(robustness)
    spectra = analysis.spectra(model)
    randomization = retrain.randomization_test(factory, train, test, seed=seed, epochs=retrain_epochs) \
        if "randomization" in parts else None
    retrained = _retrain(factory, train, test, parts, retrain_settings, seed=seed, classes=classes,
                         test_limit=settings["max_points"])
    result = Diagnosis(answer=Answer(verdict=""), performance=perf, measures=measures, spectra=spectra,
                       layers=layers, robustness=robustness, trajectory=trajectory, randomization=randomization,
                       retrained=retrained, notes=notes)
    result.margins = (analysis.margins(model, train), analysis.margins(model, test))
    result.answer = answer(perf, measures, trajectory, layers, spectra, randomization, has_init=init_model is not None,
                           retrained=retrained, retrain=bool(settings["retrain"]))
    return result


def _retrain(factory, train, test, parts, settings: RetrainSettings, *, seed: int, classes: int,
             test_limit: int | None) -> dict[str, dict]:
    """The retraining results beside the randomization test, on a seeded subset of the training set."""
    wanted = [p for p in RETRAINED if p in parts]
    if not wanted:
        return {}
    few = _subsample(train, settings.examples, seed, 3)
    test_few = _subsample(test, test_limit, seed, 4)
    out = {}
    if "description_length" in wanted:
        out["description_length"] = description_length(factory, few, classes, seed=seed, settings=settings)
    if "intrinsic_dim" in wanted:
        out["intrinsic_dim"] = intrinsic_dimension(factory, few, test_few, seed=seed, settings=settings)
    if "lottery" in wanted:
        out["lottery"] = lottery_ticket(factory, few, test_few, seed=seed, settings=settings)
    return out


def _copy_with(model: nn.Module, state: dict) -> nn.Module:
    import copy

    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def _figures(result: Diagnosis, folder: Path, network: str, dataset: str, seed: int) -> list[Path]:
    paths = [figures.performance_figure(result.performance, result.trajectory, folder),
             figures.margins_figure(*result.margins, folder)]
    if not result.robustness.empty:
        paths.append(figures.robustness_figure(result.robustness, network, dataset, seed, folder))
    if not result.spectra.empty:
        paths.append(figures.spectra_figure(result.spectra, folder))
    if result.randomization and result.randomization.get("curves") is not None:
        paths.append(figures.randomization_figure(result.randomization["curves"], folder))
    retrained = result.retrained
    if "blocks" in retrained.get("description_length", {}):
        paths.append(figures.description_length_figure(retrained["description_length"], folder))
    if "runs" in retrained.get("intrinsic_dim", {}):
        paths.append(figures.intrinsic_dim_figure(retrained["intrinsic_dim"], folder))
    if "table" in retrained.get("lottery", {}):
        paths.append(figures.lottery_figure(retrained["lottery"]["table"], folder))
    return paths


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_tables(result: Diagnosis, folder: Path) -> None:
    numbers = {
        "answer": {"verdict": result.answer.verdict,
                   "findings": [f.__dict__ for f in result.answer.findings]},
        "performance": {k: _plain(v) for k, v in result.performance.items()},
        "measures": {k: _plain(v) for k, v in result.measures.items()},
        "spectra": result.spectra.drop(columns="singular_values").to_dict("records") if not result.spectra.empty
        else [],
        "layers": result.layers.to_dict("records") if not result.layers.empty else [],
        "trajectory": result.trajectory.to_dict("records") if result.trajectory is not None else None,
        "randomization": {k: v for k, v in (result.randomization or {}).items() if k != "curves"} or None,
        **{name: _retrained_numbers(part) for name, part in result.retrained.items()},
        "notes": result.notes, "seconds": result.seconds,
        "built": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
    }
    (folder / "diagnosis.json").write_text(json.dumps(numbers, indent=2, default=_json_default) + "\n")
    if not result.robustness.empty:
        result.robustness.to_csv(folder / "layer_robustness.csv", index=False)


def _retrained_numbers(part: dict) -> dict:
    """A retraining result for diagnosis.json: its tables as lists of records, NaN as null."""
    return {k: v.to_dict("records") if isinstance(v, pd.DataFrame) else _plain(v) for k, v in part.items()}


def _json_default(value):
    if hasattr(value, "item"):
        return _plain(value.item())
    if value is pd.NA:
        return None
    return str(value)


def _work_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = out / f".diagnose-{os.getpid()}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        (work / "figures").mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    return work


def _publish(work: Path, out: Path) -> Path:
    """Move the finished files into ``out``: figures and tables first, the page last."""
    try:
        (out / "figures").mkdir(exist_ok=True)
        made = {path.name for path in (work / "figures").iterdir()}
        for path in (out / "figures").iterdir():  # figures of an earlier diagnosis this one does not have
            if path.stem in FIGURES and path.name not in made:
                path.unlink()
        for name in sorted(made):
            os.replace(work / "figures" / name, out / "figures" / name)
        for name in ("diagnosis.json", "layer_robustness.csv"):
            if (work / name).exists():
                os.replace(work / name, out / name)
            else:
                (out / name).unlink(missing_ok=True)
        os.replace(work / "report.html", out / "report.html")
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write the report ({exc.strerror or exc})") from None
    return out / "report.html"
