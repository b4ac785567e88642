"""genlab: is this deep network overfitted, and why does it generalize anyway?

The Python API applies the probes of the literature to your own ``torch.nn.Module`` and data:
:func:`interpolating_network` (Zhang et al. 2017, Thm. 1), :func:`layer_robustness`
(Zhang, Bengio & Singer 2019), :func:`intrinsic_dimension` (Li et al. 2018),
:func:`generalization_measures` (Jiang et al. 2019), and lottery-ticket pruning with
:class:`Mask` / :func:`magnitude_prune` (Frankle & Carbin 2019).

Modules moved when the package was laid out by role (the papers' methods in
:mod:`genlab.probes`, run folders in :mod:`genlab.run`); their old paths (``genlab.pruning``,
``genlab.store``, ...) still import, see :mod:`genlab._moved`.
"""
from genlab import _moved
from genlab.probes.expressivity import interpolating_network
from genlab.probes.intrinsic_dim import intrinsic_dimension
from genlab.probes.layer_robustness import layer_robustness
from genlab.probes.lottery import IterativePruning, Mask, PruningPlan, magnitude_prune, random_prune
from genlab.probes.measures import compute_measures as generalization_measures

_moved.install()


def __getattr__(name: str):
    """``genlab.pruning`` and the other old paths as attributes, imported on first use."""
    if f"genlab.{name}" in _moved.MOVED:
        import importlib

        return importlib.import_module(f"genlab.{name}")
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")

__all__ = [
    "IterativePruning", "Mask", "PruningPlan", "generalization_measures", "interpolating_network",
    "intrinsic_dimension", "layer_robustness", "magnitude_prune", "random_prune",
]
