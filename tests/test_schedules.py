"""The engine's learning-rate schedules, step by step, against torch.optim.lr_scheduler.

A model trained by the engine with plain SGD (no momentum) moves by lr_t * g_t at every step, so
its weights equal the plain loop's only if every step used the same learning rate."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from genlab.engine import InputGroup, ModelJob, TrainConfig, epoch_seed, lr_multiplier, train_models
from genlab.models import build_model

N, BATCH, EPOCHS = 96, 16, 4
STEPS = math.ceil(N / BATCH) * EPOCHS


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 12, generator=g)
    return x, (x[:, :3]).argmax(1)


def torch_schedule(name, opt, cfg: TrainConfig):
    """The torch scheduler stepped once per batch that the engine's schedule ``name`` must equal."""
    sched = torch.optim.lr_scheduler
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=STEPS)
    if name == "linear":
        return sched.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=STEPS)
    if name == "step":
        per_epoch = STEPS // EPOCHS
        return sched.MultiStepLR(opt, milestones=[m * per_epoch for m in cfg.milestones], gamma=cfg.gamma)
    if name == "warmup":
        warm = int(cfg.warmup_epochs * STEPS // EPOCHS)
        return sched.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1)
    raise ValueError(name)


CASES = {
    "cosine": dict(schedule="cosine"),
    "linear": dict(schedule="linear"),
    "step": dict(schedule="step", milestones=(1, 3), gamma=0.3),
    "warmup": dict(schedule="constant", warmup_epochs=2.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_step_uses_the_learning_rate_torch_schedulers_give(name):
    x, y = data()
    net = build_model("mlp", (12,), 3, widths=[16], seed=0)
    cfg = TrainConfig(optimizer="sgd", lr=0.2, momentum=0.0, batch_size=BATCH, epochs=EPOCHS, **CASES[name])
    out = train_models([ModelJob("m", copy.deepcopy(net), seed=4, y_train=y)], [InputGroup(x, x[:10], y[:10])], cfg)

    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr)
    sched = torch_schedule(name, opt, cfg)
    lrs = []
    for epoch in range(1, EPOCHS + 1):
        for idx in torch.randperm(N, generator=torch.Generator().manual_seed(epoch_seed(4, epoch))).split(BATCH):
            lrs.append(opt.param_groups[0]["lr"])
            loss = F.cross_entropy(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    per_epoch = STEPS // EPOCHS
    mine = [cfg.lr * lr_multiplier(cfg.schedule, t / per_epoch, EPOCHS, cfg.milestones, cfg.gamma, cfg.warmup_epochs,
                                   per_epoch) for t in range(STEPS)]
    assert mine == pytest.approx(lrs, rel=1e-6, abs=1e-9)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(out.stack.state_dict(0)[key], value, rtol=1e-5, atol=1e-6)


def test_decaying_schedules_never_waste_a_step_at_zero_and_start_at_the_base_rate():
    per_epoch = 6
    for schedule in ("cosine", "linear"):
        first = lr_multiplier(schedule, 0.0, EPOCHS, steps_per_epoch=per_epoch)
        last = lr_multiplier(schedule, EPOCHS - 1 / per_epoch, EPOCHS, steps_per_epoch=per_epoch)
        assert first == 1.0 and last > 0.0
    assert lr_multiplier("constant", 0.0, EPOCHS, warmup_epochs=1, steps_per_epoch=per_epoch) == pytest.approx(1 / 6)
    assert lr_multiplier("step", 0.99, EPOCHS, milestones=(1,), gamma=0.5) == 1.0
    assert lr_multiplier("step", 1.0, EPOCHS, milestones=(1,), gamma=0.5) == 0.5
