"""Old module paths that still import: ``import genlab.pruning`` gives ``genlab.probes.lottery``.

The modules moved when the package was laid out by role (methods in :mod:`genlab.probes`, run
folders and executors in :mod:`genlab.run`). An import of an old path is answered by a finder
on ``sys.meta_path`` with the moved module itself - the same object, not a copy - so names,
``isinstance`` checks, monkeypatching and pickles made under the old path keep working. Each
old path warns once with a :class:`DeprecationWarning` naming the new one.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED: dict[str, str] = {
    "genlab.expressivity": "genlab.probes.expressivity",
    "genlab.random_features": "genlab.probes.random_features",
    "genlab.subspace": "genlab.probes.subspace",
    "genlab.intrinsic": "genlab.probes.intrinsic_dim",
    "genlab.robustness": "genlab.probes.layer_robustness",
    "genlab.pruning": "genlab.probes.lottery",
    "genlab.measures": "genlab.probes.measures",
    "genlab.store": "genlab.run.store",
    "genlab.runner": "genlab.run.runner",
    "genlab.executors": "genlab.run.executors",
    "genlab.augment": "genlab.data.augment",
    "genlab.studies.measures_study": "genlab.studies.measures",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path by importing the new one and putting it in ``sys.modules`` under the old name."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None  # a placeholder module; exec_module replaces it

    def exec_module(self, module) -> None:
        warnings.warn(f"{module.__name__} moved to {self.target}; import it from there",
                      DeprecationWarning, stacklevel=2)
        # the import system returns whatever sys.modules holds under the name once this returns
        sys.modules[module.__name__] = importlib.import_module(self.target)


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old paths of :data:`MOVED` (and nothing else)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))
        return None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
