"""The threads strategy: lockstep models spread over worker threads, few intra-op threads each.

Small convolutions scale poorly over a CPU's cores inside one operation (each op is too short to
split well), but K independent models can run side by side: with T workers, each worker runs the
forward, backward and optimizer step of its own share of the models, with the process's intra-op
threads divided among the workers (one each when there are as many workers as cores). PyTorch releases the GIL inside its kernels, so the workers really run in parallel.
Every model is computed by one thread with one intra-op thread, so its numbers do not depend on
the scheduling. Models with dropout are not eligible (their masks come from the process-wide
generator).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from genlab.engine.optim import PerModelOptimizer
from genlab.engine.strategies.base import StepBatch
from genlab.engine.strategies.lockstep import LockstepSession


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """``workers`` threads sharing this process's intra-op threads evenly: one each on a 2-core
    machine, several each when there are more cores than workers. The setting is per calling
    thread: the main thread keeps its own."""
    each = max(1, torch.get_num_threads() // workers)
    return ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(each,))


class ThreadsSession(LockstepSession):
    name = "threads"

    def __init__(self, trainer, idx, group_of, workers: int, channels_last: bool = False):
        super().__init__(trainer, idx, group_of, channels_last=channels_last)
        if any(self.random):
            raise ValueError("models with dropout cannot train in the threads strategy")
        workers = max(1, min(workers, len(idx)))
        self.shares = [list(range(len(idx)))[w::workers] for w in range(workers)]
        self.opts = []
        for share in self.shares:
            opt = PerModelOptimizer([self.params[p] for p in share], trainer.settings,
                                    [self.opt.masks[p] for p in share])
            opt.state = [self.opt.state[p] for p in share]
            opt.steps = self.opt.steps[share].clone()
            self.opts.append(opt)
        self.pool = worker_pool(workers)

    def _map(self, fn):
        return [f.result() for f in [self.pool.submit(fn, w, share) for w, share in enumerate(self.shares)]]

    def forward_backward(self, batch: StepBatch, working: torch.Tensor):
        xs = [self._input(x) for x in batch.xs]
        losses = torch.full((self.num_models,), float("nan"), device=batch.y.device)
        correct = torch.zeros(self.num_models, dtype=torch.long, device=batch.y.device)
        work = working.tolist()

        def run(_, share):
            for pos in share:
                if work[pos]:
                    scale = None if batch.loss_scale is None else batch.loss_scale[pos]
                    losses[pos], correct[pos] = self._train_one(pos, xs[batch.group_of[pos]], batch.y[pos],
                                                                batch.epoch, batch.step, scale)

        self._map(run)
        return losses, correct

    def unscale(self, scale):
        finite: dict[int, bool] = {}
        for part in self._map(lambda _, share: self.unscale_models(share, scale)):
            finite.update(part)
        return torch.tensor([finite[p] for p in range(self.num_models)], device=scale.device)

    def step(self, lr, weight_decay, working, uniform):
        def run(w, share):
            self.opts[w].step(lr[share], weight_decay[share], working[share])

        self._map(run)

    def sync(self) -> None:
        for opt, share in zip(self.opts, self.shares):
            self.opt.steps[share] = opt.steps
        super().sync()

    @torch.no_grad()
    def evaluate(self, positions, x, y):
        order = positions.tolist()
        results: dict[int, tuple[float, float]] = {}

        def run(_, share):
            for i, pos in enumerate(order):
                if pos in share:
                    results[i] = self.evaluate_one(pos, x, y[i])

        self._map(run)
        loss = torch.tensor([results[i][0] for i in range(len(order))], dtype=torch.float64)
        acc = torch.tensor([results[i][1] for i in range(len(order))], dtype=torch.float64)
        return loss, acc

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def describe(self) -> dict:
        return {**super().describe(), "workers": len(self.shares)}
