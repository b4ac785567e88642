"""Study specifications: composed groups of typed settings, with presets, resolved in layers.

A spec is resolved in layers, each overriding the one before: the field defaults, the chosen
preset (``quick``, ``paper`` or ``smoke``), a TOML file (``--config``), then command-line flags.
Every setting has a description (its ``--help`` text) and bounds checked at the boundary, so a bad
value is reported as one line naming the setting. See :mod:`genlab.spec.base` for how groups
compose and how flat names (flags, TOML keys) are formed.
"""
from genlab.spec.base import FlatField, Group, Prefix, StudySpec, check_device, flat_fields
from genlab.spec.fields import distinct, registered_names
from genlab.spec.groups import AugmentSpec, DataSpec, ModelSpec, OptimSpec, SharedOptimSpec, SubsetSpec
from genlab.spec.resolve import format_validation_error, load_toml, resolve_spec, validate_flat

__all__ = [
    "AugmentSpec", "DataSpec", "FlatField", "Group", "ModelSpec", "OptimSpec", "Prefix", "SharedOptimSpec", "StudySpec",
    "SubsetSpec", "check_device", "distinct", "flat_fields", "format_validation_error", "load_toml",
    "registered_names", "resolve_spec", "validate_flat",
]
