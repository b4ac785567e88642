"""Intrinsic dimension of the user's architecture on the user's data (Li, Farkhoor, Liu & Yosinski
2018, "Measuring the Intrinsic Dimension of Objective Landscapes", ICLR; arXiv:1804.08838).

Fresh copies of the architecture are trained directly (all D parameters) and only inside random
d-dimensional subspaces theta_0 + P theta_d, through
:func:`genlab.probes.intrinsic_dim.measure_intrinsic_dimension` (the probe of the intrinsic-dim
study: Fastfood projections, the matched subspace learning rate, d selected on a validation
split, the crossing interpolated in log d). d_int90 is the smallest d reaching 90% of the direct
baseline's validation accuracy: a small d_int90 next to D says the problem, as this architecture
sees it, has few degrees of freedom and most parameters are redundant.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from genlab.data.splits import split_validation
from genlab.diagnosis.inputs import build_seeded
from genlab.diagnosis.retrain_settings import RetrainSettings, skipped
from genlab.engine import InputGroup, TrainConfig
from genlab.errors import UserError
from genlab.probes.intrinsic_dim import SearchSettings, measure_intrinsic_dimension, parameter_count
from genlab.seeding import derive_seed

CAVEAT = ("Li et al.'s d_int90 depends on the training budget, the optimizer and the projection, and on how "
          "many examples are trained on; it bounds the dimension needed by this recipe (a subspace run that "
          "trains longer may need a smaller d). Compare it with D and with other architectures measured the same "
          "way, not with the paper's numbers for other data.")


def intrinsic_dimension(factory: Callable[[], nn.Module], train, test, *, seed: int,
                        settings: RetrainSettings) -> dict:
    """d_int90 of the factory's architecture on ``train`` (validation split held out); the test set is
    only reported. A model the subspace probe cannot train gives ``skipped`` with the probe's reason."""
    x, y = train
    x_fit, y_fit, x_val, y_val = split_validation(x, y, max(1, round(settings.val_fraction * len(y))),
                                                  derive_seed(seed, "diagnose", "id-val"))

    def make(run_seed: int) -> nn.Module:
        return build_seeded(factory, derive_seed(seed, "diagnose", "id-init", run_seed))

    D = parameter_count(make(0))
    dims = tuple(d for d in settings.id_dims if d < D)
    if not dims:
        return skipped(f"the model has only D={D:,} parameters, fewer than the smallest d tried "
                       f"({min(settings.id_dims):,})", settings, "intrinsic_dim", CAVEAT)
    config = TrainConfig(optimizer=settings.optimizer, lr=settings.id_lr, batch_size=settings.batch_size,
                         epochs=settings.id_epochs, eval_every=settings.id_epochs)
    search = SearchSettings(threshold=settings.id_threshold, mode="grid", dims=dims, projection="fastfood")
    try:
        measured = measure_intrinsic_dimension(make, InputGroup(x_fit, test[0], test[1], x_val, y_val), y_fit,
                                               config, [0], search)
    except UserError as exc:  # the probe refuses models it cannot train in a subspace
        return skipped(f"the intrinsic-dimension probe cannot train this model in a subspace ({exc})", settings,
                       "intrinsic_dim", CAVEAT)
    table = measured.table()[["kind", "d", "val_acc", "test_acc", "train_acc", "diverged"]]
    crossing = measured.crossing
    result = {"D": D, "d_int90": crossing.d_int, "status": crossing.status, "d_below": crossing.d_below,
              "d_above": crossing.d_above, "baseline_val_acc": measured.baseline_selection_acc,
              "baseline_test_acc": measured.baseline_acc, "target_val_acc": measured.target_acc,
              "test_acc_at_d_above": measured.test_acc_at_crossing(), "runs": table,
              "settings": settings.describe("intrinsic_dim"), "caveat": CAVEAT}
    result["value"], result["suggests"] = _reading(result, chance=1.0 / (int(y.max()) + 1))
    return result


def _reading(r: dict, chance: float) -> tuple[str, str]:
    D, target = r["D"], r["target_val_acc"]
    base = f"direct training: {100 * r['baseline_val_acc']:.1f}% validation accuracy (target {100 * target:.1f}%)"
    if r["baseline_val_acc"] < 1.5 * chance:
        return (f"not measurable ({base})",
                "the directly trained network stays near chance under this budget, so 90% of it is no target; more "
                "examples (retrain_examples) or epochs would be needed.")
    if r["status"] == "not_reached":
        return (f"d_int90 > {r['d_below']:,} of D = {D:,} ({base})",
                f"no subspace tried (up to d = {r['d_below']:,}) reached 90% of the direct baseline within this "
                "budget: the problem needs more degrees of freedom than that under this recipe, or longer training.")
    bound = "<= " if r["status"] == "upper_bound" else "~ "
    d_int = r["d_int90"]
    value = f"d_int90 {bound}{d_int:,.0f} of D = {D:,} ({d_int / D:.2%}; {base})"
    if d_int > 0.1 * D:
        return value, (f"the problem needs a sizable fraction of the {D:,} parameters ({d_int / D:.0%}) as degrees "
                       "of freedom under this recipe: little of the architecture is redundant on this data.")
    return value, (f"a subspace of {d_int:,.0f} directions already reaches 90% of what all {D:,} parameters reach: "
                   "the architecture has far more parameters than this problem needs degrees of freedom (Li et al. "
                   "2018), which is why parameter counts say little about overfitting.")
