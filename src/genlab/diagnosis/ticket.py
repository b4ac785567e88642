"""A lottery ticket of the user's architecture at a few sparsities (Frankle & Carbin 2019, "The
Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks", ICLR; arXiv:1803.03635).

Iterative magnitude pruning through :class:`genlab.probes.lottery.IterativePruning` (the probe of
the lottery study): a fresh copy of the architecture is trained, the smallest-magnitude fraction
of its remaining weights is pruned per layer (the output layer at half the rate), the survivors
are reset to their initial values and trained again, for a few rounds. At every sparsity the
ticket is compared with the same mask on a fresh initialization from the user's factory (the
reinit control), both trained the same number of epochs from their initialization. A ticket that
trains better than its reinit control is what Frankle & Carbin call a winning ticket: the
initial values of the kept weights matter, not only the sparse structure.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from torch import nn

from genlab.data.splits import split_validation
from genlab.diagnosis.inputs import build_seeded
from genlab.diagnosis.retrain_settings import RetrainSettings, skipped
from genlab.engine import InputGroup, TrainConfig
from genlab.errors import UserError
from genlab.probes.lottery import IterativePruning, PruningPlan
from genlab.seeding import derive_seed

CAVEAT = ("Frankle & Carbin found winning tickets at resetting to the initialization for small networks with "
          "moderate learning rates; for deeper networks and larger learning rates they appear only with rewinding "
          "to an early epoch (Frankle et al. 2019). A ticket no better than its reinit control here says this recipe "
          "found none, not that none exists; differences of a point or two at this size are noise.")
WIN = 0.02
"""A ticket whose test accuracy exceeds its reinit control's by more than this counts as winning."""


def lottery_ticket(factory: Callable[[], nn.Module], train, test, *, seed: int, settings: RetrainSettings) -> dict:
    """IMP rounds on ``train`` (a validation split held out and reported); ticket vs reinit per sparsity.
    A model without prunable weights gives ``skipped`` with the probe's reason."""
    x, y = train
    x_fit, y_fit, x_val, y_val = split_validation(x, y, max(1, round(settings.val_fraction * len(y))),
                                                  derive_seed(seed, "diagnose", "lottery-val"))

    def reinit(module: nn.Module, reinit_seed: int) -> nn.Module:
        return build_seeded(factory, derive_seed(seed, "diagnose", "lottery-reinit", reinit_seed))

    config = TrainConfig(optimizer=settings.optimizer, lr=settings.lr, batch_size=settings.batch_size,
                         epochs=settings.lottery_epochs, eval_every=settings.lottery_epochs)
    try:
        plan = PruningPlan(rounds=settings.lottery_rounds, rate=settings.lottery_rate, controls=("reinit",))
        imp = IterativePruning([build_seeded(factory, derive_seed(seed, "diagnose", "lottery-init"))], [seed],
                               InputGroup(x_fit, test[0], test[1], x_val, y_val), y_fit, config, plan,
                               reinit=reinit)
        rounds = imp.run()
    except UserError as exc:  # e.g. a model with no weight of dimension >= 2 to prune
        return skipped(f"the lottery probe cannot prune this model ({exc})", settings, "lottery", CAVEAT)
    rows = [{"round": r.round, "arm": arm.arm, "weights_remaining": arm.density, "test_acc": o.test_acc,
             "val_acc": o.val_acc, "train_acc": o.train_acc}
            for r in rounds for arm, o in zip(r.arms, r.outcome.outcomes)]
    table = pd.DataFrame(rows)
    result = {"table": table, "settings": settings.describe("lottery"), "caveat": CAVEAT}
    result["value"], result["suggests"] = _reading(table, chance=1.0 / (int(y.max()) + 1))
    return result


def _reading(table: pd.DataFrame, chance: float) -> tuple[str, str]:
    dense = float(table.loc[table["round"] == 0, "test_acc"].iloc[0])
    pruned = table[table["round"] > 0].pivot(index="round", columns="arm", values=["test_acc", "weights_remaining"])
    parts, wins = [], 0
    for _, row in pruned.iterrows():
        ticket, control = row[("test_acc", "ticket")], row[("test_acc", "reinit")]
        wins += ticket > control + WIN
        parts.append(f"{100 * row[('weights_remaining', 'ticket')]:.0f}% of weights: ticket {100 * ticket:.1f}%, "
                     f"reinit {100 * control:.1f}%")
    value = f"dense {100 * dense:.1f}% test accuracy; " + "; ".join(parts)
    if dense < 1.5 * chance:
        return value, (f"the dense network retrained with this recipe stays near chance ({100 * dense:.0f}%): the "
                       "budget is too small for this architecture and data to say anything about tickets; more "
                       "examples (retrain_examples) or the user's own recipe would be needed.")
    sparsest = pruned.iloc[-1]
    keeps = sparsest[("test_acc", "ticket")] >= dense - 0.02
    if wins == len(pruned):
        text = ("at every sparsity tried the ticket (kept weights reset to their initial values) trains better than "
                "the same mask re-initialized: a winning ticket in Frankle & Carbin's sense - the trained network's "
                "accuracy rests on a sparse subnetwork and its initial values")
    elif wins:
        text = (f"the ticket beats its re-initialized control at {wins} of {len(pruned)} sparsities: weak evidence "
                "of a winning ticket under this recipe")
    else:
        text = ("the ticket trains no better than the same mask re-initialized at any sparsity tried: no winning "
                "ticket under this recipe (the sparse structure alone explains the pruned accuracy)")
    text += (f"; at {100 * sparsest[('weights_remaining', 'ticket')]:.0f}% of the weights the ticket "
             + ("keeps" if keeps else "loses") + " the dense accuracy (within 2 points), so the architecture "
             + ("has many weights it does not need." if keeps else "needs more of its weights than that."))
    return value, text
