"""Prequential description length of the user's labels under the user's architecture, against
random labels (Blier & Ollivier 2018, "The description length of deep learning models", NeurIPS;
arXiv:1802.07044).

The labels of n training examples (in a seeded order) are sent block by block: the first block
[0, t_1) with the uniform code, log2 K bits per label; each later block [t_s, t_{s+1}) with the
predictive distribution of a fresh copy of the architecture trained on the labels already sent,
-log2 p(y | x) bits per label. The accounting, the block boundaries, the validation split that
chooses each block's stopping epoch (epoch 0 included, so a block the network cannot predict
costs about the uniform code) and the coding step are those of
:mod:`genlab.probes.description_length`, as in the description-length study; only the network
comes from the user's factory; a network with BatchNorm codes each block with the running
statistics of its chosen epoch (the engine keeps them at every checkpoint). The same is done with
labels drawn uniformly at random: no model can compress them, so their code is the reference a
real compression must beat.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from genlab.data.corruptions import corrupt_labels
from genlab.diagnosis.inputs import build_seeded
from genlab.diagnosis.retrain_settings import RetrainSettings, skipped
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
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

CAVEAT = ("Blier & Ollivier's code length depends on the training recipe and the block sizes: it is an upper "
          "bound on what this architecture can compress, meaningful against the uniform code and the random-label "
          "code measured the same way, not as an absolute number.")


def description_length(factory: Callable[[], nn.Module], train, classes: int, *, seed: int,
                       settings: RetrainSettings) -> dict:
    """Prequential code of the true and of random labels of ``train`` (at most ``settings.examples``).

    Returns ``value`` / ``suggests`` / ``caveat`` / ``settings`` (for the report), the totals in bits
    (``true_bits``, ``random_bits``, ``uniform_bits``, ``param_bits``), their ratios to the uniform
    code, and ``blocks`` (one row per (labels, block): bits, bits per label, cumulative bits).
    """
    x, y = train
    n = len(y)
    if n < 2 * settings.first_block:
        reason = (f"{n} training examples: the prequential code needs at least {2 * settings.first_block} (a first "
                  f"block of {settings.first_block} sent uniformly and as many coded)")
        return skipped(reason, settings, "description_length", CAVEAT)
    ends = block_boundaries(n, settings.first_block)
    order = torch.from_numpy(np.random.default_rng(derive_seed(seed, "diagnose", "mdl-order")).permutation(n))
    random = torch.from_numpy(corrupt_labels(y.numpy(), 1.0, classes, derive_seed(seed, "diagnose", "mdl-random"))[0])
    streams = {"true": y[order], "random": random[order]}
    x = x[order]
    rows = [{"labels": labels, "block_start": 0, "block_end": ends[0], "bits": uniform_code_bits(ends[0], classes),
             "chosen_epoch": None} for labels in streams]
    for start, end in zip(ends[:-1], ends[1:]):
        rows += _code_next_block(factory, x, streams, start, end, seed=seed, settings=settings)
    blocks = pd.DataFrame(rows)
    blocks["bits_per_label"] = blocks["bits"] / (blocks["block_end"] - blocks["block_start"])
    blocks["cumulative_bits"] = blocks.groupby("labels")["bits"].cumsum()
    total = blocks.groupby("labels")["bits"].sum()
    uniform = uniform_code_bits(n, classes)
    params = sum(p.numel() for p in build_seeded(factory, seed).parameters())
    result = {"n": n, "classes": classes, "true_bits": float(total["true"]), "random_bits": float(total["random"]),
              "uniform_bits": uniform, "param_bits": parameter_code_bits(params), "params": params,
              "true_ratio": float(total["true"]) / uniform, "random_ratio": float(total["random"]) / uniform,
              "last_block_bits_per_label": float(blocks[blocks.labels == "true"]["bits_per_label"].iloc[-1]),
              "blocks": blocks, "settings": settings.describe("description_length"), "caveat": CAVEAT}
    result["value"] = (f"true labels {result['true_bits'] / 1000:.2f} kbits = {result['true_ratio']:.1%} of the "
                       f"uniform code ({uniform / 1000:.2f} kbits for {n} labels); random labels "
                       f"{result['random_ratio']:.1%}; 32 bits x parameters {result['param_bits'] / 1000:,.0f} kbits")
    result["suggests"] = _suggests(result)
    return result


def _code_next_block(factory, x, streams: dict, start: int, end: int, *, seed: int,
                     settings: RetrainSettings) -> list[dict]:
    """Train fresh networks on [0, start) (minus its validation split), one per label set, in one
    engine call; code [start, end) with each at the checkpoint of lowest validation loss."""
    fit, val = validation_split(start, settings.val_fraction, derive_seed(seed, "diagnose", "mdl-val", start))
    keys = list(streams)

    jobs = [ModelJob(f"{labels}|t{start}", build_seeded(factory, derive_seed(seed, "diagnose", "mdl", labels, start)),
                     seed=derive_seed(seed, "diagnose", "mdl-batches", start), y_train=streams[labels][fit],
                     y_test=streams[labels][val]) for labels in keys]

    budget = epoch_budget(settings.mdl_epochs, settings.mdl_min_steps, len(fit), settings.batch_size)
    candidates = checkpoint_epochs(budget)
    inputs = [InputGroup(x[fit], x[val], streams[keys[0]][val])]
    x_next = torch.stack([x[start:end]] * len(keys))
    y_next = torch.stack([streams[labels][start:end] for labels in keys])

    config = TrainConfig(optimizer=settings.optimizer, lr=settings.lr, batch_size=settings.batch_size, epochs=budget,
                         eval_every=1, eval_train=False, checkpoint_epochs=candidates)
    outcome = train_models(jobs, inputs, config)
    bits, chosen = code_block(outcome, [j.key for j in jobs], candidates, x_next, y_next)
    return [{"labels": labels, "block_start": start, "block_end": end, "bits": float(bits[i]),
             "chosen_epoch": int(chosen[i])} for i, labels in enumerate(keys)]


def _suggests(r: dict) -> str:
    if r["true_ratio"] < 0.9 * r["random_ratio"]:
        text = (f"the architecture compresses the true labels to {r['true_ratio']:.0%} of the uniform code while "
                f"random labels stay at {r['random_ratio']:.0%}: it finds structure in this data that it cannot find "
                "in noise, the MDL reading of why it can generalize (Blier & Ollivier 2018)")
    else:
        text = (f"the true labels cost about as much as random ones ({r['true_ratio']:.0%} vs "
                f"{r['random_ratio']:.0%} of uniform): on this many examples and under this recipe the architecture "
                "finds little structure to compress, so its training accuracy is closer to memorization")
    if r["true_bits"] < r["param_bits"]:
        text += ("; the code is far shorter than sending the parameters, so counting parameters overstates the "
                 "model's complexity")
    return text + "."
