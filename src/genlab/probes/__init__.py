"""The papers' methods, each usable on your own ``torch.nn.Module`` and data.

One module per method: :mod:`~genlab.probes.expressivity` (the 2n+d interpolating network),
:mod:`~genlab.probes.random_features` (random Fourier features, min-norm least squares),
:mod:`~genlab.probes.subspace` and :mod:`~genlab.probes.intrinsic_dim` (training in random
subspaces), :mod:`~genlab.probes.layer_robustness` (re-initializing one layer at a time),
:mod:`~genlab.probes.lottery` (iterative magnitude pruning) and :mod:`~genlab.probes.measures`
(generalization measures). The experiments that use them are in :mod:`genlab.studies`.
"""
