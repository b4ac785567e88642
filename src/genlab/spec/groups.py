"""The groups of settings that studies share: data, model, optimizer.

Each group maps itself onto the library, so a study never copies settings field by field:
``DataSpec.load()`` gives the :class:`~genlab.data.Dataset`, ``ModelSpec.build(data, seed)`` the
initialized network, ``OptimSpec.train_config(loss=...)`` the engine's
:class:`~genlab.engine.TrainConfig`. A study that wants other defaults gives the group an
instance as its default (``optim: OptimSpec = OptimSpec(optimizer="adam", lr=1.2e-3)``).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from genlab.spec.base import Group
from genlab.spec.fields import DatasetName, Init, ModelName, Optimizer, Precision, Schedule, Strategy, Widths


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
    """The network family, its hidden widths, its initializer and dropout, and the zoo's options.

    The zoo's options (``width``, ``depth``, ``batchnorm``, ``preact``, ``shortcut``) reach the
    builder only when set (``None``) or changed from the default (``batchnorm``, ``preact``), so a
    family that does not take one is built as before; see ``genlab list`` for which family takes which.
    """

    model: ModelName = Field("mlp", description="model family (see `genlab list`)")
    widths: Widths = Field([512, 512], description="hidden layer widths of the MLP / classifier head")
    init: Init = Field("default", description="weight initializer ('paper': the scheme of the model's paper)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer")
    width: int | None = Field(None, gt=0, le=4096, description="width multiplier of a zoo network: resnet18's k "
                              "(widths k,2k,4k,8k; 64 = standard), vgg/resnet20/resnet56/nin channels (default: the "
                              "paper's)")
    depth: int | None = Field(None, gt=0, le=64, description="blocks of a zoo network that takes a depth (nin)")
    batchnorm: bool = Field(True, description="BatchNorm in the zoo networks that have it (off: the paper's "
                            "'without BN' variant)")
    preact: bool = Field(False, description="resnet18: pre-activation blocks (the variant Nakkiran et al. trained)")
    shortcut: Literal["A", "B"] | None = Field(None, description="resnet20/resnet56 shortcut: A zero-padding (He et "
                                               "al.), B 1x1 conv + BN (open_lth) (default: A)")

    def zoo_options(self) -> dict[str, Any]:
        """The zoo options that differ from every builder's defaults, as builder keyword arguments."""
        options: dict[str, Any] = {name: getattr(self, name) for name in ("width", "depth", "shortcut")
                                   if getattr(self, name) is not None}
        if not self.batchnorm:
            options["batchnorm"] = False
        if self.preact:
            options["preact"] = True
        return options

    def build(self, data, seed: int, **overrides: Any):
        """The network for ``data``'s inputs and classes, initialized from ``seed``; ``overrides``
        replace settings of the group (``dropout=0.0``) or add builder options."""
        from genlab.models import build_model

        options = {"init": self.init, "widths": self.widths, "dropout": self.dropout, **self.zoo_options(),
                   **overrides}
        family = options.pop("model", self.model)
        return build_model(family, data.input_shape, data.num_classes, seed=seed, **options)

    def init_scheme(self) -> str:
        """The initializer scheme ``init`` means for this model (``paper`` resolved through the zoo)."""
        from genlab.models.zoo import resolve_init

        return resolve_init(self.model, self.init)


class AugmentSpec(Group):
    """Training-batch augmentation of the CIFAR papers: random crops of a padded image, horizontal flips.

    ``crop`` pads each side by ``crop_padding`` zero pixels and cuts a window of the original
    size at a random position (a random translation, :class:`~genlab.data.augment.RandomShift`);
    ``crop-flip`` also mirrors each image left-right with probability 1/2 (He et al. 2016's CIFAR
    augmentation, used by Nakkiran et al. 2019 and Frankle & Carbin 2019's VGG/ResNet runs).
    """

    augment: Literal["none", "crop", "crop-flip"] = Field("none", description="training augmentation: none, crop "
                                                          "(random crop of a zero-padded image) or crop-flip (and a "
                                                          "random horizontal flip)")
    crop_padding: int = Field(4, ge=1, le=16, description="augmentation: pixels of zero padding a crop may shift by")

    def build(self):
        """The engine's per-model augmentation (``ModelJob.augment``), or None for ``none``."""
        from genlab.data.augment import RandomShift

        if self.augment == "none":
            return None
        return RandomShift(self.crop_padding, pad="zeros", hflip=self.augment == "crop-flip")


PRECISION = ("training arithmetic: fp32 (bitwise reproducible), or bf16 / fp16 matrix products with float32 master "
             "weights, optimizer state and evaluation (fp16 with loss scaling); methods that need exactness keep "
             "their own precision")


STRATEGY = ("how the engine executes the models trained together: auto (the fastest, timed on this machine and "
            "cached), or one of packed, packed-threads, packed-procs, stacked, lockstep, threads (-cl: channels-last "
            "convolutions)")


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
    strategy: Strategy = Field("auto", description=STRATEGY)

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
                                                           "batch_size", "epochs", "schedule", "precision",
                                                           "strategy")
                    if hasattr(self, name)}
        epochs = overrides.get("epochs", self.epochs)
        milestones = tuple(range(self.step_every, epochs, self.step_every)) if self.step_every else ()
        return TrainConfig(loss=loss, **{**settings, "milestones": milestones, "gamma": self.step_gamma, **overrides})


class OptimSpec(SharedOptimSpec):
    """How every model of a study is trained: optimizer, learning rate, batch size, epochs, schedule."""

    lr: float = Field(0.01, gt=0.0, description="base learning rate")
    batch_size: int = Field(128, gt=0, description="minibatch size")
