"""Description length of the training labels under a network (Blier & Ollivier 2018, "The
description length of deep learning models", NeurIPS).

Minimum description length: a model class is good for some data when it lets a sender transmit
the data in few bits. For labels y_1..y_n given inputs x_1..x_n, the *prequential* (online) code
sends them block by block: the first block [0, t_1) with the uniform code (log2 K bits per label),
then for each later block [t_s, t_{s+1}) a network is trained on everything sent so far and the
block is coded with its predictive distribution, -log2 p(y | x) bits per label (arithmetic
coding achieves this to within 2 bits overall). The receiver can decode because it replays the
same training, so no parameter is ever transmitted. Block boundaries double (t_1 = 64, 128, ...).

Baselines: the uniform code n log2 K and the naive two-part code that sends the parameters as
32-bit floats (32 x #parameters bits, before even coding the labels). Blier & Ollivier find that
deep nets code true labels far below both; on random labels no model beats the uniform code.

Training per block (what keeps the code honest): the network is trained from scratch on the data
already sent, minus a seeded validation split of it; among the checkpoints at epochs 0, 1, 2, 4,
8, ... the one with the lowest validation loss codes the next block. The split and the choice use
only transmitted data, so the receiver can replay them (no peeking at the block being coded);
epoch 0 (the initial network, close to uniform) is always a candidate, so a block that the
network cannot predict costs about the uniform code instead of an overfitted model's bits.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import NullFormatter
from pydantic import Field, field_validator

from genlab.data import corrupt_labels
from genlab.engine import InputGroup, ModelJob, train_models
from genlab.models import MODELS, build_model
from genlab.plotting import COLORS, figure, save
from genlab.probes.description_length import (
    block_boundaries,
    checkpoint_epochs,
    code_block,
    epoch_budget,
    parameter_code_bits,
    uniform_code_bits,
    validation_split,
)
from genlab.seeding import derive_seed
from genlab.spec import DataSpec, OptimSpec, StudySpec, distinct
from genlab.spec.fields import Init
from genlab.studies.base import Study, Summary, Unit, UnitResult, register
from genlab.studies.cifar import cifar_preset

LabelKind = Literal["true", "random"]


def parse_architecture(name: str) -> tuple[str, list[int] | None]:
    """'mlp-512-512' -> ('mlp', [512, 512]); 'lenet' -> ('lenet', None) (the family's widths).

    The family is the longest registered model name that ``name`` equals or starts with followed by
    ``-`` (so 'inception-small', 'alexnet-small' and 'lenet-li' are families, and 'lenet-li-84' is
    'lenet-li' with widths [84]); the rest are the hidden widths.
    """
    family = max((m for m in MODELS if name == m or name.startswith(m + "-")), key=len, default=None)
    if family is None:
        raise ValueError(f"architecture {name!r}: unknown model family {name.split('-')[0]!r}; "
                         f"choose one of {', '.join(MODELS)}")
    widths = name[len(family) + 1:].split("-") if name != family else []
    try:
        parsed = [int(w) for w in widths]
    except ValueError:
        raise ValueError(f"architecture {name!r}: widths must be integers, as in mlp-512-512") from None
    if any(w <= 0 for w in parsed):
        raise ValueError(f"architecture {name!r}: widths must be positive")
    return family, parsed or None


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


class DescriptionLengthSpec(StudySpec):
    """Networks are trained with cross-entropy: the code length of a label is the log-loss of its prediction."""

    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    init: Init = Field("default", description="weight initializer")
    architectures: list[str] = Field(["mlp-64", "mlp-512-512", "lenet"], min_length=1,
                                     description="models that code the labels: family[-width-...], e.g. mlp-64, "
                                     "mlp-512-512, lenet")
    labels: list[LabelKind] = Field(["true", "random"], min_length=1, description="label sets to code: true and/or "
                                    "uniformly random labels")
    first_block: int = Field(64, ge=2, description="examples in the first block, sent with the uniform code")
    growth: float = Field(2.0, gt=1.0, le=16.0, description="each block boundary is this factor times the previous one")
    val_fraction: float = Field(0.2, gt=0.0, lt=0.5, description="fraction of the data already sent held out to choose "
                                "the stopping epoch")
    min_steps: int = Field(100, ge=1, description="at least this many optimizer steps per block (small blocks get more "
                           "epochs)")

    @field_validator("architectures")
    @classmethod
    def _architectures_known(cls, v: list[str]) -> list[str]:
        for name in v:
            parse_architecture(name)
        return distinct(v, "architectures")

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[str]) -> list[str]:
        return distinct(v, "labels")

    presets = {
        "quick": dict(optimizer="adam", lr=0.001, batch_size=64, epochs=16, n_train=2048, n_test=100,
                      architectures=["mlp-64", "mlp-512-512", "lenet"], seeds=[0]),
        "paper": dict(optimizer="adam", lr=0.001, batch_size=64, epochs=64, first_block=64,
                      architectures=["mlp-64", "mlp-512-512", "lenet"], seeds=[0, 1, 2]),
        "cifar": cifar_preset("description-length"),  # the paper's CIFAR-10 experiment (genlab.studies.cifar)
        "smoke": dict(optimizer="adam", lr=0.003, batch_size=32, epochs=2, n_train=128, n_test=20, first_block=32,
                      min_steps=2, architectures=["mlp-16"], seeds=[0]),
    }


@register
class DescriptionLength(Study):
    name = "description-length"
    title = "Description length: how many bits a network needs to send the training labels"
    question = ("Do networks compress their training labels below the uniform code and the parameter count - and "
                "can they compress random labels?")
    citation = "Blier & Ollivier 2018, The description length of deep learning models (prequential code)"
    Spec = DescriptionLengthSpec
    result_columns = ("model", "labels", "seed", "block_start", "block_end", "bits", "cumulative_bits",
                      "uniform_bits", "param_bits")

    def estimate_seconds(self, spec: DescriptionLengthSpec) -> float:
        n = spec.data.n_train or 4000
        return (25.0 * len(spec.seeds) * len(spec.labels) / 2 * (n / 2048) * (spec.optim.epochs / 16)
                * len(spec.architectures) / 3)

    def units(self, spec: DescriptionLengthSpec) -> list[Unit]:
        return [Unit(name, {"architecture": name}) for name in spec.architectures]

    def run_unit(self, spec: DescriptionLengthSpec, unit: Unit, ctx) -> UnitResult:
        architecture = unit["architecture"]
        family, widths = parse_architecture(architecture)
        data = spec.data.load()
        n, k = len(data.y_train), data.num_classes
        ends = block_boundaries(n, spec.first_block, spec.growth)
        streams = _label_streams(spec, data)
        options = {"widths": widths} if widths else {}
        template = build_model(family, data.input_shape, k, init=spec.init, seed=0, **options)
        params = sum(p.numel() for p in template.parameters())
        coded: dict[tuple[str, int], list[dict]] = {key: [] for key in streams}
        for start, end in zip(ends[:-1], ends[1:]):
            block = ctx.cached(f"block-{start}", functools.partial(self._code_block, spec, architecture, family,
                                                                   options, data, streams, start, end, ctx))
            for row in block:
                coded[(row["labels"], row["seed"])].append(row)
        rows = []
        for (labels, seed), blocks in coded.items():
            first = {"block_start": 0, "block_end": ends[0], "bits": uniform_code_bits(ends[0], k),
                     "coded_with": "uniform", "chosen_epoch": None, "val_loss": None, "fit_examples": 0}
            total = 0.0
            for block in [first, *blocks]:
                total += block["bits"]
                size = block["block_end"] - block["block_start"]
                rows.append({"model": architecture, "family": family, "labels": labels, "seed": seed,
                             "block_start": block["block_start"], "block_end": block["block_end"], "block_size": size,
                             "bits": block["bits"], "bits_per_example": block["bits"] / size,
                             "cumulative_bits": total, "uniform_bits": uniform_code_bits(block["block_end"], k),
                             "param_bits": parameter_code_bits(params), "params": params, "num_classes": k,
                             "coded_with": block["coded_with"], "chosen_epoch": block["chosen_epoch"],
                             "val_loss": block["val_loss"], "fit_examples": block["fit_examples"],
                             "dataset": spec.data.dataset})
        return UnitResult(rows)

    def _code_block(self, spec, unit, family, options, data, streams, start: int, end: int, ctx) -> list[dict]:
        """Train on [0, start) (minus its validation split) and code [start, end); one engine call."""
        groups: list[InputGroup] = []
        group_of_seed: dict[int, int] = {}  # the examples in one seed's order are shared by its label sets
        jobs, keys = [], list(streams)
        for labels, seed in keys:
            order, y = streams[(labels, seed)]
            fit, val = validation_split(start, spec.val_fraction, derive_seed(seed, "mdl-val", start))
            if seed not in group_of_seed:
                group_of_seed[seed] = len(groups)
                groups.append(InputGroup(data.x_train[order[fit]], data.x_train[order[val]],
                                         data.y_train[order[val]]))
            group_index = group_of_seed[seed]
            model = build_model(family, data.input_shape, data.num_classes, init=spec.init,
                                seed=derive_seed(seed, unit, "init"), **options)
            jobs.append(ModelJob(f"{labels}|seed{seed}|t{start}", model, seed=derive_seed(seed, "mdl-order", start),
                                 y_train=y[fit], y_test=y[val], inputs=group_index))
        n_fit = len(jobs[0].y_train)
        budget = epoch_budget(spec.optim.epochs, spec.min_steps, n_fit, spec.optim.batch_size)
        candidates = checkpoint_epochs(budget)
        ctx.progress.start_unit(f"{unit}: code [{start}, {end})", budget, len(jobs))
        config = spec.optim.train_config("ce", epochs=budget, eval_every=1, eval_train=False,
                                         checkpoint_epochs=candidates, device=spec.device)
        outcome = train_models(jobs, groups, config, on_epoch=ctx.progress.epoch)
        x_next = torch.stack([data.x_train[streams[key][0][start:end]] for key in keys])
        y_next = torch.stack([streams[key][1][start:end] for key in keys])
        bits, chosen = code_block(outcome, [j.key for j in jobs], candidates, x_next, y_next, spec.device)
        val_loss = {(c["key"], c["epoch"]): c["test_loss"] for c in outcome.curves}
        return [{"labels": labels, "seed": seed, "block_start": start, "block_end": end, "bits": float(bits[i]),
                 "coded_with": "model", "chosen_epoch": int(chosen[i]),
                 "val_loss": float(val_loss[(jobs[i].key, chosen[i])]), "fit_examples": n_fit}
                for i, (labels, seed) in enumerate(keys)]

    # ----- figures --------------------------------------------------------------------------
    def plot(self, results: pd.DataFrame, curves: pd.DataFrame, spec, out_dir: Path) -> list[Path]:
        fig, axes = figure(3, width=4.8, height=3.8)
        models = list(dict.fromkeys(results["model"]))
        mean = results.groupby(["model", "labels", "block_end"], sort=False).agg(
            cumulative_bits=("cumulative_bits", "mean"), bits_per_example=("bits_per_example", "mean"),
            uniform_bits=("uniform_bits", "first")).reset_index()
        styles = {"true": "-o", "random": "--x"}
        ax = axes[0, 0]
        for i, model in enumerate(models):
            for labels, part in mean[mean["model"] == model].groupby("labels"):
                ax.plot(part["block_end"], part["cumulative_bits"] / 1000, styles.get(labels, ":"), ms=4,
                        color=COLORS[i % 10], label=f"{model}, {labels} labels")
        uniform = mean.drop_duplicates("block_end").sort_values("block_end")
        ax.plot(uniform["block_end"], uniform["uniform_bits"] / 1000, color="black", lw=1, ls=":", label="uniform code")
        _block_axis(ax, uniform["block_end"])
        ax.set_xlabel("examples sent")
        ax.set_ylabel("cumulative code length (kbits)")
        ax.set_title("(a) prequential code length")
        ax.legend(fontsize=6.5)

        ax = axes[0, 1]
        coded = mean[mean["block_end"] > mean["block_end"].min()]
        for i, model in enumerate(models):
            for labels, part in coded[coded["model"] == model].groupby("labels"):
                ax.plot(part["block_end"], part["bits_per_example"], styles.get(labels, ":"), ms=4,
                        color=COLORS[i % 10], label=f"{model}, {labels}")
        k = int(results["num_classes"].iloc[0])
        ax.axhline(math.log2(k), color="black", lw=1, ls=":", label=f"uniform: log2 {k} = {math.log2(k):.2f}")
        _block_axis(ax, coded["block_end"])
        ax.set_xlabel("end of the coded block (examples)")
        ax.set_ylabel("bits per label in the block")
        ax.set_title("(b) cost per label as the data grows")
        ax.legend(fontsize=6.5)

        ax = axes[0, 2]
        totals = _totals(results)
        x = np.arange(len(models))
        label_sets = list(dict.fromkeys(results["labels"]))
        width = 0.8 / (len(label_sets) + 1)
        for j, labels in enumerate(label_sets):
            part = totals[totals["labels"] == labels].groupby("model")[["total_bits"]].mean().reindex(models)  # seeds
            ax.bar(x + j * width, part["total_bits"] / 1000, width, color=COLORS[j + 3], label=f"prequential, {labels} "
                   "labels")
        first = totals.drop_duplicates("model").set_index("model").reindex(models)
        ax.bar(x + len(label_sets) * width, first["param_bits"] / 1000, width, color="gray", label="32 bits x "
               "parameters")
        ax.axhline(first["uniform_total"].iloc[0] / 1000, color="black", ls=":", lw=1, label="uniform code")
        ax.set_xticks(x + width * len(label_sets) / 2, models)
        ax.set_yscale("log")
        ax.set_ylabel("code length for all labels (kbits)")
        ax.set_title("(c) total code length")
        ax.legend(fontsize=6.5)
        fig.suptitle(f"Prequential description length of {int(results['block_end'].max())} {spec.data.dataset} labels")
        return [save(fig, out_dir, "description_length")]

    # ----- reading --------------------------------------------------------------------------
    def summarize(self, results: pd.DataFrame, curves: pd.DataFrame, spec) -> Summary:
        totals = _totals(results)
        by = totals.groupby(["model", "labels"]).agg(ratio=("ratio", "mean"), total=("total_bits", "mean"),
                                                     param_bits=("param_bits", "first"),
                                                     uniform=("uniform_total", "first")).reset_index()
        true, rand = by[by["labels"] == "true"], by[by["labels"] == "random"]
        n = int(results["block_end"].max())
        uniform = float(by["uniform"].iloc[0])
        parts = []
        for model in dict.fromkeys(by["model"]):
            params = int(totals.loc[totals.model == model, "params"].iloc[0])
            naive = by.loc[by.model == model, "param_bits"].iloc[0] / 1000
            line = f"{model} ({params:,} parameters, naive code {naive:,.0f} kbits)"
            for _, row in by[by["model"] == model].iterrows():
                line += f": {row['labels']} labels {row['total'] / 1000:.2f} kbits = {row['ratio']:.1%} of uniform"
            parts.append(line)
        best = true.loc[true["ratio"].idxmin()] if len(true) else None
        verdict = ((f"true labels coded in {best['ratio']:.1%} of the uniform code at best "
                    f"({best['model']})" if best is not None else "no true-label run")
                   + (f"; random labels need {rand['ratio'].min():.1%}..{rand['ratio'].max():.1%} of "
                      "it" if len(rand) else ""))
        beats_params = bool(len(true)) and bool((true["total"] < true["param_bits"]).all())
        reading = (f"Labels of {n} {spec.data.dataset} training examples, sent block by block (first block of "
                   f"{spec.first_block} uniformly, boundaries x{spec.growth:g}), cost {uniform / 1000:.2f} kbits with "
                   "the uniform code. "
                   "Prequential code per model: " + "; ".join(parts) + ". "
                   + (f"On true labels every model's code is {'below' if beats_params else 'NOT below'} its own naive "
                      "parameter code, "
                      "so counting parameters overstates what the network needs to describe the "
                      "data. " if len(true) else "")
                   + _last_block_reading(results)
                   + _random_reading(rand))
        refs = [("prequential code, true labels", "far below uniform and parameter codes (MNIST, CIFAR-10)",
                 f"{true['ratio'].min():.1%}..{true['ratio'].max():.1%} of uniform" if len(true) else "n/a"),
                ("random labels", "no compression (about the uniform code)",
                 f"{rand['ratio'].min():.1%}..{rand['ratio'].max():.1%} of uniform" if len(rand) else "n/a")]
        checks = []
        if len(true):
            last = _last_block_fraction(results)
            checks.append(("true labels: every model codes them in at most half the uniform code",
                           bool((true["ratio"] <= 0.5).all())))
            checks.append((f"true labels: the code per label falls as data accumulate - the last block costs <= "
                           f"{LAST_BLOCK_MAX:.0%} of log2 K bits per label for every model",
                           bool(len(last) and (last <= LAST_BLOCK_MAX).all())))
        if len(rand):
            low, high = RANDOM_BAND
            checks.append((f"random labels: every model within {low:.0%}-{high:.0%} of the uniform code (no "
                           "compression, and no leaked labels or lost bits)",
                           bool(((rand["ratio"] >= low) & (rand["ratio"] <= high)).all())))
        return Summary(verdict, reading, refs, checks)


LAST_BLOCK_MAX = 0.25  # of log2 K bits per label, in the last block of true labels
RANDOM_BAND = (0.99, 1.02)  # random labels' prequential code over the uniform code


def _last_block_fraction(results: pd.DataFrame) -> pd.Series:
    """Per model, the bits per label of the last block on true labels (seed-averaged) over log2 K: Blier &
    Ollivier's code is short because the model coding each block learns from the labels sent before it."""
    true = results[results["labels"] == "true"]
    last = true[true["block_end"] == true["block_end"].max()]
    per_label = last.groupby("model")["bits_per_example"].mean()
    return per_label / math.log2(int(results["num_classes"].iloc[0]))


def _block_axis(ax, ends: pd.Series) -> None:
    """Log2 x axis with a labelled tick at every block boundary."""
    ticks = sorted(set(int(e) for e in ends))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _last_block_reading(results: pd.DataFrame) -> str:
    last = _last_block_fraction(results)
    if not len(last):
        return ""
    return ("On true labels the last block costs " + ", ".join(f"{m} {f:.1%}" for m, f in last.items())
            + " of the uniform code's bits per label. ")


def _random_reading(rand: pd.DataFrame) -> str:
    if not len(rand):
        return ""
    span = f"{rand['ratio'].min():.1%} to {rand['ratio'].max():.1%} of the uniform code"
    if (rand["ratio"] >= 0.95).all():
        return (f"On random labels no model does better than about the uniform code ({span}): the architectures "
                "that compress real labels find nothing to compress in noise.")
    return (f"On random labels the codes take {span}; a code well below uniform on random labels would mean the "
            "labels are not random or the accounting is wrong.")


def _label_streams(spec: DescriptionLengthSpec, data) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """Per (labels, seed): the order the examples are sent in, and the labels in that order."""
    streams = {}
    n = len(data.y_train)
    for seed in spec.seeds:
        order = torch.from_numpy(np.random.default_rng(derive_seed(seed, "mdl-order")).permutation(n))
        for labels in spec.labels:
            y = data.y_train
            if labels == "random":
                y = torch.from_numpy(corrupt_labels(y.numpy(), 1.0, data.num_classes,
                                                    derive_seed(seed, "mdl-random"))[0])
            streams[(labels, seed)] = (order, y[order])
    return streams


def _totals(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, labels, seed): total prequential bits and its ratio to the uniform code."""
    last = results.sort_values("block_end").groupby(["model", "labels", "seed"], sort=False).tail(1)
    out = last[["model", "labels", "seed", "params", "param_bits"]].copy()
    out["total_bits"] = last["cumulative_bits"].to_numpy()
    out["uniform_total"] = last["uniform_bits"].to_numpy()
    out["ratio"] = out["total_bits"] / out["uniform_total"]
    return out.reset_index(drop=True)
