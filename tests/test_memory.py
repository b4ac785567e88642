"""The memory estimate made before a unit allocates its models (genlab.engine.memory)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import genlab.engine.memory as memory
from genlab.cli import main
from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.errors import UserError
from genlab.models import build_model


def mlp(widths, d_in=784, classes=10):
    layers, prev = [nn.Flatten()], d_in
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, classes))


def test_activation_count_of_an_mlp_is_every_layer_output():
    # Flatten 784, Linear 64, ReLU 64, Linear 32, ReLU 32, Linear 10, counted by hand
    assert memory.activation_values(mlp([64, 32]), (1, 28, 28)) == 784 + 64 + 64 + 32 + 32 + 10


def test_activation_count_of_a_cnn():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 14 * 14, 10))
    expected = 4 * 28 * 28 * 2 + 4 * 14 * 14 * 2 + 10   # conv, relu, pool, flatten, linear
    assert memory.activation_values(net, (1, 28, 28)) == expected


def test_counting_activations_changes_neither_the_model_nor_the_random_stream():
    """The count runs the model once: its training flags, buffers and the global random state
    (which later draws would use) are as before, so a run's numbers do not depend on the estimate."""
    class Noise(nn.Module):  # draws in every mode
        def forward(self, x):
            return x + torch.randn_like(x)

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), Noise(), nn.Flatten(),
                        nn.Linear(4 * 26 * 26, 10))
    net.train()
    net[2].eval()
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    example = torch.randn(7, 1, 28, 28)
    torch.manual_seed(3)
    expected_draw = torch.rand(5)
    torch.manual_seed(3)
    assert memory.activation_values(net, (1, 28, 28), example=example) > 0
    assert torch.equal(torch.rand(5), expected_draw)
    assert [m.training for m in net.modules()] == [True, True, True, False, True, True, True]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in buffers.items())


@pytest.mark.parametrize("optimizer,momentum,states", [("sgd", 0.0, 0), ("sgd", 0.9, 1), ("adam", 0.0, 2)])
def test_estimate_counts_parameters_gradients_state_and_activations(optimizer, momentum, states):
    nets = [mlp([64]), mlp([16]), mlp([64])]
    padded = 784 * 64 + 64 + 64 * 10 + 10            # every model padded to the widest
    assert padded == sum(p.numel() for p in nets[0].parameters())
    est = memory.estimate_training(nets, (1, 28, 28), batch_size=100, eval_batch_size=500,
                                   optimizer=optimizer, momentum=momentum)
    k = 3
    assert est.parameters == (2 * k + 1) * padded * 4 + k * padded          # stack, live copy, template; masks
    assert est.gradients == k * padded * 4
    assert est.optimizer == 2 * states * k * padded * 4
    per_example = 784 + 64 + 64 + 10
    assert est.activations == max(2 * k * 100, k * 500) * per_example * 4


def test_the_cli_refuses_a_model_too_large_before_allocating(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "randomization", "--preset", "smoke", "--widths", "20000000", "--quiet", "--out",
              str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "15,900,000,010 parameters" in err and "63.6 GB" in err and "is available now on cpu" in err
    assert not (tmp_path / "r").exists()  # refused before any work: no run left behind


def test_k_models_that_fit_alone_but_not_together_are_refused_before_training(tmp_path, capsys, monkeypatch):
    # Pretend 10 MB are free: one smoke model (50,890 parameters, 0.2 MB) fits, six trained together with
    # their activations for a batch of 300 (the whole training set: --batch-size 4096 is capped) do not.
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 10_000_000)
    with pytest.raises(SystemExit) as e:
        main(["run", "randomization", "--preset", "smoke", "--batch-size", "4096", "--quiet", "--out",
              str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the 6 models trained together here need about" in err and "10.0 MB is available on cpu" in err
    assert "a batch of 300" in err
    assert "smaller --batch-size" in err


def test_cuda_uses_the_device_free_memory(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: asked.append(dev) or (3 * 10 ** 9, 16 * 10 ** 9))
    assert memory.available_bytes("cuda:1") == 3 * 10 ** 9
    assert asked == [torch.device("cuda:1")]
    x = torch.zeros(8, 1, 28, 28)
    jobs = [ModelJob(f"m{k}", mlp([4096, 4096]), k, torch.zeros(8, dtype=torch.long)) for k in range(8)]
    config = TrainConfig(device="cuda:1", optimizer="adam", batch_size=8)
    with pytest.raises(UserError, match=r"the 8 models trained together here need about .* but 3.0 GB is available on "
                       r"cuda:1"):
        memory.check_training_fits(jobs, [InputGroup(x, x, torch.zeros(8, dtype=torch.long))], config)


def test_a_unit_that_fits_trains_unchanged():
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    out = train_models([ModelJob("m", build_model("mlp", (1, 28, 28), 10, widths=[16]), 0, y)],
                       [InputGroup(x, x, y)], TrainConfig(epochs=1, batch_size=8))
    assert out.outcomes[0].steps == 4
