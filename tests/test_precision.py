"""Mixed precision: products in bfloat16/float16, float32 master weights, optimizer state and
evaluation, in every strategy; float16 with per-model dynamic loss scaling."""
import copy

import pytest
import torch
from torch import nn

import genlab.engine.precision as precision
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.engine.losses import loss_and_gradient
from genlab.engine.precision import LossScaler, slow_precision_note
from genlab.engine.stack import stack_modules
from genlab.engine.strategies.packed import packed_plan
from genlab.models import build_model


def data(n=96, d=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes]).argmax(1)
    return x, y


def mlps(k=3):
    return [build_model("mlp", (20,), 4, widths=[w, w], seed=i) for i, w in enumerate([16, 24, 40][:k])]


def bn_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 36, 3))


def train(nets, strategy, prec, x, y, seeds=None, epochs=2, optimizer="sgd"):
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=0.9, batch_size=16,
                      epochs=epochs, strategy=strategy, precision=prec)
    seeds = seeds or list(range(len(nets)))
    jobs = [ModelJob(f"m{k}", copy.deepcopy(n), seed=s, y_train=y) for k, (n, s) in enumerate(zip(nets, seeds))]
    return train_models(jobs, [InputGroup(x, x[:30], y[:30])], cfg)


@pytest.mark.parametrize("strategy", ["packed", "packed-threads", "packed-procs", "stacked", "lockstep", "threads"])
@pytest.mark.parametrize("prec", ["bf16", "fp16"])
def test_low_precision_training_is_close_to_fp32_and_keeps_float32_master_weights(strategy, prec):
    x, y = data()
    nets = mlps()
    full = train(nets, strategy, "fp32", x, y, epochs=6)
    low = train(nets, strategy, prec, x, y, epochs=6)
    assert low.strategies[-1]["strategy"] == strategy
    differ = False
    for k in range(len(nets)):
        for name, value in full.stack.state_dict(k).items():
            got = low.stack.state_dict(k)[name]
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, value, rtol=0.1, atol=0.03)  # the same training, rounded products
            differ |= not torch.equal(got, value)
        assert full.outcomes[k].train_loss < 1.1  # fp32 learned (chance: log 4 = 1.39) ...
        assert abs(low.outcomes[k].train_loss - full.outcomes[k].train_loss) < 0.05  # ... and so did low precision
    assert differ  # the products really ran in the low precision


def test_the_packed_bf16_backward_equals_autocast_autograd_on_the_module():
    nets = mlps()
    stack = stack_modules(nets)
    plan = packed_plan(stack, None)
    x, y = data(n=16)
    params = plan.pack(stack.params)
    tape = []
    with torch.no_grad():
        out = plan.forward(params, [x], tape, dtype=torch.bfloat16)
        _, d_out = loss_and_gradient(out, y.expand(3, -1), "ce")
    plan.backward(params, tape, d_out)
    grads = plan.unpack({n: p.grad for n, p in params.items()}, stack.params)
    for k, net in enumerate(nets):
        net = copy.deepcopy(net)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        for name, p in net.named_parameters():
            mine = grads[name][k][tuple(slice(0, s) for s in p.shape)]
            torch.testing.assert_close(mine, p.grad, rtol=0.05, atol=2e-3)


@pytest.mark.parametrize("strategy", ["lockstep", "threads"])
def test_batchnorm_models_train_in_bf16_with_float32_statistics(strategy):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 6, 6, generator=g)
    y = (x[:, 0, :3].sum((1, 2)) > 0).long()
    out = train([bn_cnn(0), bn_cnn(1)], strategy, "bf16", x, y)
    state = out.stack.state_dict(0)
    assert state["1.running_mean"].dtype == torch.float32 and float(state["1.running_var"].sum()) != 4.0


def test_stacked_refuses_buffers_at_low_precision():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 6, 6, generator=g)
    y = torch.zeros(32, dtype=torch.long)
    with pytest.raises(ValueError, match="cannot run"):
        train([bn_cnn(0)], "stacked", "bf16", x, y, epochs=1)


def test_evaluation_is_float32_whatever_the_training_precision():
    x, y = data()
    nets = mlps()
    cfg = dict(epochs=0)
    a = train_models([ModelJob("m", copy.deepcopy(nets[0]), 0, y)], [InputGroup(x, x[:30], y[:30])],
                     TrainConfig(**cfg, precision="bf16"))
    b = train_models([ModelJob("m", copy.deepcopy(nets[0]), 0, y)], [InputGroup(x, x[:30], y[:30])],
                     TrainConfig(**cfg, precision="fp32"))
    assert a.curves[0]["test_loss"] == b.curves[0]["test_loss"]


def test_loss_scaler_backs_off_on_overflow_and_grows_after_good_steps():
    scaler = LossScaler(3, init=8.0, growth_interval=2)
    idx = torch.tensor([0, 2])
    scaler.update(idx, torch.tensor([True, False]))
    assert scaler.scale.tolist() == [8.0, 8.0, 4.0]
    scaler.update(idx, torch.tensor([True, True]))
    assert scaler.scale.tolist() == [16.0, 8.0, 4.0] and scaler.good_steps.tolist() == [0, 0, 1]


def test_fp16_skips_the_update_of_a_model_whose_scaled_gradients_overflow():
    x, y = data()
    nets = mlps(2)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=1, strategy="lockstep",
                      precision="fp16")
    jobs = [ModelJob(f"m{k}", copy.deepcopy(n), seed=k, y_train=y) for k, n in enumerate(nets)]
    from genlab.engine.trainer import BatchTrainer

    trainer = BatchTrainer(jobs, [InputGroup(x, x[:30], y[:30])], cfg)
    trainer.scaler.scale[1] = 3e38  # model 1's scaled loss overflows float16 on every step
    out = trainer.run()
    assert not out.outcomes[1].diverged  # an overflow is not a divergence: the step is skipped
    start = nets[1].state_dict()
    for name, value in out.stack.state_dict(1).items():
        torch.testing.assert_close(value, start[name])  # every update of model 1 was skipped
    assert trainer.scaler.scale[1] < 3e38
    assert not torch.equal(out.stack.state_dict(0)["1.weight"], nets[0].state_dict()["1.weight"])


def test_a_missing_fast_path_is_said_in_one_line(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    note = slow_precision_note("bf16", "cpu")
    assert note and "no bf16 matrix unit" in note and "\n" not in note
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert slow_precision_note("bf16", "cpu") is None
    assert slow_precision_note("fp32", "cpu") is None
