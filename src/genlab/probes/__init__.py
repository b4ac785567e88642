"""The papers' methods, each usable on your own ``torch.nn.Module`` and data.

One module per method, named like the study that uses it (``probes/NAME.py`` pairs with
``studies/NAME.py``): :mod:`~genlab.probes.expressivity` (the 2n+d interpolating network; its
linear algebra in :mod:`~genlab.probes.ramp_system`), :mod:`~genlab.probes.random_features`
(random Fourier features; the solver in :mod:`~genlab.probes.min_norm`),
:mod:`~genlab.probes.intrinsic_dim` (training in random subspaces: :mod:`~genlab.probes.subspace`,
:mod:`~genlab.probes.projections`, :mod:`~genlab.probes.hadamard`),
:mod:`~genlab.probes.layer_robustness` (re-initializing one layer at a time),
:mod:`~genlab.probes.lottery` (iterative magnitude pruning), :mod:`~genlab.probes.measures`
(generalization measures; :mod:`~genlab.probes.sharpness`, :mod:`~genlab.probes.ranking`) and
:mod:`~genlab.probes.description_length` (prequential code length). Argument checks shared by
the numpy-based ones are in :mod:`~genlab.probes.arguments`. The experiments are in
:mod:`genlab.studies`.
"""
