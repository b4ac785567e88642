"""Resolving a spec from its layers, by flat name: defaults <- preset <- TOML file <- flags.

Every error a user can cause here is one :class:`~genlab.errors.UserError` line naming the flat
setting (the flag without ``--``, the TOML key), the file when there is one, and the value.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from genlab.errors import UserError
from genlab.spec.base import StudySpec, flat_fields, flat_name_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def format_validation_error(spec_cls: type[StudySpec], exc: ValidationError, source: str = "") -> str:
    """One line naming the setting (by flat name), the problem and the value given."""
    err = exc.errors()[0]
    field = flat_name_of(spec_cls, err["loc"])
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
    """The key/value pairs of a TOML file, or one line saying why it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not a TOML text file: byte 0x{exc.object[exc.start]:02x} at "
                        f"position {exc.start} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None


def canonical(spec_cls: type[StudySpec], values: dict[str, Any], source: str = "") -> dict[str, Any]:
    """``values`` with aliases replaced by flat names; an unknown key is one line with a suggestion."""
    known = flat_fields(spec_cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = spec_cls.aliases.get(key, key) if isinstance(key, str) else key
        if name not in known:
            where = f" in {source}" if source else ""
            raise UserError(f"unknown field {key!r}{where}{_did_you_mean(str(key), [*known, *spec_cls.aliases])}")
        out[name] = value
    return out


def validate_flat(spec_cls: type[StudySpec], values: dict[str, Any], source: str = "") -> StudySpec:
    """A validated spec from flat values (aliases allowed); settings not given keep the class defaults."""
    nested: dict[str, Any] = {}
    for name, value in canonical(spec_cls, values, source).items():
        *groups, leaf = flat_fields(spec_cls)[name].path
        owner = nested
        for group in groups:
            owner = owner.setdefault(group, {})
        owner[leaf] = value
    try:
        return spec_cls.model_validate(nested)
    except ValidationError as exc:
        raise UserError(format_validation_error(spec_cls, exc, source)) from None


def resolve_spec(spec_cls: type[StudySpec], preset: str | None = None, config: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> StudySpec:
    """Build a validated spec: defaults <- preset <- TOML file <- overrides (flags), all by flat name."""
    file_values: dict[str, Any] = {}
    if config is not None:
        file_values = canonical(spec_cls, load_toml(Path(config)), str(config))
    given = canonical(spec_cls, {k: v for k, v in (overrides or {}).items() if v is not None})
    chosen = given.get("preset") or file_values.get("preset") or preset or "quick"
    if not isinstance(chosen, str) or chosen not in spec_cls.presets:
        raise UserError(f"invalid value for 'preset': unknown preset {chosen!r}; "
                        f"choose one of: {', '.join(spec_cls.presets)}")
    values = {**canonical(spec_cls, spec_cls.presets[chosen]), "preset": chosen, **file_values, **given}
    return validate_flat(spec_cls, values, str(config) if config else "")
