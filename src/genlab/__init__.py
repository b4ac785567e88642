"""genlab: is this deep network overfitted, and why does it generalize anyway?"""
from genlab.expressivity import interpolating_network  # noqa: F401
from genlab.pruning import IterativePruning, Mask, PruningPlan, magnitude_prune, random_prune  # noqa: E402,F401
from genlab.robustness import layer_robustness  # noqa: E402,F401
from genlab.intrinsic import intrinsic_dimension  # noqa: E402,F401
from genlab.measures import compute_measures as generalization_measures  # noqa: E402,F401
