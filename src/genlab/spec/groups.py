"""The groups of settings that studies share: data, model, optimizer.

Each group maps itself onto the library, so a study never copies settings field by field:
``DataSpec.load()`` gives the :class:`~genlab.data.Dataset`, ``ModelSpec.build(data, seed)`` the
initialized network, ``OptimSpec.train_config(loss=...)`` the engine's
:class:`~genlab.engine.TrainConfig`. A study that wants other defaults gives the group an
instance as its default (``optim: OptimSpec = OptimSpec(optimizer="adam", lr=1.2e-3)``).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from genlab.spec.base import Group
from genlab.spec.fields import DatasetName, Init, ModelName, Optimizer, Precision, Schedule, Widths


class _Loads:
    """Loading for the data groups: ``n_train``, ``n_test`` and ``data_root`` as the registry's arguments."""

    def params(self) -> dict[str, Any]:
        """The keyword arguments of :func:`genlab.data.load_dataset` (unset ones left out)."""
        params: dict[str, Any] = {"n_train": self.n_train, "n_test": self.n_test, "root": self.data_root}
        return {k: v for k, v in params.items() if v is not None}

    def load(self, name: str):
        """Dataset ``name`` at these sizes (memoized by the registry)."""
        from genlab.data import load_dataset

        return load_dataset(name, **self.params())


N_TRAIN = "use only the first n training examples (default: all)"
N_TEST = "use only the first n test examples (default: all)"
DATA_ROOT = "folder holding the files of mnist/fashion-mnist/cifar10"


class DataSpec(_Loads, Group):
    """The dataset a study trains on, and how much of it."""

    dataset: DatasetName = Field("mnist5k", description="dataset name (see `genlab list`)")
    n_train: int | None = Field(None, gt=0, description=N_TRAIN)
    n_test: int | None = Field(None, gt=0, description=N_TEST)
    data_root: str | None = Field(None, description=DATA_ROOT)

    def load(self, name: str | None = None):
        return super().load(self.dataset if name is None else name)


class SubsetSpec(_Loads, Group):
    """How much of each dataset is used, and where its files are (for studies that sweep datasets)."""

    n_train: int | None = Field(None, gt=0, description=N_TRAIN)
    n_test: int | None = Field(None, gt=0, description=N_TEST)
    data_root: str | None = Field(None, description=DATA_ROOT)


class ModelSpec(Group):
    """The network family, its hidden widths, its initializer and dropout."""

    model: ModelName = Field("mlp", description="model family (see `genlab list`)")
    widths: Widths = Field([512, 512], description="hidden layer widths of the MLP / classifier head")
    init: Init = Field("default", description="weight initializer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer")

    def build(self, data, seed: int, **overrides: Any):
        """The network for ``data``'s inputs and classes, initialized from ``seed``; ``overrides``
        replace settings of the group (``dropout=0.0``) or add builder options."""
        from genlab.models import build_model

        options = {"init": self.init, "widths": self.widths, "dropout": self.dropout, **overrides}
        family = options.pop("model", self.model)
        return build_model(family, data.input_shape, data.num_classes, seed=seed, **options)


PRECISION = ("training arithmetic: fp32 (bitwise reproducible), or bf16 / fp16 matrix products with float32 master "
             "weights, optimizer state and evaluation (fp16 with loss scaling); methods that need exactness keep "
             "their own precision")


class SharedOptimSpec(Group):
    """Optimizer settings shared by every model of a sweep whose learning rate and batch size vary."""

    optimizer: Optimizer = Field("sgd", description="optimizer")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    epochs: int = Field(50, gt=0, description="epoch budget per model")
    schedule: Schedule = Field("constant", description="learning-rate schedule")
    step_every: int | None = Field(None, gt=0, validate_default=True,
                                   description="with schedule=step: epochs between decays")
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="with schedule=step: factor applied at each decay")
    precision: Precision = Field("fp32", description=PRECISION)

    @field_validator("step_every")
    @classmethod
    def _step_needs_a_period(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None and info.data.get("schedule") == "step":
            raise ValueError("schedule 'step' needs step_every (epochs between decays)")
        return v

    def train_config(self, loss: str, **overrides: Any):
        """The engine's :class:`~genlab.engine.TrainConfig` for these settings and ``loss``; ``overrides``
        set what the study decides itself (stop rules, evaluation, checkpoints, device, a swept lr)."""
        from genlab.engine import TrainConfig

        settings = {name: getattr(self, name) for name in ("optimizer", "lr", "momentum", "nesterov", "weight_decay",
                                                           "batch_size", "epochs", "schedule", "precision")
                    if hasattr(self, name)}
        epochs = overrides.get("epochs", self.epochs)
        milestones = tuple(range(self.step_every, epochs, self.step_every)) if self.step_every else ()
        return TrainConfig(loss=loss, **{**settings, "milestones": milestones, "gamma": self.step_gamma, **overrides})


class OptimSpec(SharedOptimSpec):
    """How every model of a study is trained: optimizer, learning rate, batch size, epochs, schedule."""

    lr: float = Field(0.01, gt=0.0, description="base learning rate")
    batch_size: int = Field(128, gt=0, description="minibatch size")
