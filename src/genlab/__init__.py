"""genlab: is this deep network overfitted, and why does it generalize anyway?

The Python API applies the probes of the literature to your own ``torch.nn.Module`` and data:
:func:`interpolating_network` (Zhang et al. 2017, Thm. 1), :func:`layer_robustness`
(Zhang, Bengio & Singer 2019), :func:`intrinsic_dimension` (Li et al. 2018),
:func:`generalization_measures` (Jiang et al. 2019), and lottery-ticket pruning with
:class:`Mask` / :func:`magnitude_prune` (Frankle & Carbin 2019).
"""
from genlab.expressivity import interpolating_network
from genlab.intrinsic import intrinsic_dimension
from genlab.measures import compute_measures as generalization_measures
from genlab.pruning import IterativePruning, Mask, PruningPlan, magnitude_prune, random_prune
from genlab.robustness import layer_robustness

__all__ = [
    "IterativePruning", "Mask", "PruningPlan", "generalization_measures", "interpolating_network",
    "intrinsic_dimension", "layer_robustness", "magnitude_prune", "random_prune",
]
