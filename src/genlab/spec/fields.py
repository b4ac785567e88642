"""Field types shared by the spec groups and the studies' own fields.

Each type carries its own check (``Annotated`` validators), so a field declared with it is checked
the same way in every group and study that uses it, and the check travels with the type. The
messages name the problem and the value; the caller adds the field's flag name.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "cosine", "step", "linear"]
Loss = Literal["ce", "mse"]
Precision = Literal["fp32", "bf16", "fp16"]
Strategy = Literal["auto", "packed", "packed-threads", "packed-procs", "stacked", "lockstep", "lockstep-cl", "threads",
                   "threads-cl"]


def distinct(values: list, what: str) -> list:
    """``values`` unchanged, or a ValueError when one repeats (for list fields of a spec)."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct, got {values}")
    return values


def registered_names(values: list[str], registry, what: str) -> list[str]:
    """``values`` unchanged when each names an entry of ``registry`` once; a ValueError otherwise."""
    for name in values:
        _registered(name, registry, what)
    return distinct(values, f"{what}s")


def _registered(name: str, registry, what: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return name


def _known_dataset(name: str) -> str:
    from genlab.data import DATASETS

    return _registered(name, DATASETS, "dataset")


def _known_model(name: str) -> str:
    from genlab.models import MODELS

    return _registered(name, MODELS, "model")


def init_names() -> list[str]:
    """The initializer schemes, and ``paper`` (each model's paper's scheme)."""
    from genlab.models import INITIALIZERS
    from genlab.models.zoo import PAPER_INIT

    return [*INITIALIZERS, PAPER_INIT]


def _known_init(name: str) -> str:
    return _registered(name, init_names(), "init")


def _known_datasets(names: list[str]) -> list[str]:
    from genlab.data import DATASETS

    return registered_names(names, DATASETS, "dataset")


def _known_models(names: list[str]) -> list[str]:
    from genlab.models import MODELS

    return registered_names(names, MODELS, "model")


def _positive_widths(widths: list[int]) -> list[int]:
    if any(w <= 0 for w in widths):
        raise ValueError(f"every width must be positive, got {widths}")
    return widths


def _positive_distinct(values: list[int]) -> list[int]:
    if any(v <= 0 for v in values):
        raise ValueError(f"every value must be positive, got {values}")
    return distinct(values, "values")


def _probabilities(values: list[float]) -> list[float]:
    if any(not 0.0 <= p <= 1.0 for p in values):
        raise ValueError(f"every value must be a probability in [0, 1], got {values}")
    return values


DatasetName = Annotated[str, AfterValidator(_known_dataset)]
DatasetNames = Annotated[list[str], Field(min_length=1), AfterValidator(_known_datasets)]
ModelName = Annotated[str, AfterValidator(_known_model)]
ModelNames = Annotated[list[str], Field(min_length=1), AfterValidator(_known_models)]
Init = Annotated[str, AfterValidator(_known_init)]
Widths = Annotated[list[int], Field(min_length=1), AfterValidator(_positive_widths)]
"""Hidden-layer widths of one network."""
PositiveInts = Annotated[list[int], Field(min_length=1), AfterValidator(_positive_distinct)]
"""A sweep over distinct positive integers (widths, depths, batch sizes, dimensions)."""
Probabilities = Annotated[list[float], Field(min_length=1), AfterValidator(_probabilities)]


def choices(field) -> list[str]:
    """The values a field (a pydantic ``FieldInfo``) may take when they form a short fixed list (for ``--help``)."""
    import typing

    if any(getattr(check, "func", None) is _known_init for check in field.metadata):
        return init_names()
    annotation = field.annotation
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, tuple) and args and typing.get_origin(args[0]) is Literal:
        return [str(a) for a in typing.get_args(args[0])]
    return []


def parameter_count(model: str, dataset: str, **options) -> int | None:
    """Parameters of registered ``model`` built for ``dataset``'s inputs, or None when it cannot take
    them (LeNet needs images, the 1-D CNN signals); known without loading the data or allocating the
    network (:func:`genlab.models.param_count` on the registry's input shape)."""
    from genlab.data import DATASETS
    from genlab.models import param_count

    entry = DATASETS[dataset]
    return param_count(model, tuple(entry.input_shape), entry.num_classes, **options)


def model_takes(model: str, dataset: str, **options) -> bool:
    """Whether registered ``model`` can be built for ``dataset``'s inputs (see :func:`parameter_count`)."""
    return parameter_count(model, dataset, **options) is not None
