"""Study specifications: pydantic models shared by all studies, with presets.

A spec is resolved in layers, each overriding the one before: the field defaults, the chosen
preset (``quick`` or ``paper``), a TOML file (``--config``), then command-line flags. Every
field has a description (it is the ``--help`` text) and bounds that are checked at the boundary,
so a bad value is reported as one line naming the field.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genlab.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Preset = Literal["quick", "paper", "smoke"]


class StudySpec(BaseModel):
    """Fields every study has."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    presets: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}

    preset: Preset = Field("quick", description="preset the other defaults come from: quick (minutes), paper (the papers' settings) or smoke (tiny, pipeline test only)")
    seeds: list[int] = Field([0], min_length=1, description="seeds; each fixes every random choice of one replicate")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        import torch

        try:
            dev = torch.device(v)
        except RuntimeError as exc:
            raise ValueError(f"not a torch device ({exc})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be non-negative")
        return v

    def digest(self) -> str:
        """A short hash of the spec's settings, used to recognise a run folder's spec."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


class TrainSpec(StudySpec):
    """Fields of studies that train networks on a dataset through the engine."""

    dataset: str = Field("mnist5k", description="dataset name (see `genlab list`)")
    n_train: int | None = Field(None, gt=0, description="use only the first n training examples (default: all)")
    n_test: int | None = Field(None, gt=0, description="use only the first n test examples (default: all)")
    data_root: str | None = Field(None, description="folder holding the files of mnist/fashion-mnist/cifar10")
    model: str = Field("mlp", description="model family (see `genlab list`)")
    widths: list[int] = Field([512, 512], min_length=1, description="hidden layer widths of the MLP / classifier head")
    init: Literal["default", "glorot", "kaiming"] = Field("default", description="weight initializer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0.0, description="base learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay")
    batch_size: int = Field(128, gt=0, description="minibatch size")
    epochs: int = Field(50, gt=0, description="epoch budget per model")
    schedule: Literal["constant", "cosine", "step", "linear"] = Field("constant", description="learning-rate schedule")
    loss: Literal["ce", "mse"] = Field("ce", description="cross-entropy, or squared error on one-hot targets")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be positive, got {v}")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        from genlab.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of: {', '.join(DATASETS)}")
        return v

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        from genlab.models import MODELS

        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of: {', '.join(MODELS)}")
        return v

    def data_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"n_train": self.n_train, "n_test": self.n_test}
        if self.data_root:
            params["root"] = self.data_root
        return {k: v for k, v in params.items() if v is not None}


def distinct(values: list, what: str) -> list:
    """``values`` unchanged, or a ValueError when one repeats (for list fields of a spec)."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct, got {values}")
    return values


def registered_names(values: list[str], registry, what: str) -> list[str]:
    """``values`` unchanged when each names an entry of ``registry`` once; a ValueError otherwise."""
    for name in values:
        if name not in registry:
            raise ValueError(f"unknown {what} {name!r}; choose from: {', '.join(registry)}")
    return distinct(values, f"{what}s")


def format_validation_error(exc: ValidationError, source: str = "") -> str:
    """One line naming the field, the problem and the value given."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "spec"
    where = f" in {source}" if source else ""
    if err["type"] == "extra_forbidden":
        return f"unknown field {field!r}{where}"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"invalid value for {field!r}{where}: {msg}{shown}"


def _did_you_mean(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None


def resolve_spec(spec_cls: type[StudySpec], preset: str | None = None, config: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> StudySpec:
    """Build a validated spec: defaults <- preset <- TOML file <- overrides (flags)."""
    values: dict[str, Any] = {}
    file_values: dict[str, Any] = {}
    if config is not None:
        file_values = load_toml(Path(config))
        for key in file_values:
            if key not in spec_cls.model_fields:
                raise UserError(f"unknown field {key!r} in {config}{_did_you_mean(key, spec_cls.model_fields)}")
    chosen = (overrides or {}).get("preset") or file_values.get("preset") or preset or "quick"
    if not isinstance(chosen, str) or chosen not in spec_cls.presets:
        raise UserError(f"invalid value for 'preset': unknown preset {chosen!r}; choose one of: {', '.join(spec_cls.presets)}")
    values.update(spec_cls.presets[chosen])
    values["preset"] = chosen
    values.update(file_values)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key in values:
        if key not in spec_cls.model_fields:
            raise UserError(f"unknown field {key!r}{_did_you_mean(key, spec_cls.model_fields)}")
    try:
        return spec_cls.model_validate(values)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(config) if config else "")) from None
