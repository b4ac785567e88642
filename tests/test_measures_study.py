"""The generalization-measures study (Jiang et al. 2019): its helpers, the public API name, and a tiny
end-to-end sweep through the engine."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import genlab
import genlab.probes.measures
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.run.runner import run_study
from genlab.spec import resolve_spec
from genlab.studies import get_study
from genlab.studies.measures import MEASURES, explained_share, module_at, steps_to_loss, sweep_groups


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


def test_explained_share_is_eta_squared():
    table = pd.DataFrame({"noise": [0, 0, 1, 1], "gap": [1.0, 3.0, 5.0, 7.0]})
    # group means 2 and 6 around 4: between SS = 2 * 4 + 2 * 4 = 16; total SS = 9 + 1 + 1 + 9 = 20
    assert explained_share(table, "noise", "gap") == pytest.approx(0.8)
    assert math.isnan(explained_share(pd.DataFrame({"noise": [0, 1], "gap": [2.0, 2.0]}), "noise", "gap"))


def test_spec_validation_and_grouping():
    study = get_study("measures")
    with pytest.raises(UserError, match="learning rate"):
        resolve_spec(study.Spec, "smoke", None, {"lr": [0.1, -1.0]})
    with pytest.raises(UserError, match="model"):
        resolve_spec(study.Spec, "smoke", None, {"model": "lenet"})
    spec = resolve_spec(study.Spec, "quick", None, {})
    models = (len(spec.sweep_widths) * len(spec.sweep_depths) * len(spec.sweep_lrs) * len(spec.sweep_batch_sizes)
              * len(spec.sweep_label_noise))
    assert models >= 24
    assert len(sweep_groups(spec)) == len(spec.sweep_batch_sizes) * len(spec.sweep_depths)


def test_end_to_end_tiny_sweep(tmp_path):
    study = get_study("measures")
    spec = resolve_spec(study.Spec, "smoke", None, {"epochs": 4, "label_noise": [0.0, 0.5]})
    store = run_study(study, spec, tmp_path / "run")
    results = store.results()
    models = results[results["kind"] == "model"]
    ranked = results[results["kind"] == "rank"].sort_values("rank")
    assert len(models) == 8 and len(ranked) == len(MEASURES)
    assert set(ranked["measure"]) == set(MEASURES)
    taus = ranked["tau"].abs().to_numpy()
    finite = taus[np.isfinite(taus)]
    assert np.all(np.diff(finite) <= 1e-12)                # sorted by |tau|
    assert (models["dist_from_init"] > 0).all()            # trained away from the epoch-0 checkpoint
    assert np.allclose(models["gen_gap"], models["train_acc"] - models["test_acc"])
    noisy = models.groupby("label_noise")["fraction_wrong"].mean()
    assert noisy[0.0] == 0 and 0.3 < noisy[0.5] < 0.6     # uniform redraw: p (K - 1) / K wrong
    assert (tmp_path / "run" / "figures" / "measures.png").exists()
    summary = study.summarize(results, store.curves(), spec)
    assert summary.verdict and len(summary.checks) == 3
