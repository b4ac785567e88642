"""The training precision of a study's spec: its settings, setting them all at once, the notes.

A study's networks train at the ``precision`` of its optimizer groups
(:class:`~genlab.spec.groups.SharedOptimSpec`; double descent has one per network sweep,
``nn_precision`` and ``noise_precision``), which ``train_config()`` hands to the engine. Methods that
need exactness keep their own precision whatever it says; a study names them in
:attr:`~genlab.studies.base.Study.own_precision`.
"""
from __future__ import annotations

from typing import Any

from genlab.spec import StudySpec


def precision_settings(spec_cls: type[StudySpec]) -> list[str]:
    """Flat names of the training-precision settings of ``spec_cls`` (the optimizer groups' ``precision``)."""
    from genlab.spec.groups import SharedOptimSpec

    names = []
    for field in spec_cls.flat_fields().values():
        owner: Any = spec_cls
        for part in field.path[:-1]:
            owner = owner.model_fields[part].annotation
        if field.path[-1] == "precision" and isinstance(owner, type) and issubclass(owner, SharedOptimSpec):
            names.append(field.name)
    return names


def precisions_of(spec: StudySpec) -> dict[str, str]:
    """``{flat name: precision}`` of every training-precision setting of ``spec`` (empty: nothing trains)."""
    flat = spec.flat()
    return {name: flat[name] for name in precision_settings(type(spec))}


def at_precision(spec: StudySpec, precision: str) -> StudySpec:
    """``spec`` with every network it trains at ``precision`` (``--precision`` of ``genlab reproduce``);
    a spec that trains no network is returned unchanged."""
    names = precision_settings(type(spec))
    return spec.replace(**{name: precision for name in names}) if names else spec


def slow_precision_notes(specs: list[StudySpec]) -> list[str]:
    """The one-line notes (each once) for the low precisions of ``specs`` that have no fast path on
    their devices (:func:`genlab.engine.precision.slow_precision_note`)."""
    from genlab.engine.precision import slow_precision_note

    notes: list[str] = []
    for spec in specs:
        for precision in precisions_of(spec).values():
            note = slow_precision_note(precision, spec.device)
            if note and note not in notes:
                notes.append(note)
    return notes
