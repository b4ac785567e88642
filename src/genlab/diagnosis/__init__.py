"""Diagnose a network trained anywhere: :func:`diagnose` writes one HTML page answering "is this
model overfitted?" (see :mod:`genlab.diagnosis.core`); :class:`genlab.Recorder` records the
training it can use."""
from genlab.diagnosis.core import BUDGETS, Diagnosis, diagnose

__all__ = ["BUDGETS", "Diagnosis", "diagnose"]
