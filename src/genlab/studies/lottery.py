"""Lottery tickets (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis: Finding Sparse,
Trainable Neural Networks", Figs. 3-4; rewinding: Frankle et al. 2019).

Iterative magnitude pruning (IMP, :mod:`genlab.probes.lottery`): train the dense network, prune 20% of
the remaining weights of smallest magnitude per layer (the output layer at 10%), reset the
survivors to their initial values, retrain; repeat. The claim: the subnetworks found this way
("winning tickets") reach the dense network's test accuracy down to ~20% of the weights and
beyond, at least as fast, while the same sparse structure with a fresh random initialization
("reinit") and random pruning to the same per-layer sparsity ("random_prune") degrade earlier.

Every network's stopping point is the epoch of lowest validation loss on a split carved from the
training set; accuracy is the test accuracy at that epoch (never selected on the test set). All
arms and seeds of a round train together in one batched engine call, with the same epoch budget.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter
from pydantic import Field, model_validator

from genlab.data.splits import split_validation
from genlab.engine import InputGroup
from genlab.errors import UserError
from genlab.plotting import COLORS, figure, save
from genlab.probes.lottery import ARMS, IterativePruning, Mask, PruningPlan, RoundResult
from genlab.seeding import derive_seed
from genlab.spec import AugmentSpec, DataSpec, ModelSpec, OptimSpec, StudySpec
from genlab.spec.fields import Loss
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset

ARM_LABELS = {"ticket": "winning ticket (reset to init)", "reinit": "random re-init (same mask)",
              "random_prune": "random pruning (same sparsity)"}
ARM_COLORS = {"ticket": COLORS[0], "reinit": COLORS[3], "random_prune": COLORS[7]}


class LotterySpec(StudySpec):
    data: DataSpec = DataSpec()
    network: ModelSpec = ModelSpec(widths=[300, 100])
    optim: OptimSpec = OptimSpec(optimizer="adam", lr=1.2e-3, batch_size=60, epochs=20)
    loss: Loss = Field("ce", description="cross-entropy, or squared error on one-hot targets")
    rounds: int = Field(10, ge=1, le=60, description="pruning rounds after the dense round 0")
    prune_rate: float = Field(0.2, gt=0.0, lt=1.0, description="fraction of the remaining weights pruned per round")
    output_prune_rate: float | None = Field(None, ge=0.0, lt=1.0, description="rate for the output layer (default: "
                                            "half of prune-rate, as in the paper)")
    conv_prune_rate: float | None = Field(None, ge=0.0, lt=1.0, description="rate for convolution kernels (default: "
                                          "half of prune-rate when layerwise, as the paper's Conv-2; prune-rate when "
                                          "global)")
    pruning: Literal["layerwise", "global"] = Field("layerwise", description="prune each layer at its rate, or rank "
                                                    "the weights of all layers at prune-rate together (layers with "
                                                    "another rate are pruned on their own)")
    rewind_epoch: int = Field(0, ge=0, description="reset survivors to initialization (0) or rewind them to the dense "
                              "run's weights after this many epochs")
    controls: list[Literal["reinit", "random_prune"]] = Field(["reinit", "random_prune"], description="control arms "
                                                              "trained alongside the ticket each round")
    val_size: int = Field(500, gt=0, description="examples carved from the training set for validation (early "
                          "stopping)")
    augment: AugmentSpec = AugmentSpec()
    early_stop_metric: Literal["val_loss", "val_acc"] = Field("val_loss", description="early-stopping criterion on the "
                                                              "validation split (paper: minimum validation loss)")

    help_texts = {"widths": "hidden layer widths (LeNet-300-100 by default)", "optimizer": "optimizer (paper: Adam)",
                  "lr": "learning rate (paper: 1.2e-3 with Adam)", "batch_size": "minibatch size (paper: 60)",
                  "epochs": "epoch budget of every network of every round (same for all arms)"}

    @model_validator(mode="after")
    def _consistent(self) -> "LotterySpec":
        if self.rewind_epoch >= self.optim.epochs:
            raise ValueError(f"rewind_epoch={self.rewind_epoch} must be below epochs={self.optim.epochs}")
        if self.data.n_train is not None and self.val_size >= self.data.n_train:
            raise ValueError(f"val_size={self.val_size} must be smaller than n_train={self.data.n_train}")
        return self

    presets = {
        # quick: 40% per round reaches 60, 36, 22, 13, 7.9, 4.7, 2.9% of the weights in 7 rounds
        "quick": dict(seeds=[0, 1, 2], rounds=7, prune_rate=0.4, epochs=15),
        "paper": dict(seeds=[0, 1, 2, 3, 4], rounds=16, prune_rate=0.2, epochs=40),
        "cifar": cifar_preset("lottery"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(seeds=[0, 1], widths=[32], n_train=300, n_test=200, val_size=100, batch_size=50, epochs=2,
                      rounds=2, prune_rate=0.5),
    }


def conv_rate(spec: LotterySpec) -> float:
    """Pruning rate of convolution kernels: the paper's Conv-2 prunes them at half the rate of the
    fully connected layers; in global mode they join the pooled ranking at the full rate."""
    if spec.conv_prune_rate is not None:
        return spec.conv_prune_rate
    return spec.prune_rate / 2 if spec.pruning == "layerwise" else spec.prune_rate


def early_stop(curve: pd.DataFrame, metric: str = "val_loss") -> pd.Series | None:
    """The evaluation (epoch >= 1) with the lowest validation loss (or highest validation
    accuracy); ties go to the earliest. Test numbers are read at that point, never selected on.
    None when no trained evaluation has a finite value (a network that diverged at once)."""
    trained = curve[(curve["epoch"] >= 1) & np.isfinite(curve[metric])].sort_values("epoch")
    if trained.empty:
        return None
    values = trained[metric].to_numpy()
    best = int(np.argmin(values) if metric == "val_loss" else np.argmax(values))
    return trained.iloc[best]


def architecture(spec: LotterySpec) -> str:
    """A short name of the network: ``mlp-300-100`` (LeNet-300-100), ``lenet-120-84``, ``cnn1d``."""
    if spec.network.model in ("mlp", "lenet"):
        return "-".join([spec.network.model, *map(str, spec.network.widths)])
    return spec.network.model


def round_rows(result: RoundResult, spec: LotterySpec, total_weights: int) -> tuple[list[dict], list[dict]]:
    """Tidy rows (one per trained network) and learning curves of one IMP round."""
    curves = pd.DataFrame(result.outcome.curves)
    rows, curve_rows = [], []
    for info, outcome in zip(result.arms, result.outcome.outcomes):
        curve = curves[(curves["key"] == info.key) & (curves["epoch"] <= info.epochs)]  # the arm's budget
        stop = early_stop(curve, spec.early_stop_metric)
        last = curve.sort_values("epoch").iloc[-1]
        if stop is None:  # diverged: no stopping point, its numbers stay missing
            stop = pd.Series({"epoch": -1, "step": -1, "val_loss": np.nan, "val_acc": np.nan, "test_acc": np.nan})
        remaining = 100.0 * info.density
        rows.append({
            "model": architecture(spec), "dataset": spec.data.dataset, "round": info.round, "arm": info.arm,
            "seed": info.seed, "weights_remaining": remaining,
            "weights_kept": int(round(info.density * total_weights)), "prunable_weights": total_weights,
            "early_stop_epoch": int(stop["epoch"]), "early_stop_iter": int(stop["step"]),
            "val_loss_at_early_stop": float(stop["val_loss"]), "val_acc_at_early_stop": float(stop["val_acc"]),
            "test_acc_at_early_stop": float(stop["test_acc"]), "final_test_acc": float(last["test_acc"]),
            "final_val_acc": float(last["val_acc"]), "final_iter": int(last["step"]), "epochs": int(last["epoch"]),
            "budget_epochs": info.epochs,
            "stopped_at_budget": bool(int(stop["epoch"]) == int(last["epoch"])), "diverged": outcome.diverged,
            "pruning": spec.pruning, "rewind_epoch": spec.rewind_epoch,
            "layer_density": "; ".join(f"{n}={d:.4f}" for n, d in info.layer_density.items()),
        })
        for c in curve.to_dict("records"):
            curve_rows.append({**c, "round": info.round, "arm": info.arm, "seed": info.seed,
                               "weights_remaining": remaining})
    return rows, curve_rows


def _spread(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, min and max of ``value`` over seeds, per arm and round."""
    return (results.groupby(["arm", "round"]).agg(remaining=("weights_remaining", "mean"), mean=(value, "mean"),
                                                   lo=(value, "min"), hi=(value, "max"))
            .reset_index().sort_values(["arm", "round"]))


def _with_dense(stats: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per arm, its rounds preceded by the dense round (the common starting point of every arm)."""
    dense = stats[(stats["arm"] == "ticket") & (stats["round"] == 0)]
    out = {}
    for arm in ARMS:
        part = stats[(stats["arm"] == arm)]
        if len(part):
            out[arm] = part if arm == "ticket" else pd.concat([dense.assign(arm=arm), part])
    return out


def _comparisons(results: pd.DataFrame) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    """Dense accuracy, the per-round mean accuracy table (arms as columns), and paired
    ticket-minus-control differences per round (mean over seeds)."""
    acc = results.pivot_table(index=["round", "seed"], columns="arm", values="test_acc_at_early_stop")
    remaining = results[results["arm"] == "ticket"].groupby("round")["weights_remaining"].mean()
    per_round = acc.groupby("round").mean().assign(remaining=remaining)
    dense = float(per_round.loc[0, "ticket"]) if 0 in per_round.index else float("nan")
    diffs = pd.DataFrame({c: (acc["ticket"] - acc[c]).groupby("round").mean()
                          for c in ("reinit", "random_prune") if c in acc}).assign(remaining=remaining)
    return dense, per_round, diffs


@register
class Lottery(Study):
    name = "lottery"
    title = "Lottery tickets: iterative magnitude pruning with reset, and its controls"
    question = ("Does a dense network contain a sparse subnetwork that, reset to its initial weights, trains to the "
                "dense accuracy - and is it the initialization, not only the structure, that makes it work?")
    citation = "Frankle & Carbin 2019, The Lottery Ticket Hypothesis, Figs. 3-4"
    Spec = LotterySpec
    result_columns = ("model", "round", "weights_remaining", "arm", "seed", "early_stop_iter",
                      "test_acc_at_early_stop", "final_test_acc")

    def units(self, spec: LotterySpec) -> list[Unit]:
        """One unit: the rounds are sequential (each prunes the last), and every round trains all seeds
        in one engine call (training the seeds in separate calls changes the last bits of 7 of 21
        networks' numbers, measured), so seeds stay together; each round is cached as it finishes."""
        return [Unit("imp")]

    def estimate_seconds(self, spec: LotterySpec) -> float | None:
        data = spec.data.load()
        net = spec.network.build(data, seed=0)
        params = sum(p.numel() for p in net.parameters())
        steps = math.ceil((len(data.y_train) - spec.val_size) / spec.optim.batch_size) * spec.optim.epochs
        models = len(spec.seeds) * (1 + spec.rounds * (1 + len(spec.controls)))
        return 10.0 + 1e-8 * params * steps * models  # ~10 ns per parameter and step (Adam, one core)

    def run_unit(self, spec: LotterySpec, unit: Unit, ctx) -> UnitResult:
        data = spec.data.load()
        x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, spec.val_size,
                                                          derive_seed(spec.data.dataset, "validation"))
        inputs = InputGroup(x_train, data.x_test, data.y_test, x_val, y_val)
        modules = [spec.network.build(data, s) for s in spec.seeds]
        config = spec.optim.train_config(spec.loss, eval_train=False, device=spec.device)
        plan = PruningPlan(rounds=spec.rounds, rate=spec.prune_rate, output_rate=spec.output_prune_rate,
                           conv_rate=conv_rate(spec),
                           mode=spec.pruning, rewind_epoch=spec.rewind_epoch,
                           controls=tuple(spec.controls))
        imp = IterativePruning(modules, spec.seeds, inputs, y_train, config, plan, augment=spec.augment.build())
        total = Mask.dense(modules[0]).total()

        def run_round() -> dict:
            n_models = len(spec.seeds) * (1 if imp.round == 0 else 1 + len(spec.controls))
            ctx.progress.start_unit(f"{unit.key} round {imp.round}/{spec.rounds}", spec.optim.epochs, n_models)
            result = imp.run_round(on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot(f"round{imp.round}"))
            rows, curves = round_rows(result, spec, total)
            return {"imp": imp.state_dict(), "rows": rows, "curves": curves}

        rows: list[dict] = []
        curves: list[dict] = []
        for number in range(spec.rounds + 1):  # a resumed unit reads the finished rounds back
            done = ctx.cached(f"round{number}", run_round)
            try:
                imp.load_state_dict(done["imp"])
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{ctx.unit_dir}: the stored state of pruning round {number} does not fit this "
                                f"run ({exc}); re-run with --force-new") from None
            rows += done["rows"]
            curves += done["curves"]
        return UnitResult(rows, curves)

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        return [self._plot_sparsity(results, spec, out_dir), self._plot_curves(curves, results, spec, out_dir)]

    def _plot_sparsity(self, results: pd.DataFrame, spec, out_dir: Path) -> Path:
        fig, axes = figure(2, width=5.4, height=4.0)
        panels = [("test_acc_at_early_stop", 100.0, "test accuracy at early stop (%)", "(a) accuracy vs sparsity"),
                  ("early_stop_iter", 1.0, "early-stop iteration (validation)", "(b) speed of learning")]
        n_seeds = results["seed"].nunique()
        for ax, (value, scale, ylabel, title) in zip(axes[0], panels):
            for arm, part in _with_dense(_spread(results, value)).items():
                color = ARM_COLORS[arm]
                ax.plot(part["remaining"], part["mean"] * scale, marker="o", ms=3.5, color=color, lw=1.6,
                        label=ARM_LABELS[arm])
                ax.fill_between(part["remaining"], part["lo"] * scale, part["hi"] * scale, color=color, alpha=0.18,
                                lw=0)
            dense = results[(results["arm"] == "ticket") & (results["round"] == 0)][value].mean() * scale
            ax.axhline(dense, color="black", ls=":", lw=1, label="dense network")
            if value == "early_stop_iter":
                budget = results["final_iter"].max()
                budget_line = ax.axhline(budget, color="gray", ls="--", lw=1, label="end of the budget")
                ax.set_ylim(0, budget * 1.05)
                ax.legend(handles=[ax.get_lines()[-2], budget_line], loc="lower left")
            ax.set_xscale("log")
            ax.invert_xaxis()
            ticks = [100, 50, 20, 10, 5, 3, 2, 1]
            low = results["weights_remaining"].min()
            ax.set_xticks([t for t in ticks if t >= low * 0.8])
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("percent of weights remaining (log scale)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        axes[0, 0].legend(loc="lower left")
        fig.suptitle(f"Lottery tickets: {architecture(spec)} on {spec.data.dataset}, {spec.pruning} IMP at "
                     f"{spec.prune_rate:.0%}/round; mean over {n_seeds} seeds, band = min-max")
        return save(fig, out_dir, "lottery_sparsity")

    def _plot_curves(self, curves: pd.DataFrame, results: pd.DataFrame, spec, out_dir: Path) -> Path:
        rounds = sorted(results["round"].unique())
        remaining = results[results["arm"] == "ticket"].groupby("round")["weights_remaining"].mean()
        wanted = [100, 50, 20, 8, 0]
        shown = list(dict.fromkeys(min(rounds, key=lambda r: abs(math.log(remaining[r] + 1e-9) - math.log(w + 1e-9)))
                                   if w else rounds[-1] for w in wanted))
        arms = [a for a in ("ticket", "reinit") if a in set(results["arm"])]
        fig, axes = figure(len(arms), width=5.0, height=3.8, sharey=True)
        for ax, arm in zip(axes[0], arms):
            for i, r in enumerate(shown):
                arm_here = "ticket" if r == 0 else arm
                c = curves[(curves["round"] == r) & (curves["arm"] == arm_here)]
                if not len(c):
                    continue
                stats = c.groupby("step")["test_acc"].agg(["mean", "min", "max"]).reset_index()
                ax.plot(stats["step"], stats["mean"] * 100, color=COLORS[i % 10], lw=1.5,
                        label=f"{remaining[r]:.1f}% remaining")
                ax.fill_between(stats["step"], stats["min"] * 100, stats["max"] * 100, color=COLORS[i % 10], alpha=0.15,
                                lw=0)
                stops = results[(results["round"] == r) & (results["arm"] == arm_here)]
                ax.plot(stops["early_stop_iter"], stops["test_acc_at_early_stop"] * 100, ls="none", marker="v",
                        ms=5, color=COLORS[i % 10])
            ax.set_xlabel("training iteration")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"({'ab'[arms.index(arm)]}) {ARM_LABELS[arm]}")
            ax.legend(loc="lower right")
        settled = curves[curves["round"].isin(shown) & curves["arm"].isin(arms)
                         & (curves["epoch"] >= max(2, spec.optim.epochs // 4))]
        if len(settled):  # zoom on the part of training where the arms differ, as the paper's Fig. 3
            means = settled.groupby(["round", "arm", "epoch"])["test_acc"].mean() * 100
            axes[0, 0].set_ylim(max(0.0, float(means.min()) - 1.0),
                                min(100.0, float(settled["test_acc"].max()) * 100 + 0.5))
        fig.suptitle("Learning curves (mean over seeds, band = min-max; triangles: early-stop points chosen on "
                     "validation)")
        return save(fig, out_dir, "lottery_curves")

    # ----- reading --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        dense, per_round, diffs = _comparisons(results)
        n_seeds = results["seed"].nunique()
        ticket = per_round["ticket"]
        mid = per_round[(per_round["remaining"] >= 20) & (per_round["remaining"] <= 50)]
        sparse = diffs[diffs["remaining"] <= 10]
        sparse_gap = float(sparse["reinit"].mean()) if "reinit" in sparse and len(sparse) else float("nan")
        mid_ok = bool(len(mid)) and bool((mid["ticket"] >= dense - 0.005).all())
        sparse_ok = bool(sparse_gap >= 0.01) and n_seeds >= 3
        best = int(ticket.idxmax())
        verdict = (f"dense {dense:.1%}; tickets at 20-50% of weights: "
                   + (", ".join(f"{r['ticket']:.1%} ({r['remaining']:.0f}%)" for _, r in mid.iterrows()) or "no round")
                   + f"; ticket minus random re-init at <= 10% of weights: {sparse_gap * 100:+.1f} points")
        reading = " ".join([_setting(spec, n_seeds), _accuracy_lines(per_round), _gaps(mid, sparse, dense),
                            _speed(results), _budget(results, spec),
                            f"The best ticket ({ticket.max():.1%}) is at {per_round.loc[best, 'remaining']:.1f}% of "
                            "the weights."])
        sparsest = per_round["remaining"].idxmin()
        refs = [("dense LeNet-300-100 test accuracy", "~98% (full MNIST, 50K iterations)", f"{dense:.1%} "
                 f"({spec.data.dataset})"),
                ("ticket at ~51% / ~21% of weights", "learns faster, higher accuracy than dense",
                 f"{_near(per_round, 51):.1%} / {_near(per_round, 21):.1%} (dense {dense:.1%})"),
                ("ticket at ~3.6% of weights", "back to about the dense accuracy",
                 f"{ticket[sparsest]:.1%} at {per_round.loc[sparsest, 'remaining']:.1f}%"),
                ("random re-init", "degrades much earlier than the ticket",
                 f"ticket - reinit: {sparse_gap * 100:+.1f} points at <= 10% of weights")]
        checks = [("tickets at 20-50% of weights remaining are within 0.5 points of the dense test accuracy or above",
                   mid_ok),
                  ("at <= 10% of weights remaining the ticket beats random re-init by >= 1 point "
                   "(mean over those rounds and >= 3 seeds)", sparse_ok)]
        return Summary(verdict, reading, refs, checks)


def _setting(spec: LotterySpec, n_seeds: int) -> str:
    start = "reset to initialization" if spec.rewind_epoch == 0 else f"rewound to epoch {spec.rewind_epoch}"
    return (f"{architecture(spec)} on {spec.data.dataset} ({n_seeds} seeds, {spec.optim.epochs} epochs for every "
            "network, "
            f"{spec.pruning} pruning of {spec.prune_rate:.0%} of the remaining weights per round, survivors {start}; "
            f"stopping point chosen by {spec.early_stop_metric} on {spec.val_size} held-out training examples).")


def _accuracy_lines(per_round: pd.DataFrame) -> str:
    parts = []
    for _, r in per_round.iterrows():
        arms = [f"{name} {r[arm]:.1%}" for arm, name in (("ticket", "ticket"), ("reinit", "reinit"),
                                                          ("random_prune", "random prune"))
                if arm in r and not np.isnan(r[arm])]
        parts.append(f"{r['remaining']:.1f}%: " + ", ".join(arms))
    return "Mean test accuracy at the early-stop point - " + "; ".join(parts) + "."


def _gaps(mid: pd.DataFrame, sparse: pd.DataFrame, dense: float) -> str:
    text = ("Between 20% and 50% of weights remaining the ticket is "
            + (", ".join(f"{(r['ticket'] - dense) * 100:+.1f}" for _, r in mid.iterrows()) or "not measured")
            + " points from the dense network.")
    if not len(sparse):
        return text + " No round reached 10% of weights or fewer."
    for arm, name in (("reinit", "random re-initialization"), ("random_prune", "random pruning")):
        if arm in sparse:
            text += (f" At {', '.join(f'{v:.1f}%' for v in sparse['remaining'])} of weights, ticket minus {name}: "
                     + ", ".join(f"{v * 100:+.1f}" for v in sparse[arm]) + " points.")
    return text


def _speed(results: pd.DataFrame) -> str:
    stop = results.groupby(["arm", "round"])["early_stop_iter"].mean()
    last = int(results["round"].max())
    text = (f"Early-stop iteration: dense {stop.get(('ticket', 0), np.nan):.0f}, "
            f"sparsest ticket {stop.get(('ticket', last), np.nan):.0f}")
    if ("reinit", last) in stop:
        text += f", its random re-init {stop[('reinit', last)]:.0f}"
    return text + "."


def _budget(results: pd.DataFrame, spec: LotterySpec) -> str:
    by_arm = results.groupby("arm")["stopped_at_budget"].mean()
    return ("Share of networks whose best validation point was the last epoch of the budget (still improving; a "
            "longer budget could change their accuracy): "
            + ", ".join(f"{arm} {by_arm[arm]:.0%}" for arm in ARMS if arm in by_arm) + ".")


def _near(per_round: pd.DataFrame, percent: float) -> float:
    """The ticket's mean accuracy at the round whose density is closest to ``percent`` (log scale)."""
    pos = np.abs(np.log(per_round["remaining"].to_numpy()) - np.log(percent)).argmin()
    return float(per_round["ticket"].iloc[pos])
