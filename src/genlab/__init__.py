"""genlab: is this deep network overfitted, and why does it generalize anyway?

The Python API applies the probes of the literature to your own ``torch.nn.Module`` and data:
:func:`interpolating_network` (Zhang et al. 2017, Thm. 1), :func:`layer_robustness`
(Zhang, Bengio & Singer 2019), :func:`intrinsic_dimension` (Li et al. 2018),
:func:`generalization_measures` (Jiang et al. 2019), and lottery-ticket pruning with
:class:`Mask` / :func:`magnitude_prune` (Frankle & Carbin 2019); for a network trained anywhere,
:func:`diagnose` (with :class:`Recorder` in the user's own training loop).

Modules moved when the package was laid out by role (the papers' methods in
:mod:`genlab.probes`, run folders in :mod:`genlab.run`); their old paths (``genlab.pruning``,
``genlab.store``, ...) still import, see :mod:`genlab._moved`.
"""
from genlab import _moved

_moved.install()

_API = {
    "interpolating_network": ("genlab.probes.expressivity", "interpolating_network"),
    "intrinsic_dimension": ("genlab.probes.intrinsic_dim", "intrinsic_dimension"),
    "layer_robustness": ("genlab.probes.layer_robustness", "layer_robustness"),
    "IterativePruning": ("genlab.probes.lottery", "IterativePruning"),
    "Mask": ("genlab.probes.lottery", "Mask"),
    "PruningPlan": ("genlab.probes.lottery", "PruningPlan"),
    "magnitude_prune": ("genlab.probes.lottery", "magnitude_prune"),
    "random_prune": ("genlab.probes.lottery", "random_prune"),
    "generalization_measures": ("genlab.probes.measures", "compute_measures"),
    "Recorder": ("genlab.recorder", "Recorder"),
    "diagnose": ("genlab.diagnosis", "diagnose"),
}
"""The public API, imported on first use: ``import genlab.engine`` (and every CLI start) does not
pay for the probes' imports (scipy.stats alone takes about a second)."""


def __getattr__(name: str):
    """The API names of :data:`_API`, and ``genlab.pruning`` and the other old paths, on first use."""
    import importlib

    if name in _API:
        module, attribute = _API[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if f"genlab.{name}" in _moved.MOVED:
        return importlib.import_module(f"genlab.{name}")
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


__all__ = [
    "IterativePruning", "Mask", "PruningPlan", "Recorder", "diagnose", "generalization_measures",
    "interpolating_network",
    "intrinsic_dimension", "layer_robustness", "magnitude_prune", "random_prune",
]
