"""Training cost from floating-point work: FLOPs of a zoo network counted on the meta device.

A network's forward FLOPs per example are counted by PyTorch's ``FlopCounterMode`` on the meta
device (shapes only: nothing is allocated or computed; a multiply-add counts as 2 FLOPs), a plain
MLP's from its layer shapes.
Training one example costs about 3 forward passes (forward, and a backward of twice the work),
so ``training_flops = 3 x forward x examples x epochs``, plus one forward over the training and
test sets per evaluation.

Seconds are FLOPs over a throughput. These rates are assumptions, not measurements:

* :data:`GPU_FLOPS` = 10 TFLOP/s: what a recent data-centre or high-end desktop GPU (A100,
  RTX 4090 class) sustains in float32/TF32 on CIFAR-sized convolutional networks with large
  enough batches - a fraction of their peak. Set ``GENLAB_GPU_TFLOPS`` to your GPU's rate, or
  let :func:`measured_flops_per_second` time a few steps on the device.
* :data:`CPU_FLOPS` = 20 GFLOP/s: two cores of a laptop CPU on convolutions.

Early stopping (a model that fits stops training) makes the real time shorter; data loading,
Python overhead and small batches make it longer.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache

import torch

GPU_FLOPS = 10e12
CPU_FLOPS = 20e9
BACKWARD_FACTOR = 3.0


def gpu_flops() -> float:
    """The GPU throughput assumed for estimates: ``$GENLAB_GPU_TFLOPS`` x 1e12, else :data:`GPU_FLOPS`."""
    value = os.environ.get("GENLAB_GPU_TFLOPS", "").strip()
    try:
        rate = float(value) * 1e12 if value else GPU_FLOPS
    except ValueError:
        return GPU_FLOPS
    return rate if rate > 0 else GPU_FLOPS


def _dataset_shape(dataset: str) -> tuple[tuple[int, ...], int]:
    from genlab.data import DATASETS

    entry = DATASETS[dataset]
    return tuple(entry.input_shape), entry.num_classes


@lru_cache(maxsize=256)
def _forward_flops(model: str, input_shape: tuple[int, ...], num_classes: int, options: tuple) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from genlab.models.zoo import _build

    with torch.device("meta"):
        net = _build(model, input_shape, num_classes, dict(options))
        linear = _plain_mlp_flops(net)
        if linear is not None:
            return linear
        x = torch.empty(1, *input_shape)
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
    return float(counter.get_total_flops())


def _plain_mlp_flops(net: torch.nn.Module) -> float | None:
    """``2 sum_l in_l out_l``, the forward FLOPs of one example through a plain MLP (what
    ``FlopCounterMode`` counts for its ``Linear`` layers), or None for any other network. Counted
    from the shapes because a first forward on the meta device costs ~1 s (PyTorch loads its meta
    kernels then), a tenth of a small sweep's run."""
    from genlab.engine.strategies.packed_mlp import mlp_layers

    layers = mlp_layers(net)
    if layers is None:
        return None
    modules = dict(net.named_children())
    return float(sum(2 * modules[name].in_features * modules[name].out_features for name, _ in layers))


def forward_flops(model: str, dataset: str, **options) -> float:
    """Forward FLOPs of zoo network ``model`` for one example of ``dataset`` (multiply-add = 2)."""
    shape, classes = _dataset_shape(dataset)
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
    return _forward_flops(model, shape, classes, frozen)


def training_flops(model: str, dataset: str, examples: int, epochs: int, evaluations: int = 0,
                   eval_examples: int = 0, **options) -> float:
    """FLOPs of training one ``model`` on ``examples`` for ``epochs`` epochs, plus ``evaluations``
    forward passes over ``eval_examples`` examples."""
    forward = forward_flops(model, dataset, **options)
    return forward * (BACKWARD_FACTOR * examples * epochs + evaluations * eval_examples)


def measured_flops_per_second(model: str, dataset: str, device: str, batch_size: int = 128, steps: int = 3,
                              **options) -> float:
    """FLOP/s of a few SGD steps of ``model`` on random inputs of ``dataset``'s shape on ``device``
    (after one warm-up step): the short measurement behind a device-specific estimate."""
    from genlab.models import build_model

    shape, classes = _dataset_shape(dataset)
    net = build_model(model, shape, classes, seed=0, **options).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(batch_size, *shape, device=device)
    y = torch.randint(0, classes, (batch_size,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    step()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    seconds = max(time.perf_counter() - started, 1e-9)
    return BACKWARD_FACTOR * forward_flops(model, dataset, **options) * batch_size * steps / seconds


# ----- the training work of a study's spec ----------------------------------------------------

STEP_SECONDS = 1e-3
"""Assumed fixed cost of one optimizer step of one model on a GPU (launches, Python), whatever its size."""
FULL_TRAIN_SETS = {"cifar10": 50000, "mnist": 60000, "fashion-mnist": 60000, "digits": 1397}
TEST_SETS = {"cifar10": 10000, "mnist": 10000, "fashion-mnist": 10000, "mnist1d": 1000, "digits": 400}


@dataclass
class Work:
    """Training work: floating-point operations and optimizer steps (summed over models)."""

    flops: float = 0.0
    steps: float = 0.0

    def add(self, model: str, dataset: str, examples: int, epochs: int, batch_size: int, count: int = 1,
            evaluations: int = 0, eval_examples: int = 0, **options) -> None:
        self.flops += count * training_flops(model, dataset, examples, epochs, evaluations, eval_examples, **options)
        self.steps += count * epochs * math.ceil(examples / batch_size)

    def seconds(self, flops_per_second: float, step_seconds: float = STEP_SECONDS) -> float:
        return self.flops / flops_per_second + self.steps * step_seconds


def _examples(data, dataset: str) -> int:
    """Training examples a data group uses: its n_train, else the whole set (4000 for the offline sets)."""
    return data.n_train or FULL_TRAIN_SETS.get(dataset, 4000)


def label_noise_work(spec) -> Work:
    """The label-noise double-descent sweep of a double-descent ``spec``: every width's own network
    (no padding: the engine batches widths in buckets) and seed, trained for the whole budget and
    evaluated on the training and test sets before the first step and every ``eval_every`` epochs."""
    from genlab.studies.double_descent.label_noise import noise_network

    sweep, work = spec.noise, Work()
    n = _examples(sweep.data, sweep.data.dataset)
    evaluations = 1 + sweep.optim.epochs // sweep.eval_every
    n_test = sweep.data.n_test or TEST_SETS.get(sweep.data.dataset, 1000)
    for width in sweep.widths:
        family, options = noise_network(sweep, width)
        work.add(family, sweep.data.dataset, n, sweep.optim.epochs, sweep.optim.batch_size, len(spec.seeds),
                 evaluations=evaluations, eval_examples=n + n_test, **options)
    return work


def study_work(study: str, spec) -> Work | None:
    """The training ``spec`` asks of ``study`` (an upper bound: every model trains its whole epoch
    budget), or None for a study whose work is not network training (expressivity)."""
    work = Work()
    if study in ("randomization", "regularization", "lottery"):
        net, optim = spec.network, spec.optim
        n = _examples(spec.data, spec.data.dataset)
        if study == "randomization":
            models = 1 + len([p for p in spec.corruptions if p > 0]) + len(spec.pixel_variants)
        elif study == "regularization":
            models = 16
        else:
            n -= spec.val_size
            models = 1 + spec.rounds * (1 + len(spec.controls))
        work.add(net.model, spec.data.dataset, n, optim.epochs, optim.batch_size, models * len(spec.seeds),
                 widths=net.widths, **net.zoo_options())
    elif study == "layer-robustness":
        from genlab.studies.layer_robustness import network_plan

        for name in spec.networks:
            plan = network_plan(spec, name)
            # training, then (checkpoints + draws) test-set evaluations per layer (~20 layers)
            work.add(plan.family, plan.dataset, _examples(spec.data, plan.dataset), plan.epochs, spec.optim.batch_size,
                     len(spec.seeds), evaluations=20 * (10 + spec.draws), eval_examples=spec.data.n_test or 10000,
                     **plan.options)
    elif study == "intrinsic-dim":
        from genlab.studies.intrinsic_dim import network_plan

        for e in network_plan(spec):  # the direct baseline and ~8 subspace runs per seed
            work.add(e["model"], e["dataset"], _examples(spec.data, e["dataset"]), spec.optim.epochs,
                     spec.optim.batch_size, 9 * len(spec.seeds), **e["options"])
    elif study == "double-descent":
        if spec.modes != ["label_noise"]:
            return None
        return label_noise_work(spec)
    elif study == "measures":
        from genlab.studies.measures import measure_forwards, network_options, sweep_configs

        n = _examples(spec.data, spec.data.dataset)
        n_test = spec.data.n_test or 10000
        for config in sweep_configs(spec):  # evaluated every epoch (train and test sets), then measured
            work.add(config["network"], spec.data.dataset, n, spec.optim.epochs, config["batch_size"],
                     len(spec.seeds), evaluations=spec.optim.epochs + 1, eval_examples=n + n_test,
                     **network_options(config))
            work.flops += len(spec.seeds) * measure_forwards(spec, n) * forward_flops(
                config["network"], spec.data.dataset, **network_options(config))
    elif study == "description-length":
        from genlab.studies.description_length import parse_architecture

        # blocks growing by `growth`: the training sets sum to about n * growth / (growth - 1)
        seen = int(_examples(spec.data, spec.data.dataset) * spec.growth / (spec.growth - 1))
        for name in spec.architectures:
            family, widths = parse_architecture(name)
            work.add(family, spec.data.dataset, seen, spec.optim.epochs, spec.optim.batch_size,
                     len(spec.labels) * len(spec.seeds), **({"widths": widths} if widths else {}))
    else:
        return None
    return work
