"""The model zoo: the papers' CIFAR-10 networks (counts, shapes, names, BN, init, training).

Parameter counts are derived here by formula, layer by layer, independently of the builders,
and compared with the numbers the papers print where they print one.
"""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.models import MODELS, build_model, param_count, param_layers, resolve_init

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)
ZHANG = (3, 28, 28)
PAPER_NETS = ["resnet18", "resnet20", "resnet56", "vgg11", "vgg16", "vgg19", "conv2", "conv4", "conv6",
              "inception-small", "alexnet-small", "nin", "lenet-li"]
BATCHNORM_NETS = ["resnet18", "resnet20", "resnet56", "vgg11", "vgg16", "vgg19", "inception-small", "nin"]
SMALL = {"resnet18": {"width": 4}, "resnet20": {"width": 4}, "resnet56": {"width": 2}, "vgg11": {"width": 8},
         "vgg16": {"width": 8}, "vgg19": {"width": 8}, "nin": {"width": 16, "depth": 2}}
"""Options that make a net cheap to run in a test without changing its layout (widths only)."""


# ----- parameter counts by formula ---------------------------------------------------------

def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def fc(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def bn(c: int) -> int:
    return 2 * c


def resnet18_count(k: int, in_ch: int = 3, classes: int = 10) -> int:
    widths = [k, 2 * k, 4 * k, 8 * k]
    total = conv(in_ch, k, 3, bias=False) + bn(k)
    prev = k
    for w in widths:
        for b in range(2):
            c_in = prev if b == 0 else w
            total += conv(c_in, w, 3, False) + bn(w) + conv(w, w, 3, False) + bn(w)
            if c_in != w:
                total += conv(c_in, w, 1, False) + bn(w)
        prev = w
    return total + fc(8 * k, classes)


def cifar_resnet_count(n: int, shortcut: str = "A", w: int = 16) -> int:
    total = conv(3, w, 3, False) + bn(w)
    prev = w
    for width in (w, 2 * w, 4 * w):
        for b in range(n):
            c_in = prev if b == 0 else width
            total += conv(c_in, width, 3, False) + conv(width, width, 3, False) + 2 * bn(width)
            if c_in != width and shortcut == "B":
                total += conv(c_in, width, 1, False) + bn(width)
        prev = width
    return total + fc(4 * w, 10)


def vgg_count(config: list, flat_spatial: int = 1, in_ch: int = 3) -> int:
    total, prev = 0, in_ch
    for item in config:
        if item != "M":
            total += conv(prev, item, 3) + bn(item)
            prev = item
    return total + fc(prev * flat_spatial, 10)


def inception_count() -> int:
    def module(c_in, c_out, k):  # conv with bias, BN without affine
        return conv(c_in, c_out, k)
    total, prev = module(3, 96, 3), 96
    for kind, *ch in [("i", 32, 32), ("i", 32, 48), ("d", 80), ("i", 112, 48), ("i", 96, 64), ("i", 80, 80),
                      ("i", 48, 96), ("d", 96), ("i", 176, 160), ("i", 176, 160)]:
        if kind == "i":
            total += module(prev, ch[0], 1) + module(prev, ch[1], 3)
            prev = ch[0] + ch[1]
        else:
            total += module(prev, ch[0], 3)
            prev = ch[0] + prev
    return total + fc(prev, 10)


def test_resnet18_has_the_standard_count_and_scales_with_k():
    assert resnet18_count(64) == 11_173_962
    assert param_count("resnet18", CIFAR) == 11_173_962
    for k in (1, 8, 16):
        assert param_count("resnet18", CIFAR, width=k) == resnet18_count(k)


def test_resnet18_preact_is_nakkiran_s_variant():
    # pre-activation: no BN after the stem, BN on each block's input, 1x1-conv shortcuts without BN
    k = 64
    widths = [k, 2 * k, 4 * k, 8 * k]
    total, prev = conv(3, k, 3, False), k
    for w in widths:
        for b in range(2):
            c_in = prev if b == 0 else w
            total += bn(c_in) + conv(c_in, w, 3, False) + bn(w) + conv(w, w, 3, False)
            if c_in != w:
                total += conv(c_in, w, 1, False)
        prev = w
    total += fc(8 * k, 10)
    assert param_count("resnet18", CIFAR, preact=True) == total == 11_171_146


def test_he_et_al_cifar_resnets():
    assert param_count("resnet20", CIFAR) == cifar_resnet_count(3) == 269_722        # "0.27M"
    assert param_count("resnet56", CIFAR) == cifar_resnet_count(9) == 853_018        # "0.85M"
    assert param_count("resnet20", CIFAR, shortcut="B") == cifar_resnet_count(3, "B") == 272_474
    assert param_count("resnet20", CIFAR, width=32) == cifar_resnet_count(3, w=32)


def test_vgg_counts():
    vgg11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    vgg16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    vgg19 = [64, 64, "M", 128, 128, "M", *[256] * 4, "M", *[512] * 4, "M", *[512] * 4]
    assert param_count("vgg11", CIFAR) == vgg_count(vgg11) == 9_231_114             # "9.23M"
    assert param_count("vgg16", CIFAR) == vgg_count(vgg16)
    assert param_count("vgg19", CIFAR) == vgg_count(vgg19) == 20_040_522            # "20.0M"
    # without BN only the BN parameters go
    assert param_count("vgg11", CIFAR, batchnorm=False) == 9_231_114 - sum(bn(c) for c in vgg11 if c != "M")
    # a 64x64 input leaves 2x2 after five pools: the FC layer sees 4 * 512 features
    assert param_count("vgg11", (3, 64, 64)) == vgg_count(vgg11, flat_spatial=4)
    # width scales every layer alike: 64 -> 8, 512 -> 64
    assert param_count("vgg19", CIFAR, width=8) == vgg_count([c if c == "M" else c // 8 for c in vgg19])


def test_frankle_carbin_conv_nets():
    c2 = conv(3, 64, 3) + conv(64, 64, 3)
    c4 = c2 + conv(64, 128, 3) + conv(128, 128, 3)
    c6 = c4 + conv(128, 256, 3) + conv(256, 256, 3)
    head = lambda d: fc(d, 256) + fc(256, 256) + fc(256, 10)  # noqa: E731
    assert (round(c2 / 1e3), round(c4 / 1e3), round(c6 / 1e5) / 10) == (39, 260, 1.1)   # paper: 38K, 260K, 1.1M
    assert param_count("conv2", CIFAR) == c2 + head(16 * 16 * 64) == 4_301_642       # "4.3M"
    assert param_count("conv4", CIFAR) == c4 + head(8 * 8 * 128) == 2_425_930        # "2.4M"
    assert param_count("conv6", CIFAR) == c6 + head(4 * 4 * 256) == 2_262_602        # the plain build
    assert param_count("conv6", MNIST) == c6 - 2 * 9 * 64 + head(3 * 3 * 256)        # 28 -> 14 -> 7 -> 3


def test_zhang_et_al_networks_at_28x28_crops():
    assert param_count("inception-small", ZHANG) == inception_count() == 1_649_402
    assert param_count("inception-small", ZHANG, batchnorm=False) == 1_649_402
    alexnet = conv(3, 64, 5) + conv(64, 64, 5) + fc(7 * 7 * 64, 384) + fc(384, 192) + fc(192, 10)
    assert param_count("alexnet-small", ZHANG) == alexnet == 1_387_786


def test_zhang_et_al_mlps_are_plain_mlps():
    d = 28 * 28 * 3
    assert param_count("mlp", ZHANG, widths=[512]) == fc(d, 512) + fc(512, 10) == 1_209_866
    assert param_count("mlp", ZHANG, widths=[512] * 3) == fc(d, 512) + 2 * fc(512, 512) + fc(512, 10) == 1_735_178


def test_li_et_al_lenet_and_fc():
    lenet_cifar = conv(3, 6, 5) + conv(6, 16, 5) + fc(16 * 5 * 5, 120) + fc(120, 84) + fc(84, 10)
    lenet_mnist = conv(1, 6, 5) + conv(6, 16, 5) + fc(16 * 4 * 4, 120) + fc(120, 84) + fc(84, 10)
    assert param_count("lenet-li", CIFAR) == lenet_cifar == 62_006
    assert param_count("lenet-li", MNIST) == lenet_mnist == 44_426
    # Li et al.'s FC (two hidden layers of 200) is mlp with widths [200, 200]
    assert param_count("mlp", CIFAR, widths=[200, 200]) == fc(3072, 200) + fc(200, 200) + fc(200, 10) == 656_810
    assert param_count("mlp", MNIST, widths=[200, 200]) == fc(784, 200) + fc(200, 200) + fc(200, 10) == 199_210


def test_nin_depth_and_width():
    def count(depth, width, in_ch=3):
        total, prev = 0, in_ch
        for _ in range(depth):
            total += conv(prev, width, 3, False) + 2 * conv(width, width, 1, False) + 3 * bn(width)
            prev = width
        return total + conv(width, 10, 1)
    assert param_count("nin", CIFAR) == count(3, 192)
    assert param_count("nin", CIFAR, depth=2, width=96) == count(2, 96)
    assert param_count("nin", MNIST, depth=4, width=48) == count(4, 48, in_ch=1)


# ----- shapes, names, options ---------------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_NETS)
def test_full_size_forward_on_cifar_shape(name):
    model = build_model(name, CIFAR, 10, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *CIFAR))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", PAPER_NETS)
def test_forward_on_other_image_shapes(name):
    for shape in (MNIST, ZHANG, (3, 20, 24)):
        model = build_model(name, shape, 7, seed=0, **SMALL.get(name, {}))
        out = model(torch.randn(2, *shape))  # train mode: BN on batch statistics
        assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", PAPER_NETS)
def test_non_image_inputs_are_a_user_error(name):
    with pytest.raises(UserError, match=rf"model '{name}' needs image inputs \[C, H, W\], got shape \(1, 40\)"):
        build_model(name, (1, 40), 10)


@pytest.mark.parametrize("name, shape, smallest", [("conv6", (3, 4, 4), 8), ("conv2", (1, 1, 6), 2),
                                                   ("lenet-li", (1, 8, 8), 16)])
def test_too_small_images_are_a_user_error_naming_model_and_shape(name, shape, smallest):
    with pytest.raises(UserError, match=rf"model '{name}' cannot take input shape {re.escape(str(shape))}.*"
                                        rf"at least {smallest}x{smallest}"):
        build_model(name, shape, 10)
    build_model(name, (shape[0], smallest, smallest), 10)  # the smallest size named is enough
    assert param_count(name, shape) is None


def test_unknown_options_are_ignored_and_bad_values_are_user_errors():
    a = build_model("conv2", CIFAR, 10, seed=1)
    b = build_model("conv2", CIFAR, 10, seed=1, widths=[512, 512], no_such_option=3)  # a study's generic options
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    for name, options, field in [("resnet18", {"width": 0}, "width=0"), ("nin", {"depth": 1.5}, "depth=1.5"),
                                 ("resnet20", {"shortcut": "C"}, "shortcut='C'"),
                                 ("conv4", {"dropout": 1.0}, "dropout=1.0")]:
        with pytest.raises(UserError, match=rf"model '{name}': option {field}"):
            build_model(name, CIFAR, 10, **options)


@pytest.mark.parametrize("name", PAPER_NETS)
def test_layer_names_are_readable(name):
    model = build_model(name, CIFAR, 10, **SMALL.get(name, {}))
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    assert layers
    assert not [n for n in layers if n.split(".")[-1].isdigit()], layers
    assert [n for n, _ in param_layers(model)][-1].startswith("classifier")  # the output layer comes last


def test_named_layers_of_the_papers_nets():
    resnet = dict(build_model("resnet18", CIFAR, 10, width=4).named_modules())
    assert isinstance(resnet["stages.2.blocks.0.conv1"], nn.Conv2d)
    assert isinstance(resnet["stages.1.blocks.0.shortcut.conv"], nn.Conv2d)
    assert isinstance(resnet["stages.1.blocks.0.shortcut.bn"], nn.BatchNorm2d)
    assert "stages.0.blocks.0.shortcut.conv" not in resnet  # same shape: identity shortcut
    vgg = dict(build_model("vgg11", CIFAR, 10).named_modules())
    assert isinstance(vgg["features.conv3"], nn.Conv2d) and vgg["features.conv3"].in_channels == 128
    assert isinstance(vgg["features.bn8"], nn.BatchNorm2d) and "features.bn1" not in dict(
        build_model("vgg11", CIFAR, 10, batchnorm=False, width=8).named_modules())
    inception = dict(build_model("inception-small", ZHANG, 10).named_modules())
    assert isinstance(inception["features.inception3.branch3x3.conv"], nn.Conv2d)
    assert inception["features.inception3.branch3x3.bn"].affine is False


def test_option_a_shortcut_is_subsample_and_zero_pad():
    model = build_model("resnet20", (3, 8, 8), 10).eval()
    block = model.stages[1].blocks[0]
    x = torch.randn(2, 16, 8, 8)
    skip = block.shortcut(x)
    assert skip.shape == (2, 32, 4, 4)
    assert torch.equal(skip[:, :16], x[:, :, ::2, ::2]) and not skip[:, 16:].any()
    assert not list(block.shortcut.parameters())


# ----- initialization ----------------------------------------------------------------------

# Sums of the initial parameters of the existing families (seed 3), recorded before the zoo
# grew: adding models and schemes must leave every existing model's numbers exactly as they were.
EXISTING_SUMS = {
    ("mlp", MNIST, "default"): -17.33009176640489, ("mlp", MNIST, "glorot"): -36.06315232855471,
    ("mlp", MNIST, "kaiming"): -2.9175517641572384, ("lenet", MNIST, "default"): -9.610555367988681,
    ("lenet", MNIST, "glorot"): -19.715303492937522, ("lenet", MNIST, "kaiming"): 23.519953970519396,
    ("cnn1d", (1, 40), "default"): -8.528916567915076, ("cnn1d", (1, 40), "glorot"): -6.865888642532809,
    ("cnn1d", (1, 40), "kaiming"): 0.4112864664539302, ("resnet", MNIST, "default"): -4.793140870222771,
    ("resnet", MNIST, "glorot"): -0.1626267593227908, ("resnet", MNIST, "kaiming"): 16.264708357998188,
    ("lenet", CIFAR, "default"): -8.502117094553796,
}
EXISTING_NAMES = {
    "mlp": ["1.weight", "1.bias", "3.weight", "3.bias"],
    "lenet": ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
              "11.weight", "11.bias"],
    "cnn1d": ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "7.weight", "7.bias"],
}


@pytest.mark.parametrize("key", list(EXISTING_SUMS))
def test_existing_models_initialize_exactly_as_before(key):
    name, shape, init = key
    model = build_model(name, shape, 10, init=init, seed=3)
    total = sum(float(p.detach().double().sum()) for p in model.parameters())
    assert total == pytest.approx(EXISTING_SUMS[key], rel=1e-12, abs=1e-12)
    if name in EXISTING_NAMES:
        assert list(model.state_dict()) == EXISTING_NAMES[name]


def test_paper_init_resolves_per_model_and_default_stays_pytorch_s():
    assert resolve_init("conv4", "paper") == "glorot-normal"
    assert resolve_init("resnet56", "paper") == "kaiming" and resolve_init("vgg19", "paper") == "kaiming"
    assert resolve_init("mlp", "paper") == "default" and resolve_init("conv4", "default") == "default"
    a = build_model("conv2", CIFAR, 10, init="paper", seed=5)
    b = build_model("conv2", CIFAR, 10, init="glorot-normal", seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(UserError, match="unknown init 'lecun'.*paper"):
        build_model("conv2", CIFAR, 10, init="lecun")


def test_glorot_normal_and_kaiming_draw_the_stated_variances():
    model = build_model("conv4", CIFAR, 10, init="paper", seed=0)
    fc1 = model.classifier.fc1.weight  # 8192 -> 256: 2.1M draws
    assert fc1.std().item() == pytest.approx(math.sqrt(2 / (8192 + 256)), rel=0.01)
    conv3 = model.features.conv3.weight  # 64 -> 128, 3x3
    assert conv3.std().item() == pytest.approx(math.sqrt(2 / (64 * 9 + 128 * 9)), rel=0.02)
    assert not model.features.conv3.bias.any()
    resnet = build_model("resnet20", CIFAR, 10, init="paper", seed=0)
    w = resnet.stages[2].blocks[1].conv1.weight  # 64 -> 64, 3x3: 36,864 draws
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    bn_layer = resnet.stages[2].blocks[1].bn1
    assert torch.equal(bn_layer.weight, torch.ones(64)) and torch.equal(bn_layer.bias, torch.zeros(64))


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "conv2", "inception-small", "alexnet-small", "nin", "lenet-li"])
def test_same_seed_same_weights(name):
    a, b, c = (build_model(name, ZHANG, 10, init="paper", seed=s) for s in (4, 4, 5))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.endswith("weight") and sa[k].dim() > 1)


def test_initialize_resets_batchnorm_running_statistics():
    model = build_model("resnet20", (3, 8, 8), 10).train()
    model(torch.randn(8, 3, 8, 8) * 3 + 1)
    assert model.stem.bn.running_mean.abs().sum() > 0
    from genlab.models import initialize
    initialize(model, "kaiming", 0)
    assert not model.stem.bn.running_mean.any() and torch.equal(model.stem.bn.running_var, torch.ones(16))


# ----- BatchNorm ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", BATCHNORM_NETS)
def test_batchnorm_statistics_move_in_train_mode_and_are_used_in_eval_mode(name):
    model = build_model(name, (3, 16, 16), 10, seed=0, **SMALL.get(name, {}))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(8, 3, 16, 16) * 2 + 0.5
    model.train()
    with torch.no_grad():
        model(x)
    assert all(m.running_mean.abs().sum() > 0 for m in norms)
    model.eval()
    with torch.no_grad():
        alone, in_batch = model(x[:1]), model(x)[:1]
        torch.testing.assert_close(alone, in_batch, rtol=1e-4, atol=1e-5)  # eval: no batch statistics
        before = model(x)
        for m in norms:
            m.running_mean.add_(0.5)
        assert not torch.allclose(model(x), before)  # eval mode reads the running statistics
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x[:4])[:1], model(x)[:1], atol=1e-6)  # train: batch statistics


def test_batchnorm_false_removes_every_norm_layer():
    for name in BATCHNORM_NETS:
        model = build_model(name, CIFAR, 10, batchnorm=False, **SMALL.get(name, {}))
        assert not [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)], name


# ----- training through the engine ---------------------------------------------------------

def _train_two(name: str, shape, options: dict, n: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    modules = [build_model(name, shape, 10, init="paper", seed=s, **options) for s in (0, 1)]
    initial = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    jobs = [ModelJob(f"{name}-{s}", m, seed=s, y_train=y) for s, m in enumerate(modules)]
    config = TrainConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=16)
    outcome = train_models(jobs, [InputGroup(x, x[:8], y[:8])], config)
    return outcome, initial


def _check_trained(outcome, initial, steps: int = 2):
    for k, start in enumerate(initial):
        trained = outcome.stack.state_dict(k)
        assert outcome.outcomes[k].steps == steps
        assert math.isfinite(outcome.outcomes[k].train_loss)
        weights = [n for n in start if n.endswith("weight") and start[n].dim() > 1]
        assert all(not torch.equal(trained[n], start[n]) for n in weights)
        for n in (n for n in start if n.endswith("running_mean")):
            assert not torch.equal(trained[n], start[n]), n
        curve = [row["train_loss"] for row in outcome.curves if row["key"] == outcome.outcomes[k].key]
        assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
    assert any(not torch.equal(outcome.stack.state_dict(0)[n], outcome.stack.state_dict(1)[n]) for n in initial[0])


@pytest.mark.parametrize("name", PAPER_NETS)
def test_every_paper_net_trains_through_the_engine(name):
    shape = (3, 16, 16) if name == "lenet-li" else (3, 8, 8)
    outcome, initial = _train_two(name, shape, SMALL.get(name, {}))
    _check_trained(outcome, initial)


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("resnet18", CIFAR), ("vgg11", CIFAR), ("conv2", CIFAR),
                                         ("inception-small", ZHANG)])
def test_full_size_nets_train_through_the_engine(name, shape):
    outcome, initial = _train_two(name, shape, {}, n=16)
    _check_trained(outcome, initial, steps=1)


@pytest.mark.parametrize("name", PAPER_NETS)
def test_a_few_steps_on_one_batch_lower_the_loss(name):
    shape = (3, 16, 16) if name == "lenet-li" else (3, 8, 8)
    model = build_model(name, shape, 10, init="paper", seed=0, **SMALL.get(name, {})).train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, *shape, generator=g), torch.randint(0, 10, (16,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


# ----- registry and CLI --------------------------------------------------------------------

def test_every_registered_model_has_a_summary_and_known_paper_init():
    from genlab.models import INITIALIZERS
    for entry in MODELS.values():
        assert entry.summary and "\n" not in entry.summary
        assert entry.paper_init in INITIALIZERS


def test_list_shows_every_model_with_its_cifar_parameter_count(capsys):
    from genlab.cli import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out
    assert "11,173,962" in out and "9,231,114" in out and "2,262,602" in out
