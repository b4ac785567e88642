"""genlab.Recorder: states saved from a plain PyTorch loop, exactly, atomically, loadable with
weights_only=True, and nothing done at the epochs it does not save."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.errors import UserError
from genlab.recorder import default_epochs, epoch_file, load_record, record_files, unwrap


class BNNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 16, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train_epoch(net, opt, x, y):
    net.train()
    for i in range(0, len(y), 16):
        opt.zero_grad()
        F.cross_entropy(net(x[i:i + 16]), y[i:i + 16]).backward()
        opt.step()


def test_default_epochs_follow_the_checkpoint_series():
    assert default_epochs(30) == [0, 1, 2, 3, 5, 10, 20, 30]
    assert default_epochs(4) == [0, 1, 2, 3, 4]
    assert default_epochs()[:8] == [0, 1, 2, 3, 5, 10, 20, 50]


def test_records_initial_and_chosen_states_exactly_with_batchnorm_buffers(tmp_path):
    torch.manual_seed(0)
    net = BNNet()
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = _data()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    rec = genlab.Recorder(net, tmp_path / "ckpt", last=4)
    kept = {}
    for epoch in range(1, 5):
        _train_epoch(net, opt, x, y)
        rec.epoch_end(epoch)
        kept[epoch] = {k: v.clone() for k, v in net.state_dict().items()}
    assert sorted(record_files(tmp_path / "ckpt")) == [0, 1, 2, 3, 4]
    states = load_record(tmp_path / "ckpt", BNNet())
    for name, value in initial.items():
        assert torch.equal(states[0][name], value), name
    for epoch in (1, 4):
        for name, value in kept[epoch].items():
            assert torch.equal(states[epoch][name], value), (epoch, name)
    # the running statistics moved during training and were recorded (not only parameters)
    assert not torch.equal(states[4]["bn.running_mean"], states[0]["bn.running_mean"])
    assert int(states[4]["bn.num_batches_tracked"]) == 4 * 3
    raw = torch.load(epoch_file(tmp_path / "ckpt", 4), weights_only=True)
    assert raw["model_class"].endswith("BNNet") and raw["shapes"]["fc.weight"] == [3, 128]


def test_epochs_not_chosen_cost_nothing(tmp_path, monkeypatch):
    net = BNNet()
    rec = genlab.Recorder(net, tmp_path, epochs=[2])
    calls = []
    original = net.state_dict
    monkeypatch.setattr(net, "state_dict", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert rec.epoch_end(1) is None and rec.epoch_end(3) is None
    assert calls == [] and sorted(record_files(tmp_path)) == [0]
    assert rec.epoch_end(2) == epoch_file(tmp_path, 2) and calls == [1]


def test_wrapped_models_are_recorded_under_their_plain_names(tmp_path):
    net = BNNet()
    for wrapped in (nn.DataParallel(net), torch.compile(net)):
        assert unwrap(wrapped) is net
        rec = genlab.Recorder(wrapped, tmp_path / type(wrapped).__name__)
        state = torch.load(rec.save(1), weights_only=True)["state_dict"]
        assert set(state) == set(net.state_dict())


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    net = BNNet()
    rec = genlab.Recorder(net, tmp_path, epochs=[1])
    before = epoch_file(tmp_path, 0).read_bytes()

    def full_disk(obj, path, *a, **k):
        open(path, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("genlab.engine.snapshot.torch.save", full_disk)
    with pytest.raises(UserError, match="cannot write the record file .*epoch-00000.pt"):
        rec.save(0)
    assert epoch_file(tmp_path, 0).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["epoch-00000.pt"]


def test_a_record_of_another_architecture_is_refused_in_one_line(tmp_path):
    genlab.Recorder(BNNet(width=8), tmp_path)
    with pytest.raises(UserError) as err:
        load_record(tmp_path, BNNet(width=4))
    message = str(err.value)
    assert "epoch-00000.pt" in message and "'conv.weight' has shape (8, 1, 3, 3)" in message
    assert "\n" not in message


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_crafted_record_file_runs_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    with open(tmp_path / "ckpt" / "epoch-00000.pt", "wb") as fh:
        pickle.dump({"kind": "genlab-record", "state_dict": _Boom()}, fh)
    with pytest.raises(UserError, match="record file"):
        load_record(tmp_path / "ckpt", BNNet())
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(UserError, match="holds no epoch-NNNNN.pt"):
        record_files(tmp_path)
