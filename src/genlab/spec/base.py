"""Composed specs: typed groups of settings, flattened to one flag / TOML key per setting.

A study's spec is a pydantic model whose fields are the settings it has of its own (what it
sweeps, its thresholds) and *groups* - :class:`Group` subclasses such as
:class:`~genlab.spec.groups.DataSpec`, :class:`~genlab.spec.groups.ModelSpec` and
:class:`~genlab.spec.groups.OptimSpec` - that carry the settings many studies share, with their
checks and their mapping to the library (``DataSpec.load()``, ``OptimSpec.train_config()``).
A study composes only the groups it uses, so ``genlab run STUDY --help`` lists only what the
study reads (open_lth's hyperparameter groups, facebookresearch/open_lth).

Every leaf setting has a *flat name*: its field name, prefixed by the names of the groups it sits
in that are marked ``Annotated[Group, Prefix("nn")]`` (double descent's ``nn.optim.lr`` is
``nn_lr``); unmarked groups add nothing (``optim.lr`` is ``lr``). Flat names are the flags
(``--nn-lr``), the TOML keys and the keys of the spec stored in a run folder; they are checked to
be unique when a spec class is first flattened. ``aliases`` keeps older flat names working.

A group given as a partial dict (``LotterySpec(optim={"lr": 0.1})``, or from flags) starts from
the study's own default for that group, not from the group class's defaults.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from genlab.errors import UserError

Preset = Literal["quick", "paper", "smoke", "cifar"]


@dataclass(frozen=True)
class Prefix:
    """Marks a group field whose settings' flat names start with ``name_`` (``Annotated[G, Prefix("nn")]``)."""

    name: str


class SpecModel(BaseModel):
    """Base of groups and study specs: unknown keys refused, immutable, no NaN or infinity in floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _groups_start_from_their_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if _is_group(field.annotation) and isinstance(data.get(name), dict) and not field.is_required():
                merged[name] = _deep_merge(field.get_default(call_default_factory=True).model_dump(), data[name])
        return merged


class Group(SpecModel):
    """A typed group of settings, composed into study specs (see the module docstring)."""


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Group)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True)
class FlatField:
    """One leaf setting of a spec: its flat name, where it sits, and its pydantic field."""

    name: str
    path: tuple[str, ...]
    info: FieldInfo

    @property
    def annotation(self) -> Any:
        return self.info.annotation

    @property
    def is_list(self) -> bool:
        return typing.get_origin(_optional_inner(self.annotation)) in (list, tuple)

    def default_in(self, spec_cls: type[SpecModel]) -> Any:
        """The value the spec class gives this setting before any preset."""
        value: Any = spec_cls.model_fields[self.path[0]].get_default(call_default_factory=True)
        for part in self.path[1:]:
            value = getattr(value, part)
        return value


def _optional_inner(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


@lru_cache(maxsize=None)
def flat_fields(spec_cls: type[SpecModel]) -> dict[str, FlatField]:
    """Every leaf setting of ``spec_cls`` by flat name, in declaration order (groups expanded in place)."""
    out: dict[str, FlatField] = {}

    def walk(cls: type[SpecModel], path: tuple[str, ...], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            if _is_group(field.annotation):
                marks = [m for m in field.metadata if isinstance(m, Prefix)]
                walk(field.annotation, (*path, name), prefix + (f"{marks[0].name}_" if marks else ""))
                continue
            flat = prefix + name
            if flat in out:
                raise TypeError(f"{spec_cls.__name__}: two settings have the flat name {flat!r} "
                                f"({'.'.join(out[flat].path)} and {'.'.join((*path, name))}); mark a group with Prefix")
            out[flat] = FlatField(flat, (*path, name), field)

    walk(spec_cls, (), "")
    return out


def flat_name_of(spec_cls: type[SpecModel], location: tuple) -> str:
    """The flat name of a validation error's location (``("optim", "lr")`` -> ``"lr"``), keeping list indices."""
    by_path = {f.path: f.name for f in flat_fields(spec_cls).values()}
    parts = tuple(str(p) for p in location)
    for cut in range(len(parts), 0, -1):
        if parts[:cut] in by_path:
            return ".".join([by_path[parts[:cut]], *parts[cut:]])
    return ".".join(parts) or "spec"


class StudySpec(SpecModel):
    """Fields every study has; a study's spec adds its groups and its own settings."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}
    aliases: ClassVar[dict[str, str]] = {}
    """Older flat names still accepted (flags, TOML keys, presets): old name -> flat name."""
    help_texts: ClassVar[dict[str, str]] = {}
    """What a shared setting means in this study, where it says more than the group's description."""

    preset: Preset = Field("quick", description="preset the other defaults come from: quick (minutes), paper (the "
                           "papers' settings), smoke (tiny, pipeline test only) or cifar (the papers' CIFAR-10 "
                           "experiment, for a GPU)")
    seeds: list[int] = Field([0], min_length=1, description="seeds; each fixes every random choice of one replicate")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        return check_device(v)

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be non-negative")
        return v

    @classmethod
    def flat_fields(cls) -> dict[str, FlatField]:
        return flat_fields(cls)

    def flat(self) -> dict[str, Any]:
        """The spec as ``{flat name: value}`` (JSON types): what a run folder stores and TOML holds."""
        dump = self.model_dump(mode="json")
        out = {}
        for name, field in self.flat_fields().items():
            value: Any = dump
            for part in field.path:
                value = value[part]
            out[name] = value
        return out

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "StudySpec":
        """A validated spec from flat names (aliases allowed) over the class defaults (no preset)."""
        from genlab.spec.resolve import validate_flat

        return validate_flat(cls, values)

    def replace(self, **values: Any) -> "StudySpec":
        """A copy with some settings changed, by flat name, validated again."""
        return type(self).from_flat({**self.flat(), **values})

    def on_dataset(self, name: str) -> "StudySpec":
        """This spec with every dataset it trains on set to ``name`` (``genlab reproduce --dataset``).

        The default sets each ``DataSpec.dataset`` setting and each list of dataset names; a study
        overrides it where a dataset constrains other settings (which networks can take its inputs).
        """
        from genlab.spec.groups import DataSpec

        changes: dict[str, Any] = {}
        for field in self.flat_fields().values():
            owner: Any = self
            for part in field.path[:-1]:
                owner = getattr(owner, part)
            if isinstance(owner, DataSpec) and field.path[-1] == "dataset":
                changes[field.name] = name
            elif field.path[-1] == "datasets":
                changes[field.name] = [name]
        if not changes:
            raise UserError(f"{type(self).__name__} trains on no dataset, so --dataset {name} cannot apply")
        return self.replace(**changes)


def check_device(value: str) -> str:
    """``value`` when it names a usable torch device (cpu, an existing CUDA device, mps); else a ValueError."""
    import torch

    try:
        device = torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{value!r} is not a torch device ({' '.join(str(exc).split())})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"this machine has {count} CUDA device{'s' if count != 1 else ''} "
                             f"(cuda:0..cuda:{count - 1}), so cuda:{device.index} does not exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("MPS is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"device type {device.type!r} is not supported; use cpu, cuda[:N] or mps")
    return value
