"""The batched engine trains K models exactly as K separate PyTorch loops would."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.engine import InputGroup, ModelJob, TrainConfig, epoch_seed, stack_modules, train_models
from genlab.engine.trainer import BatchTrainer
from genlab.models import build_model


def toy_data(n=96, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    y = (x @ w).argmax(1)
    return x, y, x[:40], y[:40]


def reference_train(module, x, y, seed, cfg: TrainConfig, lr=None, wd=None):
    """The plain PyTorch loop: one model, torch.optim, the engine's data order."""
    net = copy.deepcopy(module)
    lr = cfg.lr if lr is None else lr
    wd = cfg.weight_decay if wd is None else wd
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for idx in perm.split(cfg.batch_size):
            out = net(x[idx])
            loss = F.cross_entropy(out, y[idx]) if cfg.loss == "ce" else \
                F.mse_loss(out, F.one_hot(y[idx], out.shape[1]).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def mlp(d, widths, k, seed):
    return build_model("mlp", (d,), k, widths=widths, seed=seed)


@pytest.mark.parametrize("optimizer,momentum,nesterov,wd,loss", [
    ("sgd", 0.0, False, 0.0, "ce"),
    ("sgd", 0.9, False, 1e-3, "ce"),
    ("sgd", 0.9, True, 0.0, "mse"),
    ("adam", 0.0, False, 1e-3, "ce"),
    ("adamw", 0.0, False, 1e-2, "mse"),
])
def test_batched_equals_one_at_a_time(optimizer, momentum, nesterov, wd, loss):
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01, momentum=momentum,
                      nesterov=nesterov, weight_decay=wd, batch_size=16, epochs=3, loss=loss)
    labels = [y, y.flip(0), (y + 1) % 3]
    modules = [mlp(12, [16, 8], 3, seed=s) for s in range(3)]
    jobs = [ModelJob(f"m{s}", modules[s], seed=10 + s, y_train=labels[s]) for s in range(3)]
    out = train_models(jobs, [InputGroup(x, xt, yt)], cfg)
    for s in range(3):
        ref = reference_train(modules[s], x, labels[s], 10 + s, cfg)
        got = out.stack.state_dict(s)
        for name, p in ref.state_dict().items():
            torch.testing.assert_close(got[name], p, rtol=1e-4, atol=1e-5)


def test_per_model_learning_rates_and_weight_decay():
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    modules = [mlp(12, [10], 3, seed=s) for s in range(2)]
    settings = [(0.1, 0.0), (0.01, 0.05)]
    jobs = [ModelJob(f"m{i}", modules[i], seed=i, y_train=y, lr=lr, weight_decay=wd) for i,
            (lr, wd) in enumerate(settings)]
    out = train_models(jobs, [InputGroup(x, xt, yt)], cfg)
    for i, (lr, wd) in enumerate(settings):
        ref = reference_train(modules[i], x, y, i, cfg, lr=lr, wd=wd)
        for name, p in ref.state_dict().items():
            torch.testing.assert_close(out.stack.state_dict(i)[name], p, rtol=1e-4, atol=1e-5)


def test_padded_widths_train_exactly_like_the_narrow_model():
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=3)
    narrow, wide = mlp(12, [5], 3, seed=1), mlp(12, [40], 3, seed=2)
    out = train_models([ModelJob("narrow", narrow, 1, y), ModelJob("wide", wide, 2, y)], [InputGroup(x, xt, yt)], cfg)
    ref = reference_train(narrow, x, y, 1, cfg)
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(out.stack.state_dict(0)[name], p, rtol=1e-4, atol=1e-5)
    # padded entries of the narrow model stayed exactly zero
    assert torch.all(out.stack.params["1.weight"][0, 5:] == 0)
    assert torch.all(out.stack.params["3.weight"][0, :, 5:] == 0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_stay_exactly_zero(optimizer):
    x, y, xt, yt = toy_data()
    net = mlp(12, [16], 3, seed=0)
    mask = {"1.weight": torch.rand(16, 12, generator=torch.Generator().manual_seed(0)) > 0.5}
    cfg = TrainConfig(optimizer=optimizer, lr=0.05, momentum=0.9, weight_decay=1e-2, batch_size=16, epochs=3)
    out = train_models([ModelJob("pruned", net, 0, y, mask=mask)], [InputGroup(x, xt, yt)], cfg)
    w = out.stack.state_dict(0)["1.weight"]
    assert torch.all(w[~mask["1.weight"]] == 0)
    assert torch.count_nonzero(w[mask["1.weight"]]) == int(mask["1.weight"].sum())


def test_divergent_model_is_marked_and_others_continue():
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, batch_size=16, epochs=3)
    jobs = [ModelJob("sane", mlp(12, [8], 3, 0), 0, y, lr=0.05), ModelJob("wild", mlp(12, [8], 3, 1), 1, y, lr=1e12)]
    out = train_models(jobs, [InputGroup(x, xt, yt)], cfg)
    sane, wild = out.outcomes
    assert wild.diverged and wild.diverged_step is not None
    assert not sane.diverged and sane.epochs == 3 and math.isfinite(sane.train_loss)
    ref = reference_train(jobs[0].module, x, y, 0,
                          TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, batch_size=16, epochs=3))
    torch.testing.assert_close(out.stack.state_dict(0)["1.weight"], ref.state_dict()["1.weight"], rtol=1e-4, atol=1e-5)


def test_one_session_while_the_active_set_is_unchanged(monkeypatch):
    x, y, xt, yt = toy_data()
    trainer = BatchTrainer([ModelJob("a", mlp(12, [8], 3, 0), 0, y), ModelJob("b", mlp(12, [5], 3, 1), 1, y)],
                           [InputGroup(x, xt, yt)], TrainConfig(optimizer="adam", lr=0.01, batch_size=16, epochs=4))
    opened = []
    original = trainer._open
    monkeypatch.setattr(trainer, "_open", lambda *a, **k: opened.append(a) or original(*a, **k))
    out = trainer.run()
    assert len(opened) == 1  # evaluation after every epoch reads the synced state, it does not reopen
    assert len(out.strategies) == 1 and out.strategies[0]["models"] == 2
    assert [c["epoch"] for c in out.curves if c["key"] == "a"] == [0, 1, 2, 3, 4]


def test_stop_rule_freezes_each_model_at_its_own_time():
    x, y, xt, yt = toy_data(n=64)
    cfg = TrainConfig(optimizer="adam", lr=0.02, batch_size=16, epochs=60, stop_train_acc=1.0)
    jobs = [ModelJob("true", mlp(12, [64], 3, 0), 0, y),
            ModelJob("random", mlp(12, [64], 3, 0), 0,
                     torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1)))]
    trainer = BatchTrainer(jobs, [InputGroup(x, xt, yt)], cfg)
    out = trainer.run()
    true, rand = out.outcomes
    assert true.fit and rand.fit and true.train_acc == 1.0 and rand.train_acc == 1.0
    assert true.steps_to_fit < rand.steps_to_fit
    frozen = [c for c in out.curves if c["key"] == "true"]
    assert frozen[-1]["epoch"] == true.epochs_to_fit  # no evaluation after it stopped


@pytest.mark.parametrize("budget", [60, 6])
def test_test_set_evaluated_only_when_a_model_ends_gives_the_same_outcomes(budget, monkeypatch):
    """``eval_test="final"``: training and every outcome are those of ``"every"`` (the test numbers of a
    model that stops early are read at the epoch it stops, of one that does not at the budget's end);
    the curves hold the test numbers only there, and the test set is evaluated far less often."""
    x, y, xt, yt = toy_data(n=64)
    random = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))

    def run(eval_test):
        cfg = TrainConfig(optimizer="adam", lr=0.02, batch_size=16, epochs=budget, stop_train_acc=1.0,
                          eval_test=eval_test, strategy="lockstep")
        jobs = [ModelJob("true", mlp(12, [64], 3, 0), 0, y), ModelJob("random", mlp(12, [64], 3, 0), 0, random)]
        sizes = []
        trainer = BatchTrainer(jobs, [InputGroup(x, xt, yt)], cfg)
        original = BatchTrainer._evaluate

        def counting(self, session, positions, train=True, test=True):
            sizes.append((len(positions), test))
            return original(self, session, positions, train=train, test=test)

        monkeypatch.setattr(BatchTrainer, "_evaluate", counting)
        out = trainer.run()
        monkeypatch.setattr(BatchTrainer, "_evaluate", original)
        return out, sizes

    every, every_calls = run("every")
    final, final_calls = run("final")
    fields = ("train_loss", "train_acc", "test_loss", "test_acc", "fit", "steps_to_fit", "epochs", "steps")
    for a, b in zip(every.outcomes, final.outcomes):
        assert all(getattr(a, f) == getattr(b, f) for f in fields), (a, b)
        assert math.isfinite(b.test_acc)
    for key in ("true", "random"):
        ce = [c for c in every.curves if c["key"] == key]
        cf = [c for c in final.curves if c["key"] == key]
        assert [c["train_loss"] for c in ce] == [c["train_loss"] for c in cf]
        assert all(math.isnan(c["test_loss"]) for c in cf[:-1]) and cf[-1]["test_loss"] == ce[-1]["test_loss"]
    tested = sum(n for n, test in final_calls if test)
    assert tested == 2 and sum(n for n, test in every_calls if test) > 2 * tested


def test_snapshot_resume_gives_identical_numbers(tmp_path):
    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=6, snapshot_every=2)

    def make():
        return [ModelJob(f"m{s}", mlp(12, [8], 3, s), s, y) for s in range(2)]

    full = train_models(make(), [InputGroup(x, xt, yt)], cfg)
    # stop after 4 epochs (snapshot at 4), then resume with the full budget
    snap = tmp_path / "snap.pt"
    partial_cfg = TrainConfig(**{**cfg.__dict__, "epochs": 4})
    BatchTrainer(make(), [InputGroup(x, xt, yt)], partial_cfg).run(snapshot=snap)
    assert snap.exists()
    trainer = BatchTrainer(make(), [InputGroup(x, xt, yt)], cfg)
    trained_epochs = []
    resumed = trainer.run(snapshot=snap, on_epoch=lambda t: trained_epochs.append(t.epoch))
    assert trained_epochs == [5, 6]  # it continued from the snapshot's epoch 4, it did not start over
    for name in full.stack.params:
        assert torch.equal(full.stack.params[name], resumed.stack.params[name])
    assert [c["train_loss"] for c in full.curves] == [c["train_loss"] for c in resumed.curves]


def test_snapshots_wait_for_the_interval_of_training_time(tmp_path, monkeypatch):
    """A due snapshot (every ``snapshot_every`` epochs) is written only once ``snapshot_seconds`` of
    training have passed since the last one (or the start): 4 s an epoch on a fake clock, 10 s apart."""
    import types

    from genlab.engine import trainer as trainer_module

    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    x, y, xt, yt = toy_data()

    def saved_epochs(seconds: float) -> list[int]:
        cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=8, snapshot_every=1,
                          snapshot_seconds=seconds)
        trainer = BatchTrainer([ModelJob("m", mlp(12, [8], 3, 0), 0, y)], [InputGroup(x, xt, yt)], cfg)
        saved = []
        trainer.save_snapshot = lambda path: saved.append(trainer.epoch)
        trainer.run(snapshot=tmp_path / "snap.pt", on_epoch=lambda t: clock.update(now=clock["now"] + 4.0))
        return saved

    assert saved_epochs(10.0) == [4, 8]
    assert saved_epochs(0.0) == list(range(1, 9))


def test_the_snapshot_interval_defaults_to_ten_seconds_or_the_environment(monkeypatch):
    from genlab.engine.config import SNAPSHOT_SECONDS
    from genlab.errors import UserError

    monkeypatch.delenv("GENLAB_SNAPSHOT_SECONDS")
    assert TrainConfig().snapshot_seconds == SNAPSHOT_SECONDS == 10.0
    monkeypatch.setenv("GENLAB_SNAPSHOT_SECONDS", "2.5")
    assert TrainConfig().snapshot_seconds == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("GENLAB_SNAPSHOT_SECONDS", bad)
        with pytest.raises(UserError, match=f"GENLAB_SNAPSHOT_SECONDS must be a number of seconds >= 0, got '{bad}'"):
            TrainConfig()
    monkeypatch.delenv("GENLAB_SNAPSHOT_SECONDS")
    with pytest.raises(ValueError, match="snapshot_seconds"):
        TrainConfig(snapshot_seconds=-1.0)
    with pytest.raises(ValueError, match="snapshot_every"):
        TrainConfig(snapshot_every=0)


def test_a_snapshot_restores_the_state_it_was_taken_at(tmp_path):
    from genlab.engine.snapshot import load_snapshot

    x, y, xt, yt = toy_data()
    cfg = TrainConfig(optimizer="adam", lr=0.05, batch_size=16, epochs=4, snapshot_every=2)
    snap = tmp_path / "snap.pt"
    first = BatchTrainer([ModelJob("m", mlp(12, [8], 3, 0), 0, y)], [InputGroup(x, xt, yt)], cfg)
    first.run(snapshot=snap)
    again = BatchTrainer([ModelJob("m", mlp(12, [8], 3, 0), 0, y)], [InputGroup(x, xt, yt)], cfg)
    again.load_state(load_snapshot(snap))
    assert again.epoch == 4 and again.step == first.step
    assert torch.equal(again.opt_state["steps"], first.opt_state["steps"])
    for name, value in first.stack.params.items():
        assert torch.equal(again.stack.params[name], value)


def test_a_snapshot_of_a_width_sweep_holds_each_models_own_entries_and_restores_the_padded_state(tmp_path):
    from genlab.engine.snapshot import load_snapshot
    from genlab.errors import UserError

    x, y, xt, yt = toy_data()
    widths = [2, 5, 16]
    cfg = TrainConfig(optimizer="adam", lr=0.05, batch_size=16, epochs=2, snapshot_every=2, checkpoint_epochs=(0, 2))

    def trainer():
        return BatchTrainer([ModelJob(f"h{h}", mlp(12, [h, h], 3, k), k, y) for k, h in enumerate(widths)],
                            [InputGroup(x, xt, yt)], cfg)

    first, snap = trainer(), tmp_path / "snap.pt"
    first.run(snapshot=snap)
    saved = load_snapshot(snap)
    own = {name: sum(s[name].numel() for s in first.stack.shapes) for name in first.stack.params}
    assert {name: saved["params"][name]["own"].numel() for name in own} == own
    assert sum(own.values()) < sum(value.numel() for value in first.stack.params.values()) / 2
    again = trainer()
    again.load_state(saved)
    for name, value in first.stack.params.items():
        assert torch.equal(again.stack.params[name], value)
        for slot, state in first.opt_state["state"][name].items():
            assert torch.equal(again.opt_state["state"][name][slot], state)
        for epoch, checkpoint in first.checkpoints.items():
            assert torch.equal(again.checkpoints[epoch][name], checkpoint[name])
    # padding that is not zero (no strategy leaves any) is kept as it is rather than dropped
    first.stack.params["3.weight"][0, -1, -1] = 1.0
    assert first.stack.own_entries(first.stack.params) is None
    assert "as_is" in first.state()["params"]["3.weight"] and "own" in first.state()["params"]["1.weight"]
    # a snapshot whose entries do not fit the models is refused in one line
    saved["params"]["3.weight"]["own"] = saved["params"]["3.weight"]["own"][:-1]
    torch.save(saved, snap)
    with pytest.raises(UserError, match=r"does not fit this run's models \(3.weight: .* entries"):
        trainer().run(snapshot=snap)


def test_checkpoints_hold_parameters_at_chosen_epochs():
    x, y, xt, yt = toy_data()
    net = mlp(12, [8], 3, 0)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=3, checkpoint_epochs=(0, 3))
    out = train_models([ModelJob("m", net, 0, y)], [InputGroup(x, xt, yt)], cfg)
    assert set(out.checkpoints) == {0, 3}
    assert torch.equal(out.checkpoints[0]["1.weight"][0], net.state_dict()["1.weight"])
    assert torch.equal(out.checkpoints[3]["1.weight"][0], out.stack.state_dict(0)["1.weight"])


def test_input_groups_give_each_model_its_own_inputs():
    x, y, xt, yt = toy_data()
    x2 = -x
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=2, momentum=0.0)
    nets = [mlp(12, [8], 3, 0), mlp(12, [8], 3, 0)]
    out = train_models([ModelJob("a", nets[0], 0, y, inputs=0), ModelJob("b", nets[1], 0, y, inputs=1)],
                       [InputGroup(x, xt, yt), InputGroup(x2, -xt, yt)], cfg)
    ref_b = reference_train(nets[1], x2, y, 0, cfg)
    torch.testing.assert_close(out.stack.state_dict(1)["1.weight"], ref_b.state_dict()["1.weight"], rtol=1e-4,
                               atol=1e-5)


def test_conv_models_stack_and_train():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 40, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    nets = [build_model("cnn1d", (1, 40), 10, seed=s) for s in range(2)]
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=2, momentum=0.9)
    out = train_models([ModelJob(f"c{s}", nets[s], s, y) for s in range(2)], [InputGroup(x, x[:10], y[:10])], cfg)
    ref = reference_train(nets[1], x, y, 1, cfg)
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(out.stack.state_dict(1)[name], p, rtol=1e-4, atol=1e-5)


def test_stack_rejects_different_architectures():
    with pytest.raises(ValueError):
        stack_modules([nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2))])


@pytest.mark.parametrize("gather_bytes", [1, 3 * 5 * 12 * 4, 1 << 30])
def test_training_batches_are_each_models_own_rows_in_any_chunking(gather_bytes, monkeypatch):
    """The batches of an epoch, gathered a chunk of steps at a time (one step, a few steps, the whole
    epoch; 96 rows in batches of 5, so the last batch is short), are each model's own permutation
    of its own input group's rows, as a per-step ``x[perm[b*B:(b+1)*B]]`` would give."""
    import genlab.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "GATHER_BYTES", gather_bytes)
    x, y, xt, yt = toy_data()
    shifted = InputGroup(x + 100.0, xt, yt)
    jobs = [ModelJob(f"m{i}", mlp(12, [4], 3, seed=i), seed=seed, inputs=group, y_train=(y + i) % 3)
            for i, (seed, group) in enumerate([(7, 0), (7, 0), (8, 0), (7, 1), (9, 1)])]
    trainer = BatchTrainer(jobs, [InputGroup(x, xt, yt), shifted], TrainConfig(batch_size=5, epochs=1))
    idx = torch.arange(len(jobs))
    batches = list(trainer._batches(idx, epoch=2))
    assert len(batches) == math.ceil(96 / 5) and batches[-1].y.shape[1] == 1
    sources = [x, x + 100.0]
    for k, job in enumerate(jobs):
        perm = torch.randperm(96, generator=torch.Generator().manual_seed(epoch_seed(job.seed, 2)))
        for b, batch in enumerate(batches):
            rows = perm[b * 5:(b + 1) * 5]
            assert torch.equal(batch.xs[batch.group_of[k]], sources[job.inputs][rows])
            assert torch.equal(batch.y[k], job.y_train[rows])
    wrapped = list(trainer._batches(idx, epoch=2, count=len(batches) + 2))
    assert all(torch.equal(a.y, b.y) for a, b in zip(wrapped[len(batches):], batches[:2]))


@pytest.mark.parametrize("strategy,shared_order", [("packed", False), ("packed", True), ("packed-threads", False),
                                                   ("packed-procs", False),
                                                   ("stacked", False), ("lockstep", False)])
def test_evaluation_matches_each_model_in_plain_pytorch(strategy, shared_order):
    """The engine's evaluation (packed models from the session's own parameters in their training
    layout, in large chunks, cross-entropy written out; other strategies their own way) gives each
    model's loss and accuracy as ``F.cross_entropy`` and ``argmax`` on its own ``nn.Module``."""
    x, y, xt, yt = toy_data(n=600, d=12)
    jobs = [ModelJob(f"h{h}", mlp(12, [h, h], 3, seed=h), seed=0 if shared_order else h, y_train=y)
            for h in (3, 8, 20, 40)]
    cfg = TrainConfig(batch_size=32, epochs=2, eval_batch_size=1000, strategy=strategy)
    out = train_models(jobs, [InputGroup(x, xt, yt)], cfg)
    for k, o in enumerate(out.outcomes):
        net = out.stack.module(k, like=jobs[k].module)
        with torch.no_grad():
            for xs, ys, loss, acc in ((x, y, o.train_loss, o.train_acc), (xt, yt, o.test_loss, o.test_acc)):
                logits = net(xs)
                assert loss == pytest.approx(F.cross_entropy(logits, ys).item(), rel=1e-5, abs=1e-6)
                assert acc == pytest.approx((logits.argmax(1) == ys).float().mean().item())
