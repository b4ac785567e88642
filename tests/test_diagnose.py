"""genlab.diagnose and `genlab diagnose` on models written here and trained by a plain PyTorch
loop here (not by genlab): the numbers against direct PyTorch computations, any model (BatchNorm
CNN, a residual module with a custom forward and a buffer, shared weights, 1-D inputs), the
verdict on a memorizing network, and bad input refused in one line with nothing written."""
from __future__ import annotations

import json
import math
import os
import pickle
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.data.registry import load_dataset
from genlab.diagnosis.analysis import robustness_groups
from genlab.diagnosis.prequential import description_length
from genlab.diagnosis.retrain_settings import RetrainSettings
from genlab.diagnosis.subspace_dim import intrinsic_dimension
from genlab.diagnosis.ticket import lottery_ticket
from genlab.errors import UserError
from genlab.seeding import derive_seed


class BNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return self.fc(F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2).flatten(1))


class Residual(nn.Module):
    """Tabular inputs, a skip connection in a custom forward, and a registered (non-trained) buffer."""

    def __init__(self, d_in=64, width=32, classes=10):
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.5))
        self.inp = nn.Linear(d_in, width)
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        h = F.relu(self.inp(x.flatten(1)))
        h = F.relu(h + self.scale * self.block(h))
        return self.out(h)


class Tied(nn.Module):
    """1-D inputs (a Conv1d) and a weight shared by two modules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, padding=2)
        self.down = nn.Linear(64 * 4 // 4, 16)
        self.mid = nn.Linear(16, 16)
        self.mid_again = nn.Linear(16, 16)
        self.mid_again.weight = self.mid.weight
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        h = F.max_pool1d(F.relu(self.conv(x)), 4).flatten(1)
        h = F.relu(self.down(h))
        return self.out(F.relu(self.mid_again(F.relu(self.mid(h)))))


def train(net, x, y, epochs, lr=0.05, recorder=None, batch=64, seed=0):
    """The user's own loop: SGD with momentum, shuffled mini-batches."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(len(y), generator=g).split(batch):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        if recorder is not None:
            recorder.epoch_end(epoch)
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", n_train=300, n_test=200)
    return (d.x_train, d.y_train), (d.x_test, d.y_test)


@pytest.fixture(scope="module")
def recorded_cnn(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    (x, y), test = digits
    torch.manual_seed(0)
    net = BNCNN()
    rec = genlab.Recorder(net, folder / "ckpt", last=6)
    train(net, x, y, 6, recorder=rec)
    result = genlab.diagnose(net, (x, y), test, record=folder / "ckpt", out=folder / "out", dataset="digits")
    return net, result, folder


def _direct(net, x, y):
    with torch.no_grad():
        out = net.eval()(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


@pytest.mark.slow
def test_cnn_with_record_numbers_match_plain_pytorch(recorded_cnn, digits):
    net, result, folder = recorded_cnn
    (x, y), (xt, yt) = digits
    train_loss, train_acc = _direct(net, x, y)
    test_loss, test_acc = _direct(net, xt, yt)
    perf = result.performance
    assert perf["train_acc"] == pytest.approx(train_acc) and perf["test_acc"] == pytest.approx(test_acc)
    assert perf["train_loss"] == pytest.approx(train_loss, rel=1e-5)
    assert perf["acc_gap"] == pytest.approx(train_acc - test_acc)
    init = torch.load(folder / "ckpt" / "epoch-00000.pt", weights_only=True)["state_dict"]
    distance = math.sqrt(sum(float((p.detach() - init[n]).double().pow(2).sum()) for n, p in net.named_parameters()))
    # Jiang et al.'s dist.l2 is over the weight layers' matrices only (convolution and linear weights)
    weights = {n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    weight_distance = math.sqrt(sum(float((p.detach() - init[n]).double().pow(2).sum())
                                    for n, p in net.named_parameters() if n.rsplit(".", 1)[0] in weights
                                    and n.endswith(".weight")))
    assert result.measures["dist_from_init"] == pytest.approx(weight_distance, rel=1e-6)
    assert list(result.trajectory["epoch"]) == [0, 1, 2, 3, 5, 6]
    last = result.trajectory.iloc[-1]  # the record's last epoch is the trained network
    assert last.test_acc == pytest.approx(test_acc)
    assert last.dist_from_init_all_params == pytest.approx(distance, rel=1e-6)
    assert "dist_from_init" not in result.trajectory  # the two distances are named apart
    # re-initializing a layer to the last epoch gives back the trained network; to epoch 0 costs accuracy
    rows = result.robustness
    at_last = rows[(rows.operation == "reinit") & (rows.checkpoint_epoch == 6)]
    assert np.allclose(at_last.test_acc, test_acc)
    assert set(result.layers.layer) == {"conv1", "bn1", "conv2", "bn2", "fc"}
    assert set(result.layers.verdict) <= {"critical", "robust"}
    conv1 = result.layers.set_index("layer").loc["conv1"]
    assert conv1.reinit0_test_acc < test_acc - 0.1 and conv1.verdict == "critical"
    fc = net.fc.weight.detach().double()
    s = torch.linalg.svdvals(fc)
    stable = result.spectra.set_index("layer").loc["fc", "stable_rank"]
    assert stable == pytest.approx(float((s ** 2).sum() / s[0] ** 2))
    assert result.spectra.set_index("layer").loc["conv2", "shape"] == "8x54"


@pytest.mark.slow
def test_cnn_report_is_one_page_with_the_answer_and_figures(recorded_cnn):
    _, result, folder = recorded_cnn
    page = (folder / "out" / "report.html").read_text()
    assert "Is this model overfitted?" in page and result.answer.verdict.split("(")[0].strip() in page
    assert page.count("data:image/png;base64,") == 4  # trajectory, margins, layer heatmap, spectra
    assert "Layer robustness" in page and "Caveats" in page and "genlab.Recorder" not in page.split("Not measured")[0]
    assert "Jiang et al. dist_from_init, weight matrices" in page and "distance from init, all parameters" in page
    numbers = json.loads((folder / "out" / "diagnosis.json").read_text())
    assert numbers["performance"]["test_acc"] == pytest.approx(result.performance["test_acc"])
    assert not [p for p in os.listdir(folder / "out") if p.startswith(".")]


def test_residual_custom_forward_without_record(digits, tmp_path):
    (x, y), test = digits
    torch.manual_seed(1)
    net = train(Residual(), x, y, 5)
    result = genlab.diagnose(net, (x, y), test, out=tmp_path)
    assert result.trajectory is None and math.isnan(result.measures["dist_from_init"])
    assert set(result.robustness.operation) == {"rerandomize"}
    assert set(result.layers.layer) == {"inp", "block.0", "block.2", "out"}
    assert any("genlab.Recorder" in m for m in result.answer.missing)
    assert float(net.scale) == 0.5  # the caller's model (and its buffer) untouched
    page = (tmp_path / "report.html").read_text()
    assert "no record" in page and "re-drawn from the initializer" in page


@pytest.mark.slow
def test_shared_weights_and_1d_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 64, generator=g)
    y = (x[:, 0, :32].sum(1) > 0).long() + 2 * (x[:, 0, 32:].sum(1) > 0).long()
    torch.manual_seed(0)
    net = Tied()
    rec = genlab.Recorder(net, tmp_path / "ckpt", last=20)
    train(net, x[:150], y[:150], 20, lr=0.02, recorder=rec)
    groups, notes = robustness_groups(net, "default")
    assert "mid_again" not in [gr.name for gr in groups] and any("mid_again" in n for n in notes)
    result = genlab.diagnose(net, (x[:150], y[:150]), (x[150:], y[150:]), record=tmp_path / "ckpt",
                             out=tmp_path / "out")
    assert "mid" in set(result.layers.layer) and (tmp_path / "out" / "report.html").exists()


@pytest.mark.slow
def test_a_memorizing_network_is_called_overfitted(digits, tmp_path):
    """A wide MLP trained to fit 120 digits with 60% of the labels shuffled: train accuracy 100%,
    test accuracy far lower, and the recorded test loss rises after its minimum."""
    (x, y), test = digits
    x, y = x[:120], y[:120].clone()
    noisy = torch.Generator().manual_seed(0)
    flip = torch.rand(120, generator=noisy) < 0.6
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=noisy)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    rec = genlab.Recorder(net, tmp_path / "ckpt", last=150)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for epoch in range(1, 151):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        rec.epoch_end(epoch)
    result = genlab.diagnose(net, (x, y), test, record=tmp_path / "ckpt", out=tmp_path / "out")
    assert result.performance["train_acc"] == 1.0 and result.performance["acc_gap"] > 0.3
    assert result.answer.verdict.startswith("Overfitted")
    assert "training beyond epoch" in result.answer.verdict


def test_bad_python_api_input_is_one_line(digits, tmp_path):
    (x, y), test = digits
    net = Residual()
    with pytest.raises(UserError, match="labels range over .* 10 classes"):
        genlab.diagnose(net, (x, y + 5), test, out=tmp_path)
    with pytest.raises(UserError, match="cannot take inputs of shape"):
        genlab.diagnose(net, (x[:, :, :4], y), test, out=tmp_path)
    with pytest.raises(UserError, match="budget 'retrain' needs factory"):
        genlab.diagnose(net, (x, y), test, out=tmp_path, budget="retrain")
    assert not (tmp_path / "report.html").exists()


# ----- the command --------------------------------------------------------------------------

FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def make(width=16):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.BatchNorm1d(width), nn.ReLU(),
                             nn.Linear(width, 10))

    def make_wide():
        return make(32)
""")


@pytest.fixture
def project(tmp_path, monkeypatch, digits):
    """A user's folder: mymodels.py (the factory), trained.pt, a record and digits.npz."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(FACTORY)
    namespace: dict = {}
    exec(FACTORY, namespace)
    (x, y), (xt, yt) = digits
    net = namespace["make"]()
    rec = genlab.Recorder(net, tmp_path / "ckpt", last=2)
    train(net, x, y, 2, recorder=rec)
    torch.save(net.state_dict(), tmp_path / "trained.pt")
    np.savez(tmp_path / "digits.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    yield tmp_path
    import sys

    sys.modules.pop("mymodels", None)


def test_cli_writes_the_report(project, genlab_cli):
    code, err = genlab_cli(["diagnose", "--model", "mymodels:make", "--weights", "trained.pt", "--record", "ckpt",
                            "--data", "digits.npz", "--out", "diag"])
    assert code == 0, err
    page = (project / "diag" / "report.html").read_text()
    assert "genlab diagnose --model mymodels:make --weights trained.pt --record ckpt --data digits.npz" in page


@pytest.mark.parametrize("args, message", [
    (["--model", "mymodels:make_wide"], "--weights trained.pt does not match the model's architecture: '1.weight' "
                                        "has shape (16, 64), the model's is (32, 64)"),
    (["--model", "nosuchpkg.models:make"], "--model 'nosuchpkg.models:make': cannot import nosuchpkg.models"),
    (["--model", "mymodels:nothing"], "mymodels has no attribute 'nothing'"),
    (["--model", "mymodels"], "expected pkg.module:factory"),
    (["--record", "other"], "the record file other/epoch-00000.pt (saved from torch.nn.modules.container.Sequential)"
                            " does not match"),
    (["--data", "bad_shape.npz"], "train_data: the model cannot take inputs of shape (1, 4, 4)"),
    (["--data", "bad_labels.npz"], "labels range over [7, 11] but the model outputs 10 classes"),
    (["--data", "lacks.npz"], "lacks the arrays y_test"),
    (["--weights", "evil.pt"], "holds objects other than tensors and plain values: refused without loading it"),
    (["--dataset", "digits"], "give exactly one of --dataset NAME or --data FILE.npz"),
    (["--budget", "retrain", "--retrain-parts", "lottery,mdl"], "retrain parts 'mdl': choose one or more of "
                                                                "randomization, description_length"),
    (["--retrain-parts", "lottery"], "retrain_parts='lottery' needs budget 'retrain'"),
    (["--budget", "retrain", "--retrain-examples", "20"], "retrain_examples=20 must be an integer of at least 200"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_report(project, genlab_cli, args, message):
    np.savez(project / "bad_shape.npz", x_train=np.zeros((5, 1, 4, 4), np.float32), y_train=np.zeros(5, np.int64),
             x_test=np.zeros((5, 1, 4, 4), np.float32), y_test=np.zeros(5, np.int64))
    np.savez(project / "bad_labels.npz", x_train=np.zeros((5, 64), np.float32), y_train=np.arange(5) + 7,
             x_test=np.zeros((5, 64), np.float32), y_test=np.zeros(5, np.int64))
    np.savez(project / "lacks.npz", x_train=np.zeros((5, 64)), y_train=np.zeros(5), x_test=np.zeros((5, 64)))
    genlab.Recorder(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)),
                    project / "other")
    with open(project / "evil.pt", "wb") as fh:
        pickle.dump({"w": _Boom()}, fh)
    base = {"--model": "mymodels:make", "--weights": "trained.pt", "--record": "ckpt", "--data": "digits.npz",
            "--out": "diag"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["diagnose"] + [t for k, v in base.items() for t in (k, v)]
    code, err = genlab_cli(argv)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (project / "diag" / "report.html").exists()
    assert not (project / "PWNED").exists()


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.slow
def test_retrain_budget_runs_the_randomization_test(digits, tmp_path):
    (x, y), (xt, yt) = digits

    def factory():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))

    torch.manual_seed(0)
    net = train(factory(), x[:100], y[:100], 10)
    result = genlab.diagnose(net, (x[:100], y[:100]), (xt[:100], yt[:100]), out=tmp_path, budget="retrain",
                             factory=factory, retrain_epochs=25, retrain_parts=["randomization"])
    r = result.randomization
    # above chance (0.1) on random labels is memorization; it comes more slowly than on true labels
    assert r["true_train_acc"] > r["random_train_acc"] > 0.15
    assert r["random_test_acc"] < 0.3 < r["true_test_acc"]    # and carry no information about the test set
    assert "random labels" in r["value"] and "randomization test" in {f.name.split(" (")[0] for f in
                                                                     result.answer.findings}
    assert "Randomization test" in (tmp_path / "report.html").read_text()


def test_a_diagnosis_that_fails_late_leaves_the_previous_report_and_no_partial_files(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 8, generator=g), torch.randint(0, 3, (60,), generator=g)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    (tmp_path / "report.html").write_text("the previous, complete report")

    def disk_full(*args):
        raise UserError("cannot write diagnosis.json: No space left on device")

    monkeypatch.setattr("genlab.diagnosis.core._write_tables", disk_full)
    with pytest.raises(UserError, match="No space left"):
        genlab.diagnose(net, (x[:40], y[:40]), (x[40:], y[40:]), out=tmp_path)
    assert (tmp_path / "report.html").read_text() == "the previous, complete report"
    assert sorted(os.listdir(tmp_path)) == ["report.html"]


# ----- the retraining experiments beside the randomization test ------------------------------

TINY = RetrainSettings(examples=160, first_block=32, mdl_epochs=2, mdl_min_steps=4, id_epochs=2, id_dims=(8, 64),
                       lottery_epochs=2, lottery_rounds=2)
"""Sizes at which each retraining result takes a second or two (the defaults are tested in the slow tests)."""


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def _bn_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 10))


def _finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@pytest.fixture(scope="module")
def tiny(digits):
    (x, y), (xt, yt) = digits
    return (x[:160], y[:160]), (xt[:100], yt[:100])


@pytest.mark.parametrize("factory", [_mlp, _bn_mlp], ids=["mlp", "bn"])
def test_description_length_true_and_random_labels(tiny, factory):
    train_set, _ = tiny
    r = description_length(factory, train_set, 10, seed=0, settings=TINY)
    blocks = r["blocks"]
    assert list(blocks[blocks.labels == "true"].block_end) == [32, 64, 128, 160]
    assert _finite(blocks.bits) and (blocks.bits > 0).all()
    # the first block is the uniform code; the totals add the blocks up
    assert blocks.iloc[0].bits == pytest.approx(32 * math.log2(10))
    assert r["true_bits"] == pytest.approx(blocks[blocks.labels == "true"].bits.sum())
    assert r["uniform_bits"] == pytest.approx(160 * math.log2(10))
    assert 0.9 < r["random_ratio"] < 1.15 and r["true_ratio"] < r["random_ratio"]
    again = description_length(factory, train_set, 10, seed=0, settings=TINY)["blocks"]
    pd.testing.assert_frame_equal(blocks, again)  # a seed fixes every choice
    other = description_length(factory, train_set, 10, seed=1, settings=TINY)["blocks"]
    assert not np.allclose(other.bits, blocks.bits)


class _ScaledMLP(nn.Module):
    """The same network with its constant factor as a buffer or as a plain attribute."""

    def __init__(self, as_buffer: bool):
        super().__init__()
        if as_buffer:
            self.register_buffer("scale", torch.tensor(1.0))
        else:
            self.scale = 1.0
        self.inp, self.out = nn.Linear(64, 24), nn.Linear(24, 10)

    def forward(self, x):
        return self.out(self.scale * F.relu(self.inp(x.flatten(1))))


def test_description_length_of_a_model_with_buffers_equals_the_checkpoint_path(tiny):
    """A model with buffers is coded by one run per candidate epoch (its statistics that epoch's);
    with a buffer that never changes it must give the bits of the one-run checkpoint path."""
    train_set, _ = tiny

    def make(as_buffer):
        def factory():
            torch.manual_seed(5)
            return _ScaledMLP(as_buffer)
        return factory

    settings = RetrainSettings(examples=160, first_block=32, mdl_epochs=4, mdl_min_steps=4)
    plain = description_length(make(False), train_set, 10, seed=0, settings=settings)["blocks"]
    buffered = description_length(make(True), train_set, 10, seed=0, settings=settings)["blocks"]
    assert list(buffered.chosen_epoch.fillna(-1)) == list(plain.chosen_epoch.fillna(-1))
    assert np.allclose(buffered.bits, plain.bits, rtol=1e-4)


def test_description_length_codes_with_the_batchnorm_statistics_of_the_chosen_epoch(tiny, monkeypatch):
    """With epoch 0 as the only candidate, every block of a BatchNorm network is coded by the
    untrained network with its initial running statistics, as plain PyTorch computes it (the
    engine's checkpoints hold parameters only: statistics of the last epoch would be wrong)."""
    train_set, _ = tiny

    def factory():
        torch.manual_seed(3)
        return _bn_mlp()

    monkeypatch.setattr("genlab.diagnosis.prequential.checkpoint_epochs", lambda budget: (0,))
    blocks = description_length(factory, train_set, 10, seed=0, settings=TINY)["blocks"]
    order = np.random.default_rng(derive_seed(0, "diagnose", "mdl-order")).permutation(160)
    x, y = train_set[0][order], train_set[1][order]
    with torch.no_grad():
        bits = -F.log_softmax(factory().eval()(x).double(), 1).gather(1, y[:, None]).squeeze(1) / math.log(2)
    true = blocks[(blocks.labels == "true") & (blocks.block_start > 0)]
    assert np.allclose(true.bits, [float(bits[a:b].sum()) for a, b in zip(true.block_start, true.block_end)])


@pytest.mark.parametrize("factory", [_mlp, _bn_mlp], ids=["mlp", "bn"])
def test_intrinsic_dimension_of_the_users_architecture(tiny, factory):
    train_set, test_set = tiny
    r = intrinsic_dimension(factory, train_set, test_set, seed=0, settings=TINY)
    assert "skipped" not in r and r["D"] == sum(p.numel() for p in factory().parameters())
    runs = r["runs"]
    assert list(runs.kind) == ["direct", "subspace", "subspace"] and list(runs.d) == [r["D"], 8, 64]
    assert _finite(runs.val_acc) and _finite(runs.test_acc)
    assert r["target_val_acc"] == pytest.approx(0.9 * r["baseline_val_acc"])
    assert r["status"] in {"interpolated", "upper_bound", "not_reached"} and "d_int90" in r["value"]
    again = intrinsic_dimension(factory, train_set, test_set, seed=0, settings=TINY)["runs"]
    pd.testing.assert_frame_equal(runs, again)


def test_intrinsic_dimension_skipped_with_its_reason(tiny):
    train_set, test_set = tiny
    r = intrinsic_dimension(_mlp, train_set, test_set, seed=0, settings=RetrainSettings(id_dims=(100_000,)))
    assert r["skipped"].startswith("the model has only D=1,810 parameters") and r["value"] == "skipped"


@pytest.mark.parametrize("factory", [_mlp, _bn_mlp], ids=["mlp", "bn"])
def test_lottery_ticket_at_a_few_sparsities(tiny, factory):
    train_set, test_set = tiny
    r = lottery_ticket(factory, train_set, test_set, seed=0, settings=TINY)
    table = r["table"]
    assert list(zip(table["round"], table.arm)) == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (2, "ticket"),
                                                    (2, "reinit")]
    remaining = table.groupby("round").weights_remaining.first()
    assert remaining[0] == 1.0 and remaining[0] > remaining[1] > remaining[2] > 0.2
    # the control prunes exactly the ticket's weights: same sparsity in every round
    assert (table.groupby("round").weights_remaining.nunique() == 1).all()
    assert _finite(table.test_acc) and _finite(table.val_acc)
    pd.testing.assert_frame_equal(table, lottery_ticket(factory, train_set, test_set, seed=0, settings=TINY)["table"])


def test_the_lottery_control_starts_from_a_fresh_initialization(tiny):
    """The reinit control trains the ticket's mask from other initial values: with a factory whose
    initialization ignores the seed (so the control would start where the ticket does) the two arms
    give identical numbers, and with a seeded factory they differ."""
    train_set, test_set = tiny

    def same_every_time():
        torch.manual_seed(11)
        return _mlp()

    def arms(factory):
        table = lottery_ticket(factory, train_set, test_set, seed=0, settings=TINY)["table"]
        pruned = table[table["round"] > 0].pivot(index="round", columns="arm", values=["train_acc", "test_acc"])
        return pruned.xs("ticket", axis=1, level="arm"), pruned.xs("reinit", axis=1, level="arm")

    ticket, control = arms(same_every_time)
    pd.testing.assert_frame_equal(ticket, control)  # the comparison sees where the control starts
    ticket, control = arms(_mlp)
    assert not ticket.equals(control), (ticket, control)


class _NoMatrices(nn.Module):
    """Only 1-D parameters: nothing for magnitude pruning to prune."""

    def __init__(self):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.ones(10)), nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return x.flatten(1)[:, :10] * self.scale + self.shift


def test_lottery_skipped_with_its_reason(tiny):
    train_set, test_set = tiny
    r = lottery_ticket(_NoMatrices, train_set, test_set, seed=0, settings=TINY)
    assert "has no prunable weights" in r["skipped"] and r["value"] == "skipped"


def test_retrain_report_shows_each_result_with_its_settings(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr("genlab.diagnosis.core.RetrainSettings", lambda examples: TINY)
    train_set, test_set = tiny
    torch.manual_seed(0)
    net = train(_mlp(), *train_set, 3)
    result = genlab.diagnose(net, train_set, test_set, out=tmp_path, budget="retrain", factory=_mlp,
                             retrain_parts=["description_length", "intrinsic_dim", "lottery"])
    assert result.randomization is None and set(result.retrained) == {"description_length", "intrinsic_dim",
                                                                      "lottery"}
    names = [f.name for f in result.answer.findings]
    for name in ("description length", "intrinsic dimension", "lottery ticket"):
        assert any(n.startswith(name + " (retrained") for n in names)
    assert not any("retraining budget" in m for m in result.answer.missing)
    page = (tmp_path / "report.html").read_text()
    for title in ("Description length (Blier", "Intrinsic dimension (Li", "Lottery ticket (Frankle"):
        assert title in page
    assert "Settings: 160 training examples; adam lr 0.001" in page and "rounds pruning 50%" in page
    assert page.count("data:image/png;base64,") == 7  # performance, margins, layers, spectra and the three new ones
    numbers = json.loads((tmp_path / "diagnosis.json").read_text())
    assert numbers["lottery"]["table"][0]["weights_remaining"] == 1.0
    assert numbers["description_length"]["true_bits"] == pytest.approx(result.retrained["description_length"]
                                                                       ["true_bits"])
    assert numbers["intrinsic_dim"]["D"] == 1810


def test_retrain_options_bad_input_is_one_line(tiny, tmp_path):
    train_set, test_set = tiny
    net = _mlp()
    with pytest.raises(UserError, match="retrain parts 'lotery': choose one or more of randomization, "):
        genlab.diagnose(net, train_set, test_set, out=tmp_path, budget="retrain", factory=_mlp, retrain_parts="lotery")
    with pytest.raises(UserError, match="retrain_parts=.* needs budget 'retrain'"):
        genlab.diagnose(net, train_set, test_set, out=tmp_path, retrain_parts=["lottery"])
    with pytest.raises(UserError, match="retrain_examples=50 must be an integer of at least 200"):
        genlab.diagnose(net, train_set, test_set, out=tmp_path, budget="retrain", factory=_mlp, retrain_examples=50)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("factory", [_mlp, BNCNN], ids=["mlp", "bn-cnn"])
def test_retrain_budget_at_its_default_sizes(digits, tmp_path, factory):
    """Every retraining result at the sizes a user gets, finite, for an MLP and a BatchNorm CNN;
    the same seed gives the same numbers."""
    (x, y), test = digits
    torch.manual_seed(0)
    net = train(factory(), x, y, 5)
    runs = []
    for out in ("a", "b"):
        result = genlab.diagnose(net, (x, y), test, out=tmp_path / out, budget="retrain", factory=factory,
                                 retrain_epochs=5, retrain_examples=300)
        runs.append(json.loads((tmp_path / out / "diagnosis.json").read_text()))
    dl, iid, lt = (result.retrained[k] for k in ("description_length", "intrinsic_dim", "lottery"))
    assert math.isfinite(dl["true_bits"]) and 0.97 < dl["random_ratio"] < 1.05 and dl["true_ratio"] < 0.97
    assert "skipped" not in iid and _finite(iid["runs"].val_acc)
    assert list(iid["runs"].d[1:]) == [d for d in RetrainSettings.id_dims if d < iid["D"]]
    table = lt["table"]
    assert _finite(table.test_acc) and sorted(set(table["round"])) == [0, 1, 2, 3]
    assert table.weights_remaining.min() < 0.3  # the output layer is pruned at half the rate
    for key in ("description_length", "intrinsic_dim", "lottery"):
        assert runs[0][key] == runs[1][key], key
