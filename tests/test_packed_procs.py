"""packed-procs: the packed buckets over forked worker processes compute exactly what packed-threads
computes with the same split, resume exactly, and never leave a worker behind."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from genlab.engine import InputGroup, ModelJob, TrainConfig, train_models
from genlab.engine.strategies import PROCESS_WORKERS_FROM, candidates, open_session
from genlab.engine.strategies.packed_procs import available, shared_like
from genlab.engine.trainer import BatchTrainer
from genlab.models import build_model

pytestmark = pytest.mark.skipif(not available(torch.device("cpu")), reason="needs fork (Linux)")

WIDTHS = [4, 12, 40, 64, 100, 300]


@pytest.fixture(autouse=True)
def two_threads():
    """Two intra-op threads: two workers (other test modules set one thread for the whole session)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def data(n=300, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x[:, :10].argmax(1)


def jobs(y, shared_order=False, lrs=None):
    return [ModelJob(f"h{h}", build_model("mlp", (40,), 10, widths=[h, h], seed=k), seed=0 if shared_order else k,
                     y_train=y, lr=None if lrs is None else lrs[k]) for k, h in enumerate(WIDTHS)]


def train(strategy, optimizer="sgd", shared_order=False, lrs=None, epochs=3, **extra):
    x, y = data()
    cfg = TrainConfig(optimizer=optimizer, lr=0.02 if optimizer == "sgd" else 0.003, momentum=0.9, batch_size=64,
                      epochs=epochs, eval_every=1, strategy=strategy, **extra)
    return train_models(jobs(y, shared_order, lrs), [InputGroup(x, x[:50], y[:50])], cfg)


def same_curves(a, b):
    assert len(a) == len(b)
    for ca, cb in zip(a, b):
        assert ca.keys() == cb.keys()
        for key, value in ca.items():
            assert value == cb[key] or (isinstance(value, float) and math.isnan(value) and math.isnan(cb[key]))


@pytest.mark.parametrize("optimizer,shared_order", [("sgd", False), ("sgd", True), ("adam", False), ("adamw", True)])
def test_worker_processes_compute_exactly_what_worker_threads_compute(optimizer, shared_order):
    threads = train("packed-threads", optimizer, shared_order)
    procs = train("packed-procs", optimizer, shared_order)
    assert procs.strategies[0]["strategy"] == "packed-procs"
    assert procs.strategies[0]["workers"] == threads.strategies[0]["workers"]
    assert len(procs.strategies[0]["workers"]) == 2  # the parent and one forked worker
    for name, value in threads.stack.params.items():
        assert torch.equal(procs.stack.params[name], value), name
    same_curves(threads.curves, procs.curves)


def test_per_model_learning_rates_and_a_stopped_model_take_the_general_update_in_place():
    """Unequal learning rates take the optimizer's general (not fused) path, and a model that reaches
    its stop rule is frozen while the rest go on: the workers' state must be updated in place."""
    lrs = [0.1, 0.05, 0.1, 0.2, 0.1, 0.05]
    threads = train("packed-threads", "sgd", lrs=lrs, epochs=6, stop_train_acc=0.6)
    procs = train("packed-procs", "sgd", lrs=lrs, epochs=6, stop_train_acc=0.6)
    assert any(o.fit for o in procs.outcomes) and not all(o.fit for o in procs.outcomes)
    for name, value in threads.stack.params.items():
        assert torch.equal(procs.stack.params[name], value), name
    same_curves(threads.curves, procs.curves)


def test_float16_loss_scaling_in_worker_processes_matches_threads():
    threads = train("packed-threads", "adam", precision="fp16")
    procs = train("packed-procs", "adam", precision="fp16")
    for name, value in threads.stack.params.items():
        assert torch.equal(procs.stack.params[name], value), name


def test_a_run_resumed_from_a_snapshot_matches_the_uninterrupted_one(tmp_path):
    x, y = data()
    cfg = TrainConfig(optimizer="adam", lr=0.003, batch_size=64, epochs=6, snapshot_every=2, strategy="packed-procs")
    full = train_models(jobs(y), [InputGroup(x, x[:50], y[:50])], cfg)
    snap = tmp_path / "snap.pt"
    BatchTrainer(jobs(y), [InputGroup(x, x[:50], y[:50])], TrainConfig(**{**cfg.__dict__, "epochs": 4})).run(
        snapshot=snap)
    resumed = BatchTrainer(jobs(y), [InputGroup(x, x[:50], y[:50])], cfg).run(snapshot=snap)
    for name, value in full.stack.params.items():
        assert torch.equal(resumed.stack.params[name], value), name
    same_curves(full.curves, resumed.curves)


def open_procs():
    x, y = data()
    config = TrainConfig(batch_size=64, strategy="packed-procs")
    trainer = BatchTrainer(jobs(y), [InputGroup(x, x[:50], y[:50])], config)
    idx = torch.arange(len(WIDTHS))
    return trainer, idx, open_session("packed-procs", trainer, idx)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_a_worker_that_dies_is_reported_in_one_error_and_closing_reaps_every_worker():
    threads = torch.get_num_threads()
    trainer, idx, session = open_procs()
    pid = session.workers[0].pid
    batch = next(trainer._batches(idx, 1))
    working = torch.ones(len(idx), dtype=torch.bool)
    session.forward_backward(batch, working)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="worker .* has died"):
        session.forward_backward(batch, working)
    session.close()
    assert not alive(pid)
    assert torch.get_num_threads() == threads  # the intra-op threads are given back


def test_workers_leave_when_their_parent_is_killed(tmp_path):
    """A parent killed with SIGKILL (no cleanup) leaves no worker running: each sees its pipe close."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_packed_procs import open_procs
        trainer, idx, session = open_procs()
        print(*[w.pid for w in session.workers], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_shared_copies_keep_values_shapes_and_gradient_flags():
    tensors = [torch.randn(3, 5, requires_grad=True), torch.arange(7), torch.zeros(0, 4),
               torch.ones(2, dtype=torch.bool)]
    copies = shared_like(tensors)
    for t, c in zip(tensors, copies):
        assert torch.equal(c, t.detach()) and c.dtype == t.dtype and c.requires_grad == t.requires_grad


def test_packed_procs_is_timed_from_four_threads_and_can_be_asked_for_with_fewer():
    x, y = data()
    trainer = BatchTrainer(jobs(y), [InputGroup(x, x[:50], y[:50])], TrainConfig(batch_size=64))
    idx = torch.arange(len(WIDTHS))
    torch.set_num_threads(PROCESS_WORKERS_FROM)
    assert "packed-procs" in candidates(trainer, idx)
    torch.set_num_threads(2)
    assert "packed-procs" not in candidates(trainer, idx)
    assert "packed-procs" in candidates(trainer, idx, worth_trying=False)
