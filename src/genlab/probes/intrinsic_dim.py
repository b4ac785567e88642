"""Intrinsic dimension of an objective landscape (Li, Farkhoor, Liu & Yosinski, ICLR 2018).

A network with D parameters is trained only inside a random d-dimensional affine subspace,
theta = theta_0 + P theta_d (theta_0 its initialization, P a frozen random D x d projection,
theta_d in R^d starting at zero; :class:`genlab.probes.subspace.SubspaceModel`). The intrinsic
dimension d_int90 is the smallest d whose subspace-trained network reaches ``threshold`` (0.9)
times the test accuracy of the same network trained directly with the same settings.

Both kinds of training go through the batched engine (:func:`genlab.engine.train_models`): the
direct baseline as usual, the subspace runs as modules flagged ``_genlab_no_vmap`` (the
projections are custom autograd functions, so the engine loops over those models instead of
vmapping them); the engine's optimizer, schedules, evaluation (eval mode: dropout off), stop
rules and snapshots train theta_d. Only the learning rate differs: one coordinate of theta_d
moves all D parameters, so subspace training needs a far larger step (``subspace_lr``). Its
default, :func:`matched_subspace_lr`, is lr x sqrt(D / d): P has (nearly orthogonal) unit-norm
columns, so an update of size eta per coordinate of theta_d (Adam's, roughly) moves theta by
eta sqrt(d) in norm, i.e. eta sqrt(d / D) per parameter, against lr per parameter for direct Adam;
the rule equalizes the two. Measured with Adam (direct lr 0.01, 20 epochs): a fixed subspace
lr of 0.1 works near d ~ 500 on mnist5k but collapses to chance at d >= 5,000 on mnist1d,
where the rule trains to within a few points of the direct baseline.

d is found automatically (:func:`search_dimension`): exponential bracketing from ``d_start``,
then bisection on a log scale, every d trained with every seed; the crossing of the target is
then interpolated in log d between the last point below and the first point above it
(:func:`find_crossing`), on the seed-averaged accuracies (and per seed, for the spread). A grid
of d values can be given instead.

Example::

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(),
                              torch.nn.Linear(200, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10))
    result = genlab.intrinsic_dimension(net, (x_train, y_train), (x_test, y_test), epochs=10,
                                        optimizer="adam", lr=0.01, seeds=[0, 1])
    print(result.d_int90, result.D, result.table())
"""
from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from genlab.data.tensors import as_labelled_tensors
from genlab.engine import InputGroup, ModelJob, ModelOutcome, TrainConfig, train_models
from genlab.errors import UserError
from genlab.probes.subspace import PROJECTION_NAMES, SubspaceModel
from genlab.progress import NullProgress
from genlab.seeding import derive_seed

__all__ = [
    "Crossing",
    "SearchSettings",
    "TrainedRun",
    "IntrinsicDimension",
    "log_interpolate",
    "find_crossing",
    "search_dimension",
    "subspace_model",
    "matched_subspace_lr",
    "parameter_count",
    "train_direct",
    "train_in_subspaces",
    "measure_intrinsic_dimension",
    "intrinsic_dimension",
]

ModelFactory = Callable[[int], nn.Module]


# --------------------------------------------------------------------------------------
# The search: pure functions of (d, accuracy) pairs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """Where an accuracy-vs-d curve crosses ``target``.

    ``status`` is ``interpolated`` (``d_int`` interpolated in log d between ``d_below`` and
    ``d_above``), ``upper_bound`` (already the smallest d tried reaches the target: ``d_int`` is
    that d, an upper bound) or ``not_reached`` (no d tried reaches it: ``d_int`` is None and
    ``d_below`` the largest d tried, a lower bound).
    """

    d_int: float | None
    d_below: int | None
    d_above: int | None
    status: str


def log_interpolate(d_below: float, acc_below: float, d_above: float, acc_above: float, target: float) -> float:
    """The d where the straight line through (log d_below, acc_below), (log d_above, acc_above) hits ``target``.

    log d* = log d_below + (target - acc_below) / (acc_above - acc_below) * (log d_above - log d_below).
    Needs d_below < d_above and acc_below < target <= acc_above (so d_below < d* <= d_above).
    """
    if not 0 < d_below < d_above:
        raise ValueError(f"need 0 < d_below < d_above, got {d_below}, {d_above}")
    if not acc_below < target <= acc_above:
        raise ValueError(f"need acc_below < target <= acc_above, got {acc_below}, {target}, {acc_above}")
    fraction = (target - acc_below) / (acc_above - acc_below)
    return math.exp(math.log(d_below) + fraction * (math.log(d_above) - math.log(d_below)))


def find_crossing(dims: Sequence[int], accuracies: Sequence[float], target: float) -> Crossing:
    """The crossing of ``target`` by accuracy(d), from points evaluated in any order.

    d_above is the smallest d whose accuracy reaches the target (the definition of d_int90:
    the *smallest* d that works); d_below the largest d below it; the crossing is interpolated
    in log d between them (:func:`log_interpolate`). NaN accuracies (diverged runs) count as 0.
    """
    if len(dims) != len(accuracies) or not dims:
        raise ValueError("need as many accuracies as dims, and at least one point")
    points = sorted((int(d), float(a) if math.isfinite(a) else 0.0) for d, a in zip(dims, accuracies))
    reaching = [d for d, a in points if a >= target]
    if not reaching:
        return Crossing(None, points[-1][0], None, "not_reached")
    d_above = reaching[0]
    below = [(d, a) for d, a in points if d < d_above]
    if not below:
        return Crossing(float(d_above), None, d_above, "upper_bound")
    d_below, acc_below = below[-1]
    acc_above = next(a for d, a in points if d == d_above)
    return Crossing(log_interpolate(d_below, acc_below, d_above, acc_above, target), d_below, d_above, "interpolated")


def search_dimension(evaluate: Callable[[int], float], target: float, d_start: int, d_max: int,
                     growth: float = 2.0, tolerance: float = 1.2, d_min: int = 1) -> list[tuple[int, float]]:
    """Evaluate accuracy(d) at the d needed to bracket the crossing of ``target``; return (d, acc) pairs.

    Exponential bracketing: from ``d_start``, multiply d by ``growth`` until the accuracy reaches
    the target (or d hits ``d_max``), or divide by ``growth`` while it already does (down to
    ``d_min``). Then bisection on a log scale, d = round(sqrt(d_below * d_above)), until
    d_above / d_below <= ``tolerance`` or the two are adjacent integers. Each d is evaluated at
    most once; the pairs are returned in evaluation order (feed them to :func:`find_crossing`).
    """
    if not 1 <= d_min <= d_max:
        raise ValueError(f"need 1 <= d_min <= d_max, got d_min={d_min}, d_max={d_max}")
    if growth <= 1 or tolerance <= 1:
        raise ValueError(f"growth={growth} and tolerance={tolerance} must be > 1")
    evaluated: dict[int, float] = {}

    def reaches(d: int) -> bool:
        if d not in evaluated:
            evaluated[d] = float(evaluate(d))
        return evaluated[d] >= target

    d = min(max(int(d_start), d_min), d_max)
    below: int | None = None
    above: int | None = None
    if reaches(d):
        above = d
        while above > d_min:
            d = max(d_min, min(above - 1, math.floor(above / growth)))
            if not reaches(d):
                below = d
                break
            above = d
    else:
        below = d
        while below < d_max:
            d = min(d_max, max(below + 1, math.ceil(below * growth)))
            if reaches(d):
                above = d
                break
            below = d
    if below is not None and above is not None:
        while above / below > tolerance and above - below > 1:
            mid = min(above - 1, max(below + 1, round(math.sqrt(below * above))))
            if reaches(mid):
                above = mid
            else:
                below = mid
    return list(evaluated.items())


# --------------------------------------------------------------------------------------
# Training through the engine
# --------------------------------------------------------------------------------------


def subspace_model(module: nn.Module, d: int, projection: str = "fastfood", seed: int = 0) -> SubspaceModel:
    """``module`` wrapped for training in a random d-dimensional subspace by the engine.

    The wrapper is a :class:`~genlab.probes.subspace.SubspaceModel` (theta_0 = the module's current
    weights, P drawn from ``seed``) flagged ``_genlab_no_vmap``, so the engine runs its forward
    once per model instead of under vmap (the projections have no vmap rules).
    """
    model = SubspaceModel(module, d=d, projection=projection, seed=seed)
    model._genlab_no_vmap = True
    return model


def matched_subspace_lr(lr: float, D: int, d: int) -> float:
    """lr x sqrt(D / d): the subspace step that moves each parameter about as far as direct training at lr.

    One step changes theta by P (delta theta_d); with unit-norm, nearly orthogonal columns,
    ||P v|| ~ ||v||, so an update of eta per coordinate of theta_d (as Adam's normalized update
    roughly is) moves theta by eta sqrt(d) in norm, eta sqrt(d / D) per parameter. Direct Adam
    moves each parameter by about lr; equal per-parameter steps need eta = lr sqrt(D / d). At
    d = D it is lr itself.
    """
    return lr * math.sqrt(D / d)


def parameter_count(module: nn.Module) -> int:
    """D: the number of trainable parameters (the dimension of the full parameter space)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class TrainedRun:
    """One trained network: direct (``kind="direct"``, d = D) or in a subspace (``kind="subspace"``)."""

    kind: str
    d: int
    seed: int
    D: int
    projection: str
    lr: float
    outcome: ModelOutcome
    theta_d: torch.Tensor | None = None   # trained subspace coordinates (CPU), subspace runs only
    selected_on: str = "test"             # "validation" when the inputs had a validation split

    @property
    def test_acc(self) -> float:
        return self.outcome.test_acc

    @property
    def selection_acc(self) -> float:
        """The accuracy the search decides with: validation accuracy when there is a validation split (the
        test set is then only reported, never used to choose d), else test accuracy."""
        return self.outcome.val_acc if self.selected_on == "validation" else self.outcome.test_acc

    def row(self) -> dict[str, Any]:
        """A tidy row of the run's settings and final metrics (JSON-serializable scalars)."""
        o = self.outcome
        return {"kind": self.kind, "d": self.d, "seed": self.seed, "D": self.D, "projection": self.projection,
                "lr": self.lr, "train_acc": o.train_acc, "test_acc": o.test_acc, "val_acc": o.val_acc,
                "selected_on": self.selected_on, "train_loss": o.train_loss,
                "test_loss": o.test_loss, "epochs": o.epochs, "steps": o.steps, "diverged": o.diverged}


def _snapshot(snapshot_dir: Path | None, name: str) -> Path | None:
    if snapshot_dir is None:
        return None
    Path(snapshot_dir).mkdir(parents=True, exist_ok=True)
    return Path(snapshot_dir) / f"snapshot-{name}.pt"


def train_direct(factory: ModelFactory, inputs: InputGroup, y_train: torch.Tensor, config: TrainConfig,
                 seeds: Sequence[int], snapshot_dir: Path | None = None, progress: Any = None) -> list[TrainedRun]:
    """Train ``factory(seed)`` for every seed directly (all parameters), batched in one engine call."""
    progress = progress or NullProgress()
    jobs = [ModelJob(f"direct-seed{s}", factory(s), seed=s, y_train=y_train) for s in seeds]
    D = parameter_count(jobs[0].module)
    progress.start_unit("direct baseline", config.epochs, len(jobs))
    outcome = train_models(jobs, [inputs], config, on_epoch=progress.epoch,
                           snapshot=_snapshot(snapshot_dir, "direct"))
    return [TrainedRun("direct", D, s, D, "none", config.lr, o, selected_on=_selection(inputs))
            for s, o in zip(seeds, outcome.outcomes)]


def _selection(inputs: InputGroup) -> str:
    return "validation" if inputs.x_val is not None else "test"


def train_in_subspaces(factory: ModelFactory, inputs: InputGroup, y_train: torch.Tensor, config: TrainConfig,
                       runs: Sequence[tuple[int, int]], projection: str, subspace_lr: float | None = None,
                       snapshot_dir: Path | None = None, progress: Any = None) -> list[TrainedRun]:
    """Train one subspace model per (d, seed) in ``runs``, all in one engine call.

    Run (d, seed) starts at theta_0 = ``factory(seed)``'s weights (the same initialization as the
    direct baseline of that seed) with a projection P drawn from (seed, d); it uses ``config``
    with the learning rate replaced by ``subspace_lr`` (default: :func:`matched_subspace_lr`
    of ``config.lr``) and the data order of ``seed``.
    """
    progress = progress or NullProgress()
    jobs, sizes, rates = [], [], []
    for d, seed in runs:
        module = factory(seed)
        D = parameter_count(module)
        if not 1 <= d <= D:
            raise UserError(f"subspace dimension d={d} must be between 1 and the model's D={D}")
        model = subspace_model(module, d, projection, seed=derive_seed(seed, "projection", projection, d))
        lr = subspace_lr if subspace_lr is not None else matched_subspace_lr(config.lr, D, d)
        jobs.append(ModelJob(f"d{d}-seed{seed}", model, seed=seed, y_train=y_train, lr=lr))
        sizes.append(D)
        rates.append(lr)
    label = "-".join(sorted({str(d) for d, _ in runs}, key=int))
    progress.start_unit(f"subspace d={label}", config.epochs, len(jobs))
    outcome = train_models(jobs, [inputs], config, on_epoch=progress.epoch,
                           snapshot=_snapshot(snapshot_dir, f"d{label}" if len(label) < 60 else "grid"))
    theta = outcome.stack.params["theta_d"].detach().cpu()
    return [TrainedRun("subspace", d, seed, D, projection, lr, o, theta[k, :d].clone(), _selection(inputs))
            for k, ((d, seed), D, lr, o) in enumerate(zip(runs, sizes, rates, outcome.outcomes))]


# --------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """How d_int is searched: threshold, auto (bracketing + log bisection) or a grid, projection, step."""

    threshold: float = 0.9
    mode: str = "auto"                   # auto | grid
    dims: tuple[int, ...] = ()           # grid mode: the d values
    d_start: int = 100                   # auto mode: first d tried
    d_max: int | None = None             # auto mode: largest d tried (default D)
    growth: float = 2.0                  # auto mode: bracketing factor
    tolerance: float = 1.2               # auto mode: stop when d_above / d_below <= tolerance
    projection: str = "fastfood"
    subspace_lr: float | None = None     # None: matched_subspace_lr(lr, D, d)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"threshold={self.threshold} must be a fraction of the baseline accuracy in (0, 1]")
        if self.mode not in ("auto", "grid"):
            raise UserError(f"search={self.mode!r} must be 'auto' or 'grid'")
        if self.mode == "grid" and not self.dims:
            raise UserError("search='grid' needs a non-empty list of dims")
        if any(int(d) < 1 for d in self.dims):
            raise UserError(f"every d in dims must be a positive integer, got {list(self.dims)}")
        if self.d_start < 1 or (self.d_max is not None and self.d_max < 1):
            raise UserError(f"d_start={self.d_start} and d_max={self.d_max} must be positive")
        if self.growth <= 1.0:
            raise UserError(f"growth={self.growth} must be > 1")
        if self.tolerance <= 1.0:
            raise UserError(f"tolerance={self.tolerance} must be > 1 (a ratio d_above / d_below)")
        if self.projection not in PROJECTION_NAMES:
            raise UserError(f"unknown projection {self.projection!r}; valid projections: {', '.join(PROJECTION_NAMES)}")
        if self.subspace_lr is not None and not self.subspace_lr > 0:
            raise UserError(f"subspace_lr={self.subspace_lr} must be positive")


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


@dataclass
class IntrinsicDimension:
    """The measurement: the direct baseline, every subspace run (in evaluation order) and the crossings."""

    D: int
    settings: SearchSettings
    baseline: list[TrainedRun]
    runs: list[TrainedRun]
    crossing: Crossing                                   # of the seed-averaged accuracies
    seed_crossings: dict[int, Crossing] = field(default_factory=dict)

    @property
    def baseline_acc(self) -> float:
        """Mean test accuracy of the directly trained networks over seeds."""
        return _mean_finite([r.test_acc for r in self.baseline])

    @property
    def baseline_train_acc(self) -> float:
        """Mean training accuracy of the directly trained networks over seeds."""
        return _mean_finite([r.outcome.train_acc for r in self.baseline])

    @property
    def baseline_selection_acc(self) -> float:
        """Mean accuracy of the directly trained networks on the set d is selected on (validation if given)."""
        return _mean_finite([r.selection_acc for r in self.baseline])

    @property
    def selected_on(self) -> str:
        return self.baseline[0].selected_on if self.baseline else "test"

    @property
    def target_acc(self) -> float:
        """threshold x the baseline's accuracy on the selection set (validation if given)."""
        return self.settings.threshold * self.baseline_selection_acc

    def test_acc_at_crossing(self) -> float | None:
        """Seed-mean test accuracy at the smallest d tried that reached the target on the selection set
        (``crossing.d_above``): what d_int90's network achieves on data never used to choose it."""
        if self.crossing.d_above is None:
            return None
        return _mean_finite([r.test_acc for r in self.runs if r.d == self.crossing.d_above])

    @property
    def d_int90(self) -> float | None:
        """The interpolated intrinsic dimension (None if the target was never reached)."""
        return self.crossing.d_int

    def mean_accuracy(self) -> dict[int, float]:
        """Seed-averaged selection accuracy (validation if given, else test) at every d tried, by increasing d."""
        by_d: dict[int, list[float]] = {}
        for run in self.runs:
            by_d.setdefault(run.d, []).append(run.selection_acc)
        return {d: _mean_finite(by_d[d]) for d in sorted(by_d)}

    def seed_d_int(self) -> list[float]:
        """Per-seed interpolated d_int (seeds whose crossing was bracketed)."""
        return [c.d_int for c in self.seed_crossings.values() if c.status == "interpolated" and c.d_int]

    def table(self):
        """The runs as a pandas DataFrame (one row per trained network)."""
        import pandas as pd

        base = self.baseline_acc
        rows = []
        for order, run in enumerate(self.baseline + self.runs):
            rows.append({**run.row(), "baseline_acc": base, "fraction_of_baseline": run.test_acc / base,
                         "order": order})
        return pd.DataFrame(rows)


def _accuracies_by_seed(runs: Sequence[TrainedRun]) -> dict[int, tuple[list[int], list[float]]]:
    out: dict[int, tuple[list[int], list[float]]] = {}
    for run in runs:
        dims, accs = out.setdefault(run.seed, ([], []))
        dims.append(run.d)
        accs.append(run.selection_acc)
    return out


def measure_intrinsic_dimension(factory: ModelFactory, inputs: InputGroup, y_train: torch.Tensor,
                                config: TrainConfig, seeds: Sequence[int], settings: SearchSettings,
                                snapshot_dir: Path | None = None, progress: Any = None) -> IntrinsicDimension:
    """Train the direct baseline, then search d (every seed at every d) and locate d_int.

    ``factory(seed)`` returns the initialized network of a seed; both the baseline and the
    subspace runs of that seed start from it. The target is ``settings.threshold`` times the
    seed-averaged baseline accuracy on the validation split of ``inputs`` (``x_val``, ``y_val``), and d
    is searched and d_int located on validation accuracy; without a validation split, on test accuracy
    (then the reported d_int is selected on the test set: give a validation split to avoid that).
    """
    if not seeds:
        raise UserError("need at least one seed")
    baseline = train_direct(factory, inputs, y_train, config, seeds, snapshot_dir, progress)
    D = baseline[0].D
    base_acc = _mean_finite([r.selection_acc for r in baseline])
    if not math.isfinite(base_acc):
        raise UserError("the direct baseline diverged for every seed (non-finite loss); lower lr")
    target = settings.threshold * base_acc
    runs: list[TrainedRun] = []

    def train_at(ds: Sequence[int]) -> list[TrainedRun]:
        trained = train_in_subspaces(factory, inputs, y_train, config, [(d, s) for d in ds for s in seeds],
                                     settings.projection, settings.subspace_lr, snapshot_dir, progress)
        runs.extend(trained)
        return trained

    if settings.mode == "grid":
        dims = sorted({int(d) for d in settings.dims if int(d) <= D})
        if not dims:
            raise UserError(f"every d in dims {list(settings.dims)} exceeds the model's D={D}")
        train_at(dims)
    else:
        d_max = min(D, settings.d_max or D)
        search_dimension(lambda d: _mean_finite([r.selection_acc for r in train_at([d])]), target,
                         settings.d_start, d_max, settings.growth, settings.tolerance)
    result = IntrinsicDimension(D, settings, baseline, runs, Crossing(None, None, None, "not_reached"))
    means = result.mean_accuracy()
    result.crossing = find_crossing(list(means), list(means.values()), target)
    result.seed_crossings = {seed: find_crossing(dims, accs, target)
                             for seed, (dims, accs) in _accuracies_by_seed(runs).items()}
    return result




def intrinsic_dimension(model: nn.Module | ModelFactory, train_data: tuple[torch.Tensor, torch.Tensor],
                        test_data: tuple[torch.Tensor, torch.Tensor], *, epochs: int,
                        seeds: Sequence[int] = (0, 1, 2), projection: str = "fastfood", threshold: float = 0.9,
                        search: str = "auto", dims: Sequence[int] = (), d_start: int = 100,
                        d_max: int | None = None, growth: float = 2.0, tolerance: float = 1.2,
                        optimizer: str = "adam", lr: float = 0.01, subspace_lr: float | None = None,
                        momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
                        batch_size: int = 128, schedule: str = "constant", loss: str = "ce",
                        device: str = "cpu", snapshot_dir: Path | str | None = None,
                        progress: Any = None) -> IntrinsicDimension:
    """d_int (Li et al. 2018) of your own network on your own data.

    ``model`` is an initialized ``nn.Module`` (every seed then starts from its weights; seeds
    vary the projection and the data order) or a function ``seed -> nn.Module`` returning a
    freshly initialized network per seed. It is first trained directly (all D parameters, ``lr``)
    for every seed, then in random subspaces of dimension d (at ``subspace_lr``, by default
    lr x sqrt(D / d), see :func:`matched_subspace_lr`) with the same optimizer, epochs, batch
    size, schedule, loss and weight decay - the weight decay then acts
    on theta_d, i.e. pulls theta toward theta_0. ``search="auto"`` brackets and bisects d
    (``d_start``, ``growth``, ``tolerance``, ``d_max``, see :func:`search_dimension`);
    ``search="grid"`` trains every d of ``dims``. d_int is where the seed-averaged test accuracy
    crosses ``threshold`` x the mean baseline accuracy, interpolated in log d.

    ``train_data`` and ``test_data`` are ``(inputs, labels)`` tensor pairs, labels class indices.
    The model itself is left unchanged. Returns an :class:`IntrinsicDimension`
    (``.d_int90``, ``.D``, ``.baseline_acc``, ``.table()``).
    """
    if isinstance(model, nn.Module):
        template = model
        factory: ModelFactory = lambda seed: copy.deepcopy(template)  # noqa: E731
    elif callable(model):
        factory = _checked_factory(model)
    else:
        raise UserError(f"model must be a torch.nn.Module or a function seed -> nn.Module, got {type(model).__name__}")
    if epochs < 1:
        raise UserError(f"epochs={epochs} must be at least 1")
    if len(set(seeds)) != len(list(seeds)) or not list(seeds):
        raise UserError(f"seeds={list(seeds)} must be a non-empty list of distinct integers")
    x_train, y_train = as_labelled_tensors(train_data, "train_data")
    x_test, y_test = as_labelled_tensors(test_data, "test_data")
    settings = SearchSettings(threshold=threshold, mode=search, dims=tuple(int(d) for d in dims), d_start=d_start,
                              d_max=d_max, growth=growth, tolerance=tolerance, projection=projection,
                              subspace_lr=subspace_lr)
    config = TrainConfig(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, batch_size=batch_size, epochs=epochs, schedule=schedule,
                         eval_every=epochs, device=device)
    return measure_intrinsic_dimension(factory, InputGroup(x_train, x_test, y_test), y_train, config,
                                       list(seeds), settings, Path(snapshot_dir) if snapshot_dir else None, progress)


def _checked_factory(make: Callable[[int], Any]) -> ModelFactory:
    def factory(seed: int) -> nn.Module:
        module = make(seed)
        if not isinstance(module, nn.Module):
            raise UserError(f"the model function returned {type(module).__name__} for seed {seed}, not an nn.Module")
        return module

    return factory
