"""docs/adding-a-study.md, followed to the letter: the method in probes/NAME.py, the experiment in
studies/NAME.py, and the conformance check says what is missing.

A tiny study ("tiny-norms": does a network that memorizes random labels end with larger weights
than one that learns true labels?) is written as those two files in a scratch folder that extends
the ``genlab.probes`` and ``genlab.studies`` packages, imported, run through the CLI and checked
with ``check_study``; then broken copies of it show the messages a newcomer would get."""
import importlib
import json
import sys
import textwrap

import pytest

import genlab.probes
import genlab.studies
from genlab.cli import main
from genlab.studies import STUDIES
from genlab.studies.base import UnitResult
from genlab.studies.checks import StudyContractError, check_study

PROBE = '''
    """Total weight norm of any network: sqrt of the sum of squared weights (matrices and kernels,
    biases left out), the capacity proxy of Bartlett (1998) and Neyshabur et al. (2015)."""
    import torch
    from torch import nn


    def weight_norm(module: nn.Module) -> float:
        """sqrt(sum over parameters of dimension >= 2 of their squared entries)."""
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in module.parameters() if p.dim() >= 2)))
'''

STUDY = '''
    """Tiny norms: the same MLP trained on true and on random labels; which ends with larger weights?"""
    from pathlib import Path

    import torch
    from pydantic import Field

    from genlab.data import corrupt_labels
    from genlab.engine import InputGroup, ModelJob, train_models
    from genlab.plotting import COLORS, figure, save
    from genlab.probes.tiny_norms import weight_norm
    from genlab.seeding import derive_seed
    from genlab.spec import DataSpec, ModelSpec, OptimSpec, StudySpec
    from genlab.studies.base import Study, Summary, Unit, UnitResult, register


    class TinyNormsSpec(StudySpec):
        data: DataSpec = DataSpec(dataset="digits")
        network: ModelSpec = ModelSpec(widths=[64])
        optim: OptimSpec = OptimSpec(optimizer="adam", lr=0.01, batch_size=50, epochs=20)
        label_noise: float = Field(1.0, gt=0.0, le=1.0, description="fraction of labels redrawn in the random arm")

        presets = {"quick": {}, "paper": {"epochs": 100, "seeds": [0, 1, 2]},
                   "smoke": {"n_train": 200, "n_test": 100, "epochs": 3}}


    @register
    class TinyNorms(Study):
        name = "tiny-norms"
        title = "Tiny norms: weight norm after fitting true or random labels"
        question = "Does memorizing random labels take larger weights than learning true ones?"
        citation = "Neyshabur et al. 2017, Exploring generalization in deep learning"
        Spec = TinyNormsSpec
        result_columns = ("labels", "seed", "norm", "train_acc", "test_acc")

        def units(self, spec):
            return [Unit(f"seed{s}", {"seed": s}) for s in spec.seeds]

        def run_unit(self, spec, unit, ctx):
            data, seed = spec.data.load(), unit["seed"]
            noisy, _ = corrupt_labels(data.y_train.numpy(), spec.label_noise, data.num_classes,
                                      derive_seed(seed, "tiny-norms", "labels"))
            jobs = [ModelJob(labels, spec.network.build(data, seed), seed=seed, y_train=y)
                    for labels, y in (("true", data.y_train), ("random", torch.from_numpy(noisy)))]
            config = spec.optim.train_config("ce", device=spec.device)
            ctx.progress.start_unit(unit.key, config.epochs, len(jobs))
            out = train_models(jobs, [InputGroup(data.x_train, data.x_test, data.y_test)], config,
                               on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot())
            rows = [{"labels": job.key, "seed": seed, "norm": weight_norm(out.module(k)), "train_acc": o.train_acc,
                     "test_acc": o.test_acc} for k, (job, o) in enumerate(zip(jobs, out.outcomes))]
            return UnitResult(rows, [{**c, "seed": seed} for c in out.curves])

        def plot(self, results, curves, spec, out_dir: Path):
            fig, axes = figure(1)
            means = results.groupby("labels")["norm"].mean()
            axes[0, 0].bar(list(means.index), list(means.values), color=COLORS[0])
            axes[0, 0].set_ylabel("weight norm")
            return [save(fig, out_dir, "tiny_norms")]

        def summarize(self, results, curves, spec):
            norm = results.groupby("labels")["norm"].mean()
            larger = bool(norm["random"] > norm["true"])
            return Summary(verdict=f"weight norm {norm['true']:.2f} (true labels) vs {norm['random']:.2f} (random)",
                           reading="Random labels take larger weights." if larger else "They do not here.",
                           checks=[("random-label networks end with larger weights", larger)])
'''


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    """probes/tiny_norms.py and studies/tiny_norms.py, importable as genlab.probes.tiny_norms and
    genlab.studies.tiny_norms, and registered, for the duration of a test."""
    for package, source in ((genlab.probes, PROBE), (genlab.studies, STUDY)):
        folder = tmp_path / "src" / package.__name__.rsplit(".", 1)[1]
        folder.mkdir(parents=True)
        (folder / "tiny_norms.py").write_text(textwrap.dedent(source))
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    module = importlib.import_module("genlab.studies.tiny_norms")
    yield STUDIES["tiny-norms"], module
    STUDIES.pop("tiny-norms", None)
    for name in ("genlab.studies.tiny_norms", "genlab.probes.tiny_norms"):
        sys.modules.pop(name, None)


def test_a_new_study_through_the_documented_path(tiny_study, tmp_path, capsys):
    study, _ = tiny_study
    check_study(study, tmp_path / "check")
    out = tmp_path / "cli"
    assert main(["run", "tiny-norms", "--preset", "smoke", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert (out / "figures" / "tiny_norms.png").exists()


def _broken(tiny_study, **methods):
    study, module = tiny_study
    cls = type("Broken", (module.TinyNorms,), methods)
    return cls()


def test_the_conformance_check_says_what_is_missing(tiny_study, tmp_path):
    def loads_data(self, spec):
        spec.data.load()
        return [module.Unit("seed0", {"seed": 0})]

    _, module = tiny_study
    with pytest.raises(StudyContractError, match="units\\(\\) must not load data or build models"):
        check_study(_broken(tiny_study, units=loads_data), tmp_path / "a")

    def writes_its_own_file(self, spec, unit, ctx):
        (ctx.unit_dir / "my-cache.json").write_text("{}")
        return module.TinyNorms.run_unit(self, spec, unit, ctx)

    with pytest.raises(StudyContractError, match="left files behind.*my-cache.json"):
        check_study(_broken(tiny_study, run_unit=writes_its_own_file), tmp_path / "b")

    def impure(self, spec, unit, ctx):
        result = module.TinyNorms.run_unit(self, spec, unit, ctx)
        impure.calls += 1
        return UnitResult([{**r, "norm": r["norm"] + impure.calls} for r in result.rows], result.curves)

    impure.calls = 0
    with pytest.raises(StudyContractError, match="gave other rows when run again"):
        check_study(_broken(tiny_study, run_unit=impure), tmp_path / "c")

    def cannot_fail(self, results, curves, spec):
        summary = module.TinyNorms.summarize(self, results, curves, spec)
        summary.checks = [("the study ran", True)]
        return summary

    with pytest.raises(StudyContractError, match="no check changed its outcome"):
        check_study(_broken(tiny_study, summarize=cannot_fail), tmp_path / "d")

    spec_cls = module.TinyNormsSpec
    no_smoke = type("NoSmokeSpec", (spec_cls,), {"presets": {"quick": {}, "paper": {}}})
    with pytest.raises(StudyContractError, match="needs a 'smoke' preset"):
        check_study(_broken(tiny_study, Spec=no_smoke), tmp_path / "e")
