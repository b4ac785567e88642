"""Layer robustness: are all layers created equal? (Zhang, Bengio & Singer 2019, JMLR 2022).

Each network is trained with checkpoints; then every layer, one at a time, is re-initialized to
its value at each checkpoint (t = 0: its initial value) or re-randomized from the network's own
initializer, with all other layers at their trained values, and the test accuracy is measured
(see :mod:`genlab.probes.layer_robustness`). The finding: in fully connected nets the first layer is
*critical* - resetting it to its initial value costs much accuracy - while later layers are
*robust* - their initial values serve nearly as well as their trained ones - although
re-randomizing any layer destroys the network. So the trained network depends on where each
layer *started*, and layers differ in how far and how usefully they moved.

Networks: fully connected ``fcnDxW`` (D hidden layers of width W; the blog's 3x256 and 4x128 on
mnist5k), a LeNet-style CNN, a small residual net (on digits or MNIST-1D), and the papers' image
networks of the zoo by name (``vgg11``, ``resnet18``, ... on --dataset, with ``--zoo-width`` and
``--zoo-init``). The residual blocks of ``resnet`` and of the zoo's ResNets are also reset as a
whole (the residual-block view of the paper's Fig. 10). Every seed of one network trains in one batched engine call
(one unit of work); all modified networks are evaluated in stacked batches.
"""
from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from pydantic import Field, field_validator, model_validator

from genlab.engine import InputGroup, ModelJob, train_models
from genlab.models import MODELS, build_model
from genlab.models.zoo import resolve_init
from genlab.plotting import COLORS, figure, save
from genlab.probes.layer_robustness import layer_groups, layer_verdicts, resolve_checkpoint_epochs, trained_model_table
from genlab.spec import AugmentSpec, DataSpec, Group, OptimSpec, Prefix, StudySpec, distinct
from genlab.spec.fields import Init, Loss, model_takes
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset

FCN_NAME = re.compile(r"^fcn(\d+)x(\d+)$")
OWN_NETWORKS = ("mlp", "lenet", "cnn1d", "resnet")
ZOO_NETWORKS = tuple(name for name in MODELS if name not in OWN_NETWORKS)
"""The zoo's image networks the study takes by name (the papers' VGG, ResNet, Conv-N, ...)."""
RESIDUAL_NETWORKS = ("resnet", "resnet18", "resnet20", "resnet56")


class ResNetSpec(Group):
    """The residual net of the study: it trains on its own dataset, with its own initializer, rate and budget."""

    dataset: Literal["digits", "mnist1d"] = Field("digits", description="dataset of the residual net")
    channels: int = Field(32, gt=0, le=512, description="channels of the residual net")
    blocks: int = Field(3, gt=0, le=20, description="basic blocks of the residual net")
    init: Init = Field("kaiming", description="initializer of the residual net (He init suits a ReLU net without "
                       "normalization)")
    lr: float = Field(0.02, gt=0.0, description="learning rate of the residual net (no normalization layers)")
    epochs: int = Field(20, gt=0, description="epoch budget of the residual net")


class LayerRobustnessSpec(StudySpec):
    networks: list[str] = Field(["fcn3x256", "fcn4x128", "lenet", "resnet"],
                                description="networks: fcnDxW (D hidden layers of width W, e.g. fcn3x256), lenet and "
                                "the zoo's image networks (vgg11, resnet18, ...) train on --dataset, resnet on "
                                "--resnet-dataset")
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    loss: Loss = Field("ce", description="cross-entropy, or squared error on one-hot targets")
    init: Init = Field("default", description="weight initializer of the fcn and lenet networks")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer (fcn, lenet)")
    checkpoint_epochs: list[int] = Field([], description="epochs whose parameters are kept for re-initialization "
                                         "(empty: 0,1,2,3,5,10,20,50,...; 0 and the final epoch are always included, "
                                         "epochs after a network's last epoch are skipped)")
    draws: int = Field(3, ge=1, le=100, description="independent re-randomizations of each layer")
    threshold: float = Field(0.10, gt=0.0, lt=1.0, description="a layer is critical when resetting it to its initial "
                             "value costs more than this fraction of test accuracy (0.10 = 10 points)")
    lenet_widths: list[int] = Field([120, 84], min_length=1, description="hidden widths of the LeNet classifier head")
    resnet: Annotated[ResNetSpec, Prefix("resnet")] = ResNetSpec()
    models_per_pass: int | None = Field(None, gt=0, le=1024, description="modified networks evaluated together "
                                        "in one batched forward pass (default: 16, or 1 for conv nets on a CPU)")
    zoo_width: int | None = Field(None, gt=0, le=4096, description="width of the zoo networks (vgg channels of the "
                                  "first layer, resnet18's k; default: the paper's)")
    zoo_init: Init = Field("paper", description="initializer of the zoo networks ('paper': each network's paper's)")
    augment: AugmentSpec = AugmentSpec()

    @field_validator("networks")
    @classmethod
    def _networks_known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("choose at least one network")
        for name in v:
            if not (FCN_NAME.match(name) or name in ("lenet", "resnet") or name in ZOO_NETWORKS):
                raise ValueError(f"unknown network {name!r}; use fcnDxW (e.g. fcn3x256), lenet, resnet or one of "
                                 f"{', '.join(ZOO_NETWORKS)}")
            m = FCN_NAME.match(name)
            if m and (int(m.group(1)) < 1 or int(m.group(2)) < 1):
                raise ValueError(f"network {name!r} needs at least one hidden layer of positive width")
        return distinct(v, "networks")

    @field_validator("lenet_widths")
    @classmethod
    def _lenet_widths_positive(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be positive, got {v}")
        return v

    @field_validator("checkpoint_epochs")
    @classmethod
    def _epochs_non_negative(cls, v: list[int]) -> list[int]:
        if any(e < 0 for e in v):
            raise ValueError(f"checkpoint epochs must be non-negative, got {v}")
        return v

    help_texts = {"lr": "learning rate of the fcn and lenet networks", "epochs": "epoch budget of the fcn and lenet "
                  "networks", "dataset": "dataset of the fcn and lenet networks (see `genlab list`)"}

    @model_validator(mode="after")
    def _networks_take_their_data(self) -> "LayerRobustnessSpec":
        if "lenet" in self.networks and not model_takes("lenet", self.data.dataset):
            raise ValueError(f"network 'lenet' needs image inputs, and dataset {self.data.dataset!r} has none; "
                             "leave lenet out of networks or choose an image dataset")
        for name in self.networks:
            if name in ZOO_NETWORKS and not model_takes(name, self.data.dataset, **zoo_options(self)):
                raise ValueError(f"network {name!r} cannot take the inputs of dataset {self.data.dataset!r}; "
                                 "leave it out of networks or choose an image dataset")
        return self

    def on_dataset(self, name: str) -> "LayerRobustnessSpec":
        """fcn and lenet networks train on ``name``, the residual net too when it can; a network that
        cannot take ``name``'s inputs (lenet on 1-D signals) is left out."""
        resnet_choices = typing.get_args(ResNetSpec.model_fields["dataset"].annotation)
        networks = [n for n in self.networks if n not in ("lenet", *ZOO_NETWORKS)
                    or model_takes(n, name, **(zoo_options(self) if n in ZOO_NETWORKS else {}))]
        return self.replace(dataset=name, networks=networks,
                            **({"resnet_dataset": name} if name in resnet_choices else {}))

    presets = {
        # resnet_lr 0.01: at 0.02 the un-normalized residual net trained to 97-99% in three of four arithmetic
        # variants (fp32/bf16, 1 or 2 threads) and stalled at 24% in the fourth; at 0.01 all four reach 97.5-98.3%
        "quick": dict(optimizer="sgd", lr=0.03, momentum=0.9, batch_size=64, epochs=15, seeds=[0],
                      checkpoint_epochs=[0, 1, 2, 5, 10], draws=3, resnet_epochs=20, resnet_lr=0.01),
        "paper": dict(optimizer="sgd", lr=0.03, momentum=0.9, batch_size=64, epochs=100, seeds=[0, 1, 2],
                      draws=5, resnet_epochs=100, resnet_lr=0.01),
        "cifar": cifar_preset("layer-robustness"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(networks=["fcn2x32", "lenet", "resnet"], optimizer="sgd", lr=0.05, epochs=2, resnet_epochs=2,
                      n_train=200, n_test=100, lenet_widths=[16], resnet_channels=8, resnet_blocks=2, batch_size=50,
                      draws=2, seeds=[0]),
    }


@dataclass(frozen=True)
class NetworkPlan:
    """How one network of the study is built and trained."""

    name: str
    family: str                  # model family of genlab.models
    dataset: str
    options: dict
    init: str
    lr: float
    epochs: int
    granularity: str             # layers reset alone, or residual blocks too


def zoo_options(spec: LayerRobustnessSpec) -> dict:
    """Builder options of the zoo networks (their width, when set)."""
    return {} if spec.zoo_width is None else {"width": spec.zoo_width}


def network_plan(spec: LayerRobustnessSpec, name: str) -> NetworkPlan:
    """How network ``name`` is built and trained; ``init="paper"`` is resolved to the network's scheme."""
    fcn = FCN_NAME.match(name)
    if fcn:
        widths = [int(fcn.group(2))] * int(fcn.group(1))
        return NetworkPlan(name, "mlp", spec.data.dataset, {"widths": widths, "dropout": spec.dropout},
                           resolve_init("mlp", spec.init), spec.optim.lr, spec.optim.epochs, "layer")
    if name == "lenet":
        return NetworkPlan(name, "lenet", spec.data.dataset,
                           {"widths": list(spec.lenet_widths), "dropout": spec.dropout},
                           resolve_init("lenet", spec.init), spec.optim.lr, spec.optim.epochs, "layer")
    if name in ZOO_NETWORKS:
        return NetworkPlan(name, name, spec.data.dataset, zoo_options(spec), resolve_init(name, spec.zoo_init),
                           spec.optim.lr, spec.optim.epochs, "both" if name in RESIDUAL_NETWORKS else "layer")
    return NetworkPlan(name, "resnet", spec.resnet.dataset,
                       {"channels": spec.resnet.channels, "blocks": spec.resnet.blocks},
                       resolve_init("resnet", spec.resnet.init), spec.resnet.lr, spec.resnet.epochs, "both")


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as plain Python scalars (missing values as None), ready for JSON."""
    rows = []
    for record in table.to_dict("records"):
        row = {}
        for key, value in record.items():
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                row[key] = None
            elif isinstance(value, np.generic):
                row[key] = value.item()
            else:
                row[key] = value
        rows.append(row)
    return rows


def heatmap_matrix(results: pd.DataFrame, network: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean test error of ``network`` (over seeds and draws): layers x (checkpoints + "re-rand."),
    in layer order, and the layers' labels."""
    sub = results[results["model"] == network]
    reinit = sub[sub["operation"] == "reinit"]
    grid = reinit.pivot_table(index="layer_index", columns="checkpoint_epoch", values="test_err", aggfunc="mean")
    grid.columns = [str(int(c)) for c in grid.columns]
    rerand = sub[sub["operation"] == "rerandomize"].groupby("layer_index")["test_err"].mean()
    grid["re-rand."] = rerand
    labels = sub.drop_duplicates("layer_index").set_index("layer_index")[["layer", "layer_label", "layer_kind"]]
    return grid.sort_index(), labels.loc[grid.sort_index().index]


def measured_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows of a results table read back from CSV (diverged models dropped), with
    layer names as strings (a CSV reader turns names like ``1`` into numbers)."""
    if results.empty or "operation" not in results:
        return results
    rows = results[results["operation"].notna()].copy()
    rows["layer"] = rows["layer"].map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return rows


@register
class LayerRobustness(Study):
    name = "layer-robustness"
    title = "Layer robustness: re-initializing and re-randomizing one layer at a time"
    question = ("Does a trained network need every layer's learned weights, or would some layers do as well "
                "at their initial values?")
    citation = "Zhang, Bengio & Singer 2019, Are all layers created equal? (JMLR 2022), Fig. 1-2 and Sec. 3"
    Spec = LayerRobustnessSpec
    result_columns = ("model", "layer", "operation", "checkpoint_epoch", "draw", "test_acc", "test_err",
                      "trained_test_acc", "verdict", "dist_l2", "dist_rel")

    def units(self, spec: LayerRobustnessSpec) -> list[Unit]:
        return [Unit(name, {"network": name}) for name in spec.networks]

    def estimate_seconds(self, spec: LayerRobustnessSpec) -> float | None:
        from genlab.estimate import CPU_FLOPS, training_flops

        seconds_per_epoch = {"mlp": 0.35, "lenet": 1.3, "resnet": 0.65}  # one model, mnist5k / digits, incl. evaluation
        total = 0.0
        for p in (network_plan(spec, n) for n in spec.networks):
            if p.family in seconds_per_epoch:
                total += seconds_per_epoch[p.family] * p.epochs * len(spec.seeds)
            else:  # a zoo network: its training FLOPs at the CPU rate genlab assumes
                n_train = spec.data.n_train or 4000
                flops = training_flops(p.family, p.dataset, n_train, p.epochs, **p.options)
                total += flops * len(spec.seeds) / CPU_FLOPS
        return float(total)

    def run_unit(self, spec: LayerRobustnessSpec, unit: Unit, ctx) -> UnitResult:
        network = unit["network"]
        plan = network_plan(spec, network)
        data = spec.data.load(plan.dataset)
        jobs = [ModelJob(f"{network}-seed{seed}",
                         build_model(plan.family, data.input_shape, data.num_classes, init=plan.init, seed=seed,
                                     **plan.options),
                         seed=seed, y_train=data.y_train, augment=spec.augment.build())
                for seed in spec.seeds]
        wanted = [e for e in spec.checkpoint_epochs if e <= plan.epochs]
        saved = resolve_checkpoint_epochs(wanted or None, plan.epochs)
        config = spec.optim.train_config(spec.loss, lr=plan.lr, epochs=plan.epochs, eval_every=plan.epochs,
                                         checkpoint_epochs=tuple(saved), device=spec.device)
        ctx.progress.start_unit(network, plan.epochs, len(jobs))
        outcome = train_models(jobs, [InputGroup(data.x_train, data.x_test, data.y_test)], config,
                               on_epoch=ctx.progress.epoch, snapshot=ctx.snapshot())
        architecture = jobs[0].module
        groups = layer_groups(architecture, plan.granularity)
        x_test, y_test = data.x_test.to(spec.device), data.y_test.to(spec.device)
        rows = []
        for k, seed in enumerate(spec.seeds):
            result = outcome.outcomes[k]
            if result.diverged:
                rows.append({"model": network, "seed": seed, "dataset": plan.dataset, "diverged": True,
                             "operation": None, "layer": None})
                continue
            table = trained_model_table(outcome, k, architecture, x_test, y_test, groups=groups, init=plan.init,
                                        draws=spec.draws, threshold=spec.threshold, seed=seed, loss=spec.loss,
                                        models_per_pass=spec.models_per_pass)
            info = {"model": network, "seed": seed, "dataset": plan.dataset, "family": plan.family, "init": plan.init,
                    "lr": plan.lr, "epochs": plan.epochs, "final_epoch": plan.epochs,
                    "trained_train_acc": result.train_acc, "engine_test_acc": result.test_acc,
                    "total_params": sum(p.numel() for p in architecture.parameters()), "diverged": False}
            for key, value in reversed(list(info.items())):
                table.insert(0, key, value)
            rows += _records(table)
        curves = [{**c, "model": network, "seed": spec.seeds[[j.key for j in jobs].index(c["key"])]}
                  for c in outcome.curves]
        return UnitResult(rows, curves)

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        results = measured_rows(results)
        networks = [n for n in spec.networks if n in set(results.get("model", []))]
        if not networks:
            return []
        return [self._plot_heatmaps(results, networks, spec, out_dir),
                self._plot_distances(results, networks, out_dir)]

    def _plot_heatmaps(self, results: pd.DataFrame, networks: list[str], spec, out_dir: Path) -> Path:
        ncols = min(2, len(networks))
        nrows = math.ceil(len(networks) / ncols)
        rows_max = max(len(heatmap_matrix(results, n)[0]) for n in networks)
        fig, axes = figure(ncols, nrows, width=5.6, height=1.4 + 0.34 * rows_max)
        for ax in axes.flat[len(networks):]:
            ax.set_visible(False)
        for ax, network in zip(axes.flat, networks):
            grid, labels = heatmap_matrix(results, network)
            values = grid.to_numpy(dtype=float)
            image = ax.imshow(values, cmap="magma_r", vmin=0.0, vmax=0.9, aspect="auto")
            for (i, j), v in np.ndenumerate(values):
                if not np.isnan(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.45 else "black")
            ax.axvline(len(grid.columns) - 1.5, color="white", lw=3)
            blocks = np.flatnonzero(labels["layer_kind"].to_numpy() == "block")
            if len(blocks) and blocks[0] > 0:
                ax.axhline(blocks[0] - 0.5, color="white", lw=3)
            ax.set_xticks(range(len(grid.columns)), grid.columns, fontsize=8)
            ax.set_yticks(range(len(labels)), [f"{r.layer}: {r.layer_label}" for r in labels.itertuples()], fontsize=7)
            ax.set_xlabel("checkpoint epoch the layer is reset to  |  re-randomized", fontsize=8)
            ax.grid(False)
            sub = results[results["model"] == network]
            ax.set_title(f"{network} on {sub['dataset'].iloc[0]} ({sub['seed'].nunique()} seed(s)): "
                         f"trained test error {100 * (1 - sub['trained_test_acc'].mean()):.1f}%", fontsize=9)
            colorbar_axis = ax.inset_axes([1.02, 0.0, 0.03, 1.0])
            fig.colorbar(image, cax=colorbar_axis).set_label("test error (cells: %)", fontsize=8)
        fig.suptitle("Test error after resetting one layer, all others trained "
                     "(epoch 0 = its initial value; last column: drawn afresh from the initializer)", fontsize=10)
        return save(fig, out_dir, "layer_robustness_heatmaps")

    def _plot_distances(self, results: pd.DataFrame, networks: list[str], out_dir: Path) -> Path:
        verdicts = layer_verdicts(results)
        fig, axes = figure(len(networks), 2, width=4.2, height=2.9)
        colors = {"critical": COLORS[3], "robust": COLORS[0]}
        for col, network in enumerate(networks):
            v = verdicts[verdicts["model"] == network].groupby(["layer_index", "layer"], as_index=False).agg(
                dist_l2=("dist_l2", "mean"), dist_rel=("dist_rel", "mean"), kind=("layer_kind", "first"),
                critical=("verdict", lambda s: (s == "critical").mean()))
            bar_colors = [colors["critical"] if c >= 0.5 else colors["robust"] for c in v["critical"]]
            hatches = ["//" if k == "block" else "" for k in v["kind"]]
            for row, (column, label) in enumerate([("dist_l2", r"$\|w_T - w_0\|_2$"),
                                                    ("dist_rel", r"$\|w_T - w_0\|_2 \, / \, \|w_0\|_2$")]):
                ax = axes[row, col]
                ax.bar(range(len(v)), v[column], color=bar_colors, hatch=hatches, edgecolor="white")
                ax.set_xticks(range(len(v)), v["layer"], rotation=60, ha="right", fontsize=7)
                ax.set_ylabel(label)
                ax.set_xlabel("layer (hatched: whole residual block)" if "block" in set(v["kind"]) else "layer")
                ax.set_title(f"{network}: {'distance' if row == 0 else 'relative distance'} from initialization",
                             fontsize=9)
        handles = [Patch(color=colors[k], label=k) for k in ("critical", "robust")]
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8,
                   title="verdict: does resetting the layer to its initial value cost more than the threshold? "
                         "(most seeds)", title_fontsize=9)
        return save(fig, out_dir, "layer_robustness_distances")

    # ----- summary --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        lost = results[results["diverged"].astype(bool)] if "diverged" in results else results.iloc[:0]
        lost_text = ("; diverged (left out): " + ", ".join(f"{r.model} seed {r.seed}" for r in lost.itertuples())
                     if len(lost) else "")
        results = measured_rows(results)
        if results.empty:
            return Summary("no network finished training" + lost_text, "No measurements to read.", [],
                           [("every network trained without diverging", False)])
        per_layer = per_layer_means(layer_verdicts(results))
        parts = []
        for network in [n for n in spec.networks if n in set(per_layer["model"])]:
            p = per_layer[(per_layer["model"] == network) & (per_layer["kind"] == "layer")]
            crit = p[p["critical"] >= 0.5]["layer"].tolist()
            parts.append(f"{network}: {len(crit)}/{len(p)} layers critical"
                         + (f" ({', '.join(crit)})" if crit else ""))
        verdict = "; ".join(parts) + lost_text
        reading = self._reading(per_layer, results, spec)
        refs, checks = self._fcn_reference(per_layer, results)
        checks += claim_checks(per_layer)
        checks.append(("every network trained without diverging", not len(lost)))
        return Summary(verdict, reading, refs, checks)

    def _reading(self, per_layer: pd.DataFrame, results: pd.DataFrame, spec) -> str:
        sentences = []
        seeds = results["seed"].nunique()
        for network in [n for n in spec.networks if n in set(per_layer["model"])]:
            p = per_layer[per_layer["model"] == network]
            layers = p[p["kind"] == "layer"]
            trained = layers["trained"].mean()
            worst = layers.loc[layers["reinit0"].idxmin()]
            farthest = layers.loc[layers["dist_rel"].idxmax()]
            robust = layers[layers["critical"] < 0.5]
            text = (f"{network} on {results[results.model == network]['dataset'].iloc[0]} (trained test accuracy "
                    f"{trained:.1%}, mean of {seeds} seed(s)): with one layer reset to its initial value the test "
                    "accuracy is " + ", ".join(f"{r.layer}: {r.reinit0:.1%}" for r in layers.itertuples())
                    + f"; the most critical layer is {worst.layer} "
                    f"({100 * (trained - worst.reinit0):.1f} points lost). "
                    f"{len(robust)} of {len(layers)} layers are robust (within {100 * spec.threshold:.0f} points). "
                    f"Re-randomizing a layer leaves {layers['rerand'].min():.1%}-{layers['rerand'].max():.1%}. "
                    f"The layer that moved farthest from its initialization relative to its size is {farthest.layer} "
                    f"(||w_T - w_0|| / ||w_0|| = {farthest.dist_rel:.2f}), and it is "
                    f"{'critical' if farthest.critical >= 0.5 else 'robust'}. ")
            blocks = p[p["kind"] == "block"]
            if len(blocks):
                text += ("Resetting a whole residual block to its initial value leaves " + ", ".join(
                    f"{r.layer}: {r.reinit0:.1%}" for r in blocks.itertuples()) + ". ")
            sentences.append(text)
        return "".join(sentences).strip()

    def _fcn_reference(self, per_layer: pd.DataFrame, results: pd.DataFrame):
        fcn = per_layer[per_layer["model"] == "fcn3x256"].sort_values("layer_index")
        if fcn.empty:
            return [], []
        trained = fcn["trained"].mean()
        first, later = fcn.iloc[0], fcn.iloc[1:]
        refs = [("FCN 3x256 trained test accuracy", "95.9% (blog, MNIST, 100 epochs)", f"{trained:.1%}"),
                ("reset first layer to init", "56.6%", f"{first.reinit0:.1%}"),
                ("reset later layers to init", "92-96%", f"{later.reinit0.min():.1%}-{later.reinit0.max():.1%}"),
                ("re-randomize any layer", "~10%", f"{fcn.rerand.min():.1%}-{fcn.rerand.max():.1%}"),
                ("distance from init: first / middle / output", "~9.7 / ~6.5 / ~1.4",
                 f"{first.dist_l2:.1f} / {later.iloc[:-1].dist_l2.mean():.1f} / {later.iloc[-1].dist_l2:.1f}"
                 if len(later) > 1 else f"{first.dist_l2:.1f}")]
        checks = [("FCN 3x256: re-randomizing any layer drops test accuracy to <= 20%", bool(fcn.rerand.max() <= 0.20)),
                  ("FCN 3x256: re-initializing the first layer to its initial value costs >= 20 points",
                   bool(trained - first.reinit0 >= 0.20)),
                  ("FCN 3x256: re-initializing any later layer to its initial value stays within 5 points",
                   bool(len(later) and (trained - later.reinit0).max() <= 0.05))]
        return refs, checks


def per_layer_means(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer): seed means of the trained, reset-to-init and re-randomized test accuracies, the
    distances from init, and the fraction of seeds calling the layer critical."""
    return verdicts.groupby(["model", "layer_index", "layer"], as_index=False).agg(
        trained=("trained_test_acc", "mean"), reinit0=("reinit0_test_acc", "mean"),
        rerand=("rerandomized_test_acc", "mean"), dist_l2=("dist_l2", "mean"), dist_rel=("dist_rel", "mean"),
        critical=("verdict", lambda s: (s == "critical").mean()), kind=("layer_kind", "first"))


RERANDOMIZE_MARGIN = 0.10  # measured: smallest margin 18.4 points over 4 networks (quick preset), median ~70


def claim_checks(per_layer: pd.DataFrame) -> list[tuple[str, bool]]:
    """Zhang, Bengio & Singer's two claims on the seed-averaged per-layer numbers: robustness to resetting a layer
    to its initial value does not carry over to re-randomizing it (for every layer of every network,
    re-randomizing costs >= RERANDOMIZE_MARGIN more), and a fully connected network has a critical first layer
    and at least one robust later layer."""
    layers = per_layer[per_layer["kind"] == "layer"]
    margin = layers["reinit0"] - layers["rerand"]
    checks = [(f"every layer of every network: re-randomizing costs >= {100 * RERANDOMIZE_MARGIN:.0f} points more "
               "than resetting it to its initial value", bool(len(layers) and (margin >= RERANDOMIZE_MARGIN).all()))]
    fcns = [m for m in dict.fromkeys(layers["model"]) if str(m).startswith("fcn")]
    if fcns:
        def critical_first_robust_later(model: str) -> bool:
            p = layers[layers["model"] == model].sort_values("layer_index")
            return bool(p["critical"].iloc[0] >= 0.5 and (p["critical"].iloc[1:] < 0.5).any())

        checks.append(("every FC network: the first layer is critical and at least one later layer is robust",
                       all(critical_first_robust_later(m) for m in fcns)))
    return checks
