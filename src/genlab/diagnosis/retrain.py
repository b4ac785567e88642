"""The randomization test on the user's own architecture (Zhang et al. 2017, "Understanding deep
learning requires rethinking generalization", ICLR; arXiv:1611.03530).

Fresh copies of the architecture (from the user's factory, each initialized by its own seed) are
trained through the engine (:func:`genlab.engine.train_models`, BatchNorm statistics exact per
model) on the true training labels and on labels drawn uniformly at random, with the same
optimizer, until each fits its training set (train accuracy 1.0) or the epoch budget ends. Zhang
et al. found that networks fit random labels too, only more slowly: the architecture has the
capacity to memorize its training set, so its good test accuracy on true labels is not explained
by a lack of capacity. This retraining uses genlab's optimizer, not the user's recipe: the speeds
compare the two label sets under one recipe, they do not reproduce the user's training.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from genlab.data.corruptions import corrupt_labels
from genlab.diagnosis.inputs import build
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.seeding import derive_seed

FIT = 0.999
"""Train accuracy at which a model counts as having fit its labels (and stops training)."""


def randomization_test(factory: Callable[[], nn.Module], train, test, *, seed: int, epochs: int,
                       lr: float = 0.01, batch_size: int = 128, optimizer: str = "sgd") -> dict:
    """Train the factory's architecture on true and on random labels; epochs to fit each.

    Returns ``value`` / ``suggests`` (for the summary), the outcomes per label set and ``curves``
    (one row per (labels, epoch): train and test accuracy).
    """
    if epochs < 1:
        raise UserError(f"retrain_epochs={epochs} must be at least 1")
    (x, y), (x_test, y_test) = train, test
    classes = int(max(int(y.max()), int(y_test.max())) + 1)
    random_labels, _ = corrupt_labels(y.numpy(), 1.0, classes, derive_seed(seed, "diagnose", "random-labels"))
    labels = {"true labels": y, "random labels": torch.as_tensor(random_labels)}
    jobs = []
    for name, target in labels.items():
        torch.manual_seed(derive_seed(seed, "diagnose", name))
        jobs.append(ModelJob(name, build(factory, "--model"), seed=derive_seed(seed, "diagnose", "order"),
                             y_train=target))
    config = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs, stop_train_acc=FIT)
    outcome = train_models(jobs, [InputGroup(x, x_test, y_test)], config)
    rows = {o.key: o for o in outcome.outcomes}
    curves = pd.DataFrame(outcome.curves)[["key", "epoch", "train_acc", "test_acc"]]
    true, rand = rows["true labels"], rows["random labels"]
    return {"value": _value(true, rand, epochs), "suggests": _suggests(true, rand),
            "true_epochs_to_fit": true.epochs_to_fit, "random_epochs_to_fit": rand.epochs_to_fit,
            "true_train_acc": true.train_acc, "random_train_acc": rand.train_acc,
            "true_test_acc": true.test_acc, "random_test_acc": rand.test_acc, "epochs": epochs,
            "lr": lr, "optimizer": optimizer, "batch_size": batch_size, "curves": curves}


def _fit_text(outcome, epochs: int) -> str:
    if outcome.fit:
        return f"fit in {outcome.epochs_to_fit} epochs"
    return f"{100 * outcome.train_acc:.1f}% train accuracy after {epochs} epochs"


def _value(true, rand, epochs: int) -> str:
    slower = ""
    if true.fit and rand.fit:
        slower = f" ({rand.epochs_to_fit / max(1, true.epochs_to_fit):.1f}x slower)"
    return f"true labels: {_fit_text(true, epochs)}; random labels: {_fit_text(rand, epochs)}{slower}"


def _suggests(true, rand) -> str:
    at_chance = f"the random-label model's test accuracy is {100 * rand.test_acc:.0f}% (chance, as it must be)"
    if rand.fit or rand.train_acc > 0.9:
        return ("the architecture can memorize this training set with labels that carry no information (Zhang et "
                "al. 2017): its capacity alone does not explain why it generalizes, and a training accuracy of 100% "
                f"says nothing about overfitting by itself; {at_chance}.")
    return (f"it did not fit random labels within this budget (reached {100 * rand.train_acc:.0f}%); Zhang et al. "
            "found random labels take several times longer to fit, so more retraining epochs tell 'cannot "
            "memorize' (little spare capacity on this data) from 'memorizes more slowly'.")
