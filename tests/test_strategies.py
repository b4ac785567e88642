"""Every execution strategy computes what the plain one-model-at-a-time PyTorch loop computes:
weights, BatchNorm statistics, stop rules and divergence, with the engine's data order."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.engine import InputGroup, ModelJob, TrainConfig, epoch_seed, stack_modules, train_models
from genlab.engine.choose import cache_file, pinned_choices
from genlab.engine.strategies import candidates
from genlab.engine.strategies.lockstep import dropout_seed
from genlab.engine.strategies.packed import balanced_loads, best_layout, bucket_cost, packed_plan, partition
from genlab.engine.trainer import BatchTrainer
from genlab.models import build_model

STRATEGIES = ["stacked", "lockstep", "lockstep-cl", "threads", "threads-cl"]


def bn_cnn(seed, channels=4):
    torch.manual_seed(seed)
    # convs before BatchNorm have no bias: its gradient is rounding noise, which Adam would amplify
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(channels, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                         nn.ReLU(),
                         nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4, 3))


def images(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > 0).long() + (x[:, 0, 4:].sum((1, 2)) > 0).long()
    return x, y


def plain_loop(net, x, y, seed, cfg: TrainConfig, epochs=None):
    """One model, torch.optim, the engine's data order and per-step schedule."""
    net = copy.deepcopy(net)
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
           "adam": lambda p: torch.optim.Adam(p, lr=cfg.lr,
                                              weight_decay=cfg.weight_decay)}[cfg.optimizer](net.parameters())
    for epoch in range(1, (cfg.epochs if epochs is None else epochs) + 1):
        net.train()
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for idx in perm.split(cfg.batch_size):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batchnorm_models_match_the_plain_loop_in_every_strategy(strategy, optimizer):
    x, y = images()
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=0.9, batch_size=16,
                      epochs=3, strategy=strategy)
    nets = [bn_cnn(s) for s in range(3)]
    seeds = [0, 1, 1]  # two models share a data order (one batch gather), one has its own
    out = train_models([ModelJob(f"m{k}", n, s, y) for k, (n, s) in enumerate(zip(nets, seeds))],
                       [InputGroup(x, x[:20], y[:20])], cfg)
    assert out.strategies[-1]["strategy"] == strategy
    for k, (net, seed) in enumerate(zip(nets, seeds)):
        ref = plain_loop(net, x, y, seed, cfg)
        got = out.stack.state_dict(k)
        for name, value in ref.state_dict().items():
            torch.testing.assert_close(got[name].to(value.dtype), value, rtol=1e-4, atol=1e-5, msg=f"{strategy} {name}")
        ref.eval()
        acc = (ref(x[:20]).argmax(1) == y[:20]).double().mean().item()
        assert out.outcomes[k].test_acc == pytest.approx(acc)  # evaluated on the running statistics


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm_models_of_different_widths_share_one_call_and_match_the_plain_loop(strategy):
    """BatchNorm statistics of different widths stack padded, like the weights: each model's
    weights and running statistics are the plain loop's, and so is its evaluation."""
    x, y = images()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=2, strategy=strategy, checkpoint_epochs=(1,))
    nets = [bn_cnn(s, channels=c) for s, c in enumerate((2, 5, 3))]
    out = train_models([ModelJob(f"m{k}", n, k, y) for k, n in enumerate(nets)], [InputGroup(x, x[:20], y[:20])], cfg)
    assert out.strategies[-1]["strategy"] == strategy
    for k, net in enumerate(nets):
        ref = plain_loop(net, x, y, k, cfg)
        got = out.stack.state_dict(k)
        assert set(got) == set(ref.state_dict())
        for name, value in ref.state_dict().items():
            torch.testing.assert_close(got[name].to(value.dtype), value, rtol=1e-4, atol=1e-5, msg=f"{strategy} {name}")
        assert out.stack.module(k, like=net).state_dict().keys() == ref.state_dict().keys()
        ref.eval()
        acc = (ref(x[:20]).argmax(1) == y[:20]).double().mean().item()
        assert out.outcomes[k].test_acc == pytest.approx(acc)
        epoch1 = plain_loop(net, x, y, k, cfg, epochs=1).state_dict()["1.running_mean"]
        torch.testing.assert_close(out.checkpoint_buffers[1]["1.running_mean"][k][:len(epoch1)], epoch1,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy", ["stacked", "lockstep", "threads"])
def test_a_model_alone_equals_the_model_inside_a_sweep_with_stopping_and_diverging_neighbours(strategy):
    """BatchNorm buffers are per model even when models stop or diverge mid-run."""
    x, y = images()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=4, strategy=strategy,
                      stop_train_acc=0.9)
    constant = torch.zeros_like(y)  # a label the quitter learns within an epoch
    neighbours = [ModelJob("quitter", bn_cnn(7), 7, constant), ModelJob("wild", bn_cnn(8), 8, y, lr=3e38)]
    alone = train_models([ModelJob("me", bn_cnn(3), 3, y)], [InputGroup(x, x[:20], y[:20])],
                         TrainConfig(**{**cfg.__dict__, "stop_train_acc": None}))
    # the quitter reaches 90% train accuracy early and stops; the wild one diverges in its first steps
    swept = train_models([neighbours[0], ModelJob("me", bn_cnn(3), 3, y), neighbours[1]],
                         [InputGroup(x, x[:20], y[:20])], cfg)
    quitter, me, wild = swept.outcomes
    assert wild.diverged and quitter.fit and quitter.epochs_to_fit < 4
    if me.fit:
        pytest.skip("the model itself reached the stop rule; the comparison needs it to train all epochs")
    for name, value in alone.stack.state_dict(0).items():
        torch.testing.assert_close(swept.stack.state_dict(1)[name], value, rtol=1e-4, atol=1e-5)


def test_dropout_draws_do_not_depend_on_the_other_models():
    x, y = images()

    def make(s):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))

    torch.manual_seed(0)
    net = make(0)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=2)
    alone = train_models([ModelJob("me", copy.deepcopy(net), 5, y)], [InputGroup(x, x[:20], y[:20])], cfg)
    others = [ModelJob(f"o{i}", make(i), 10 + i, y) for i in range(3)]
    swept = train_models([others[0], ModelJob("me", copy.deepcopy(net), 5, y), *others[1:]],
                         [InputGroup(x, x[:20], y[:20])], cfg)
    assert "stacked" not in candidates(BatchTrainer([ModelJob("me", net, 5, y)], [InputGroup(x, x, y)], cfg),
                                       torch.arange(1))
    for name, value in alone.stack.state_dict(0).items():
        torch.testing.assert_close(swept.stack.state_dict(1)[name], value, rtol=1e-5, atol=1e-6)


def test_checkpoints_keep_each_epochs_batchnorm_statistics():
    """A checkpoint holds the running statistics of its epoch (as the plain loop has them after
    that many epochs), so that a model restored to a checkpoint evaluates as it did then."""
    x, y = images()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=3, checkpoint_epochs=(0, 1, 3))
    nets = [bn_cnn(s) for s in range(2)]
    out = train_models([ModelJob(f"m{k}", n, k, y) for k, n in enumerate(nets)], [InputGroup(x, x[:20], y[:20])], cfg)
    assert sorted(out.checkpoint_buffers) == [0, 1, 3]
    for k, net in enumerate(nets):
        for epoch in (0, 1, 3):
            ref = plain_loop(net, x, y, k, cfg, epochs=epoch).state_dict()
            for name, stacked in out.checkpoint_buffers[epoch].items():
                torch.testing.assert_close(stacked[k].to(ref[name].dtype), ref[name], rtol=1e-4, atol=1e-5,
                                           msg=f"model {k} epoch {epoch} {name}")
    assert not torch.equal(out.checkpoint_buffers[1]["1.running_mean"], out.checkpoint_buffers[3]["1.running_mean"])


def test_dropout_masks_follow_the_models_seed_epoch_and_step():
    assert dropout_seed(1, 2, 3) != dropout_seed(1, 2, 4) != dropout_seed(2, 2, 3)
    assert dropout_seed(1, 2, 3) == dropout_seed(1, 2, 3) and 0 <= dropout_seed(9, 9, 9) < 2 ** 63


def test_forcing_a_strategy_that_cannot_run_the_models_is_refused():
    x, y = images()
    with pytest.raises(ValueError, match="cannot run"):
        train_models([ModelJob("c", bn_cnn(0), 0, y)], [InputGroup(x, x[:10], y[:10])],
                     TrainConfig(epochs=1, strategy="packed"))


def test_close_candidates_are_timed_again_in_turn_and_keep_their_fastest_timing(tmp_path, monkeypatch):
    """A first timing disturbed by the machine (packed at 22 ms while threads ran at 16) does not decide:
    the candidates within CONTENDER_FRACTION of the fastest are timed again, alternating."""
    import genlab.engine.choose as choose_module

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    measured = {"packed": [0.022, 0.015, 0.016], "threads": [0.016, 0.018, 0.017], "lockstep": [0.050]}
    calls = []

    def fake_time(name, trainer, idx, batches, give_up_after=float("inf")):
        calls.append(name)
        series = measured.get(name, [1.0])
        return series[min(calls.count(name), len(series)) - 1]

    monkeypatch.setattr(choose_module, "time_strategy", fake_time)
    monkeypatch.setattr(choose_module, "candidates", lambda trainer, idx, worth_trying=True:
                        ["lockstep", "threads", "packed"])
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    trainer = BatchTrainer([ModelJob(f"m{k}", build_model("mlp", (12,), 3, widths=[8], seed=k), k, y)
                            for k in range(2)], [InputGroup(x, x[:8], y[:8])], TrainConfig(epochs=1))
    name, info = choose_module.choose(trainer, torch.arange(2), lambda: [])
    assert name == "packed" and info["seconds_per_step"]["packed"] == 0.015
    assert calls.count("lockstep") == 1  # more than CONTENDER_FRACTION slower: not timed again
    assert calls[3:] == ["threads", "packed"] * choose_module.RETIMING_ROUNDS


def test_auto_records_its_choice_and_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    x, y = images()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=1)
    first = train_models([ModelJob(f"m{s}", bn_cnn(s), s, y) for s in range(2)], [InputGroup(x, x[:10], y[:10])], cfg)
    decision = first.strategies[0]
    assert decision["reason"] == "calibrated" and decision["strategy"] in decision["seconds_per_step"]
    assert set(decision["seconds_per_step"]) >= {"lockstep", "lockstep-cl"}
    assert "stacked" not in decision["seconds_per_step"]  # grouped convolutions: not worth timing on a CPU
    again = train_models([ModelJob(f"m{s}", bn_cnn(s), s, y) for s in range(2)], [InputGroup(x, x[:10], y[:10])], cfg)
    assert again.strategies[0]["reason"] == "calibrated earlier on this machine"
    assert again.strategies[0]["strategy"] == decision["strategy"]
    for k in range(2):
        for name, value in first.stack.state_dict(k).items():
            assert torch.equal(again.stack.state_dict(k)[name], value)  # same choice, same numbers


def test_a_run_directory_keeps_its_choices_and_they_come_before_the_machine_cache(tmp_path, monkeypatch):
    """A killed run resumes with the strategies it started with, even if the machine's cache was
    cleared or now says otherwise (strategies differ in the last bits of their sums)."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    x, y = images()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=1)

    def run():
        return train_models([ModelJob(f"m{s}", bn_cnn(s), s, y) for s in range(2)],
                            [InputGroup(x, x[:10], y[:10])], cfg).strategies[0]

    pinned = tmp_path / "run" / "engine-choices.json"
    with pinned_choices(pinned):
        first = run()
    assert first["reason"] == "calibrated"
    assert json.loads(pinned.read_text()) == {first["signature"]: first["strategy"]}
    other = next(n for n in first["seconds_per_step"] if n != first["strategy"])
    cache = json.loads(cache_file().read_text())
    cache[first["signature"]]["strategy"] = other  # the machine's cache now says otherwise
    cache_file().write_text(json.dumps(cache))
    with pinned_choices(pinned):
        resumed = run()
    assert (resumed["strategy"], resumed["reason"]) == (first["strategy"], "chosen earlier in this run directory")
    assert run()["strategy"] == other  # outside the run directory, the cache decides


def test_the_strategy_cache_can_be_a_file_of_its_own(tmp_path, monkeypatch):
    """``$GENLAB_STRATEGY_CACHE`` (what ``genlab bench`` sets) holds the choices instead of
    ``$GENLAB_CACHE``, which keeps the generated data."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENLAB_STRATEGY_CACHE", str(tmp_path / "bench" / "strategies.json"))
    x, y = images()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=1)
    first = train_models([ModelJob(f"m{s}", bn_cnn(s), s, y) for s in range(2)], [InputGroup(x, x[:10], y[:10])],
                         cfg).strategies[0]
    assert first["reason"] == "calibrated"
    assert cache_file() == tmp_path / "bench" / "strategies.json"
    assert json.loads(cache_file().read_text())[first["signature"]]["strategy"] == first["strategy"]
    assert not (tmp_path / "cache" / "engine-strategies.json").exists()
    monkeypatch.delenv("GENLAB_STRATEGY_CACHE")
    assert cache_file() == tmp_path / "cache" / "engine-strategies.json"


def test_an_unwritable_cache_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GENLAB_CACHE", str(blocker / "cache"))  # mkdir fails: its parent is a file
    fallback = tmp_path / "tmp" / "engine-strategies.json"
    monkeypatch.setattr("genlab.engine.choose.fallback_cache_file", lambda: fallback)
    x, y = images()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=1)
    jobs = lambda: [ModelJob(f"m{s}", bn_cnn(s), s, y) for s in range(2)]  # noqa: E731
    first = train_models(jobs(), [InputGroup(x, x[:10], y[:10])], cfg).strategies[0]
    assert first["reason"] == "calibrated" and first["signature"] in json.loads(fallback.read_text())
    again = train_models(jobs(), [InputGroup(x, x[:10], y[:10])], cfg).strategies[0]
    assert (again["strategy"], again["reason"]) == (first["strategy"], "calibrated earlier on this machine")


# ----- width buckets -------------------------------------------------------------------------
DEEP = [4, 8, 12, 16, 20, 24, 32, 40, 47, 56, 64, 80, 100, 128, 200, 300]


def test_buckets_cost_less_than_padding_everything_to_the_widest():
    profiles = [(h, h) for h in DEEP]
    groups = list(range(len(DEEP)))
    buckets = partition(profiles, 40, 10, groups, batch=100)
    assert sorted(p for b in buckets for p in b) == list(range(len(DEEP)))
    assert 1 < len(buckets) < len(DEEP)

    def cost(members):
        sizes = [(40, *profiles[p], 10) for p in members]
        widths = [([s[i] for s in sizes], [s[i + 1] for s in sizes]) for i in range(3)]
        return bucket_cost(widths, len(members), 100)

    chosen = sum(cost(b) for b in buckets)
    assert chosen < cost(list(range(len(DEEP))))                    # one bucket padded to 300
    assert chosen < sum(cost([p]) for p in range(len(DEEP)))        # one bucket per model
    assert partition([(7, 7)] * 5, 40, 10, [0] * 5, 100) == [[0, 1, 2, 3, 4]]  # equal widths stay together


def test_a_bucket_costs_a_fixed_overhead_besides_its_products(monkeypatch):
    """Each bucket adds ~20 operations besides its products (BUCKET_COST_MACS): the measured
    partitions of the bench's sweeps, and what they were when a bucket cost only its products."""
    import genlab.engine.strategies.packed as packed

    one = [([40], [8]), ([8], [8]), ([8], [10])]
    with_overhead = bucket_cost(one, 1, 100)
    widths = [5, 10, 20, 40, 50, 60, 100, 200]   # the bench's `widths`: one batch, 784-h-10

    def sizes(buckets, profiles):
        return sorted(sorted(profiles[p][0] for p in b) for b in buckets)

    assert sizes(partition([(h,) for h in widths], 784, 10, [0] * 8, 128), [(h,) for h in widths]) == [widths]
    deep = [(h, h) for h in DEEP]                 # `deep-widths`: every model its own data order
    assert sizes(partition(deep, 40, 10, list(range(16)), 100), deep)[-1] == [200, 300]
    overhead = packed.BUCKET_COST_MACS
    monkeypatch.setattr(packed, "BUCKET_COST_MACS", 0)
    assert with_overhead - bucket_cost(one, 1, 100) == overhead > 0
    assert len(partition([(h,) for h in widths], 784, 10, [0] * 8, 128)) == 2
    assert [300] in sizes(partition(deep, 40, 10, list(range(16)), 100), deep)


def test_models_of_unequal_widths_sharing_a_batch_stack_it_rather_than_move_to_the_padded_layout():
    def widths(sizes):  # per layer: (inputs, outputs), one entry per model
        return [([s[i] for s in sizes], [s[i + 1] for s in sizes]) for i in range(len(sizes[0]) - 1)]

    small_sweep = widths([(40, h, h, 10) for h in DEEP[:9]] * 3)   # one data order: one batch group
    assert best_layout(small_sweep, 1, 100)[1]                        # bmm_in: no segmented -> padded move
    ensemble = widths([(784, 256, 256, 256, 10)] * 8)                 # equal widths: the move is a view
    assert not best_layout(ensemble, 1, 128)[1]


def test_buckets_are_dealt_to_workers_with_the_least_possible_largest_load():
    costs = [21.1, 32.0, 106.0, 44.4, 38.5, 56.5]  # the label-noise sweep's buckets; LPT's largest: 159.1
    shares = balanced_loads(costs, 2)
    assert sorted(i for share in shares for i in share) == list(range(6))
    assert max(sum(costs[i] for i in share) for share in shares) == pytest.approx(150.4)
    many = [float(c) for c in range(1, 30)]  # too many to search: longest first to the least loaded
    shares = balanced_loads(many, 2)
    assert sorted(i for share in shares for i in share) == list(range(29))
    assert max(sum(many[i] for i in share) for share in shares) <= sum(many) / 2 + max(many)
    assert balanced_loads([5.0], 3) == [[0]]


def test_bucketed_packed_training_equals_the_plain_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 40, generator=g)
    y = (x[:, :10]).argmax(1)
    widths = [4, 12, 40, 64, 100, 300]
    nets = [build_model("mlp", (40,), 10, widths=[h, h], seed=k) for k, h in enumerate(widths)]
    cfg = TrainConfig(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=50, epochs=2, strategy="packed")
    trainer = BatchTrainer([ModelJob(f"h{h}", n, seed=k, y_train=y) for k, (n, h) in enumerate(zip(nets, widths))],
                           [InputGroup(x, x[:50], y[:50])], cfg)
    plan = packed_plan(trainer.stack, torch.arange(len(widths)), trainer.batch_groups(torch.arange(len(widths))), 50)
    assert len(plan.plans) > 1
    out = trainer.run()
    assert out.strategies[0]["buckets"] == [len(b) for b in plan.buckets]
    for k, net in enumerate(nets):
        ref = plain_loop(net, x, y, k, cfg)
        for name, value in ref.state_dict().items():
            torch.testing.assert_close(out.stack.state_dict(k)[name], value, rtol=1e-4, atol=1e-5)


def test_stacked_and_packed_buffers_are_written_back_once_a_model_stops():
    x, y = images()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=3, strategy="stacked")
    out = train_models([ModelJob("a", bn_cnn(0), 0, y), ModelJob("b", bn_cnn(1), 1, y, lr=3e38)],
                       [InputGroup(x, x[:10], y[:10])], cfg)
    assert out.outcomes[1].diverged
    ref = plain_loop(bn_cnn(0), x, y, 0, cfg)
    torch.testing.assert_close(out.stack.state_dict(0)["1.running_mean"], ref.state_dict()["1.running_mean"],
                               rtol=1e-4, atol=1e-5)
    assert int(out.stack.state_dict(0)["1.num_batches_tracked"]) == 3 * math.ceil(80 / 16)


def test_stack_keeps_every_models_buffers():
    stack = stack_modules([bn_cnn(0), bn_cnn(1)])
    assert stack.buffers["1.running_var"].shape == (2, 4)


def test_decisions_are_recorded_for_whoever_asks():
    from genlab.engine import recording_decisions

    x, y = images()
    with recording_decisions() as log:
        train_models([ModelJob("a", bn_cnn(0), 0, y)], [InputGroup(x, x[:10], y[:10])],
                     TrainConfig(epochs=1, strategy="lockstep"))
    assert log == [{"models": 1, "precision": "fp32",
                    "decisions": [{"epoch": 0, "strategy": "lockstep", "models": 1, "channels_last": False,
                                   "reason": "asked for"}]}]
