"""The packed MLP layout computes exactly what K separate (vmapped) models compute."""
import pytest
import torch
from torch import nn

import genlab.engine.strategies.packed as packed_strategy
import genlab.engine.strategies.packed_mlp as packed_module
from genlab.engine import InputGroup, ModelJob, TrainConfig, stack_modules, stacked_forward, train_models
from genlab.engine.losses import loss_and_gradient
from genlab.engine.strategies.packed import packed_plan
from genlab.engine.strategies.packed_mlp import mlp_layers
from genlab.models import build_model

WIDTHS = [[3, 7], [12, 5], [7, 7], [1, 12]]


def mlps(widths=WIDTHS, d=10, classes=4, activation=None):
    nets = [build_model("mlp", (d,), classes, widths=w, seed=k) for k, w in enumerate(widths)]
    if activation is not None:
        for net in nets:
            for i, layer in enumerate(net):
                if isinstance(layer, nn.ReLU):
                    net[i] = activation()
    return nets


@pytest.fixture(params=["blockdiag", "bmm"])
def layout(request, monkeypatch):
    """Later layers as one block-diagonal GEMM, or moved to the padded layout for batched matmuls
    (first layers as one GEMM per batch group: the stacked first layer has its own test)."""
    monkeypatch.setattr(packed_strategy, "STACKED_INPUT", False)
    monkeypatch.setattr(packed_module, "BLOCKDIAG_MIN_MACS", 1 << 30 if request.param == "blockdiag" else 0)
    if request.param == "bmm":  # make the padded layout the cheaper one
        monkeypatch.setattr(packed_module, "prefers_blockdiag", lambda bd, pad: False)
    return request.param


def test_only_plain_mlps_pack():
    assert mlp_layers(build_model("mlp", (10,), 3, widths=[5, 5])) is not None
    assert mlp_layers(build_model("mlp", (10,), 3, widths=[5], dropout=0.5)) is None
    assert mlp_layers(build_model("lenet", (1, 28, 28), 10)) is None
    stack = stack_modules([build_model("cnn1d", (1, 40), 10, seed=0)])
    assert packed_plan(stack, None) is None


@pytest.mark.parametrize("groups", [[0, 0, 0, 0], [0, 1, 0, 1], [2, 1, 0, 1]])
def test_packed_forward_equals_vmapped_forward(layout, groups):
    stack = stack_modules(mlps())
    plan = packed_plan(stack, None, groups)
    assert len(plan.plans) == 1  # tiny models: one bucket
    assert {layer.kind for layer in plan.plans[0].layers[1:]} == {layout}
    xs = [torch.randn(6, 10, generator=torch.Generator().manual_seed(g)) for g in range(max(groups) + 1)]
    got = plan.forward(plan.pack(stack.params), xs)
    want = stacked_forward(stack, stack.params, torch.stack([xs[g] for g in groups]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_pack_then_unpack_is_the_identity_and_padding_stays_zero(layout):
    stack = stack_modules(mlps())
    plan = packed_plan(stack, [3, 1], [0, 1])
    sub = {n: p[[3, 1]] for n, p in stack.params.items()}
    for name, tensor in plan.unpack(plan.pack(sub), sub).items():
        torch.testing.assert_close(tensor, sub[name], rtol=0, atol=0)
    masks = plan.pack({n: m[[3, 1]] for n, m in stack.masks.items()})
    for name, tensor in plan.pack(sub).items():
        assert torch.all(tensor[~masks[name]] == 0)  # everything outside a model's block is zero


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("groups", [[0, 0, 0, 0], [1, 0, 1, 0]])
def test_hand_written_backward_equals_autograd(layout, loss, groups):
    stack = stack_modules(mlps())
    plan = packed_plan(stack, None, groups)
    assert plan.manual_backward
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(9, 10, generator=gen) for _ in range(2)]
    y = torch.randint(0, 4, (4, 9), generator=gen)

    auto = {n: t.requires_grad_(True) for n, t in plan.pack(stack.params).items()}
    out = plan.forward(auto, xs)
    if loss == "ce":
        reference = torch.nn.functional.cross_entropy(out.reshape(-1, 4), y.reshape(-1),
                                                      reduction="none").view(4, 9).mean(1)
    else:
        reference = ((out - torch.nn.functional.one_hot(y, 4).float()) ** 2).mean(dim=(1, 2))
    reference.sum().backward()

    manual = plan.pack(stack.params)
    tape = []
    with torch.no_grad():
        losses, d_out = loss_and_gradient(plan.forward(manual, xs, tape), y, loss)
    plan.backward(manual, tape, d_out)
    torch.testing.assert_close(losses, reference.detach(), rtol=1e-5, atol=1e-6)
    for name in manual:
        torch.testing.assert_close(manual[name].grad, auto[name].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("out_major", [True, False])
@pytest.mark.parametrize("widths", [WIDTHS, [[6, 6]] * 4, [[8]] * 3])
@pytest.mark.parametrize("groups", [[0, 0, 0, 0], [1, 0, 1, 0]])
def test_transposed_first_layer_equals_autograd(layout, widths, groups, out_major, monkeypatch):
    """The first layer computed as ``W x^T`` and read as its transposed view, and the gradient handed
    down to it computed transposed too, give the numbers of autograd through plain modules; it applies
    after a block-diagonal layer or a batched one of equal widths."""
    monkeypatch.setattr(packed_module, "FIRST_OUT_MAJOR", out_major)
    nets = mlps(widths)
    groups = groups[:len(nets)]
    stack = stack_modules(nets)
    plan = packed_plan(stack, None, groups)
    bucket = plan.plans[0]
    assert bucket.first_out_major == (out_major and (layout == "blockdiag" or len(set(map(tuple, widths))) == 1))
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(9, 10, generator=gen) for _ in range(2)]
    y = torch.randint(0, 4, (len(nets), 9), generator=gen)
    manual = plan.pack(stack.params)
    tape = []
    with torch.no_grad():
        losses, d_out = loss_and_gradient(plan.forward(manual, xs, tape), y, "ce")
    plan.backward(manual, tape, d_out)
    grads = plan.unpack({n: t.grad for n, t in manual.items()}, stack.params)
    for k, net in enumerate(nets):
        loss = torch.nn.functional.cross_entropy(net(xs[groups[k]]), y[k])
        loss.backward()
        torch.testing.assert_close(losses[k], loss.detach(), rtol=1e-5, atol=1e-6)
        for name, param in net.named_parameters():
            own = grads[name][k][tuple(slice(0, size) for size in param.shape)]
            torch.testing.assert_close(own, param.grad, rtol=1e-4, atol=1e-6)


def _train(nets, seeds, packed, optimizer="adam", epochs=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g)
    y = (x[:, :4]).argmax(1)
    jobs = [ModelJob(f"m{k}", net, seed=s, y_train=y) for k, (net, s) in enumerate(zip(nets, seeds))]
    cfg = TrainConfig(optimizer=optimizer, lr=0.02, momentum=0.9, batch_size=16, epochs=epochs,
                      strategy="packed" if packed else "stacked")
    return train_models(jobs, [InputGroup(x, x[:20], y[:20])], cfg)


@pytest.mark.parametrize("seeds", [[5, 5, 5, 5], [1, 2, 1, 3]])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_packed_training_equals_vmapped_training(layout, seeds, optimizer):
    packed = _train(mlps(), seeds, True, optimizer)
    vmapped = _train(mlps(), seeds, False, optimizer)
    for k in range(4):
        for name, tensor in vmapped.stack.state_dict(k).items():
            torch.testing.assert_close(packed.stack.state_dict(k)[name], tensor, rtol=1e-4, atol=1e-5)
        assert packed.outcomes[k].test_acc == pytest.approx(vmapped.outcomes[k].test_acc)
    assert torch.all(packed.stack.params["1.weight"][0, 3:] == 0)  # padding of the width-3 model


def test_other_activations_pack_through_autograd():
    nets = mlps(activation=nn.Tanh)
    plan = packed_plan(stack_modules(nets), None)
    assert plan is not None and not plan.manual_backward
    packed = _train(mlps(activation=nn.Tanh), [0, 0, 0, 0], True)
    vmapped = _train(mlps(activation=nn.Tanh), [0, 0, 0, 0], False)
    for k in range(4):
        for name, tensor in vmapped.stack.state_dict(k).items():
            torch.testing.assert_close(packed.stack.state_dict(k)[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_diverging_model_does_not_poison_the_others_through_zero_blocks(layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    y = x[:, :4].argmax(1)
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, batch_size=16, epochs=3)
    results = []
    for packed in (True, False):
        jobs = [ModelJob(f"m{k}", net, seed=0, y_train=y, lr=1e12 if k == 1 else 0.05)
                for k, net in enumerate(mlps())]
        results.append(train_models(jobs, [InputGroup(x, x[:20], y[:20])],
                                    TrainConfig(**{**cfg.__dict__, "strategy": "packed" if packed else "stacked"})))
    packed, vmapped = results
    assert packed.outcomes[1].diverged and vmapped.outcomes[1].diverged
    assert packed.outcomes[1].diverged_step == vmapped.outcomes[1].diverged_step
    for k in (0, 2, 3):
        assert not packed.outcomes[k].diverged
        torch.testing.assert_close(packed.stack.state_dict(k)["1.weight"], vmapped.stack.state_dict(k)["1.weight"],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_stacked_batches_first_layer_equals_vmap_and_autograd(loss):
    """Every model with a batch of its own: the first layer as one batched matmul over the stacked batches."""
    from genlab.engine.strategies.packed_mlp import PackedMLP

    nets = mlps()
    stack = stack_modules(nets)
    groups = [0, 1, 2, 3]
    max_shapes = {n: p.shape[1:] for n, p in stack.params.items()}
    plan = PackedMLP(stack.shapes, mlp_layers(stack.template), groups, max_shapes, torch.device("cpu"),
                     set(stack.params), stacked_input=True)
    assert [layer.kind for layer in plan.layers] == ["bmm_in", "bmm", "bmm"]
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(7, 10, generator=gen) for _ in groups]
    y = torch.randint(0, 4, (4, 7), generator=gen)
    want = stacked_forward(stack, stack.params, torch.stack(xs))
    params = {n: plan.pack_one(n, t) for n, t in stack.params.items()}
    torch.testing.assert_close(plan.forward(params, xs), want, rtol=1e-5, atol=1e-6)
    auto = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    out = plan.forward(auto, xs)
    reference = loss_and_gradient(out.detach(), y, loss)[0]
    (torch.nn.functional.cross_entropy(out.reshape(-1, 4), y.reshape(-1), reduction="none").view(4, 7).mean(1)
     if loss == "ce" else ((out - torch.nn.functional.one_hot(y, 4).float()) ** 2).mean(dim=(1, 2))).sum().backward()
    tape = []
    with torch.no_grad():
        losses, d_out = loss_and_gradient(plan.forward(params, xs, tape), y, loss)
    torch.testing.assert_close(losses, reference)
    for name, grad in plan.gradients(params, tape, d_out).items():
        torch.testing.assert_close(grad, auto[name].grad, rtol=1e-4, atol=1e-6)
