"""Suite-wide fixtures. No test may touch the network: downloads are tested against a local server
(127.0.0.1) or a patched fetch."""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

LOOPBACK_MIRROR = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once
MIRROR_VARIABLES = ("GENLAB_MNIST_MIRROR", "GENLAB_FASHION_MNIST_MIRROR", "GENLAB_CIFAR10_MIRROR")


REAL = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex, "getaddrinfo": socket.getaddrinfo}
"""What the guards call once an address is allowed (tests of the guard swap in recorders)."""


class NetworkBlocked(OSError):
    """A test tried to reach a host other than this machine."""


def _is_local(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard(address) -> None:
    host = address[0] if isinstance(address, tuple) else None
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return
    if not _is_local(host):
        raise NetworkBlocked(f"tests may not use the network (tried to reach {address!r})")


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory):
    """One ``$GENLAB_CACHE`` (generated data, the engine's strategy choices) for the whole run and
    the subprocesses it starts, so that tests neither read nor change the user's cache, and every
    run of a workload in the session computes with the strategy chosen for it first."""
    before = os.environ.get("GENLAB_CACHE")
    os.environ["GENLAB_CACHE"] = str(tmp_path_factory.mktemp("genlab-cache"))
    yield
    if before is None:
        os.environ.pop("GENLAB_CACHE", None)
    else:
        os.environ["GENLAB_CACHE"] = before


@pytest.fixture(autouse=True, scope="session")
def snapshot_every_due_epoch():
    """Resume snapshots at every ``snapshot_every`` epochs, however short the training
    (``$GENLAB_SNAPSHOT_SECONDS=0``, for this process and the runs it starts): the suite's runs
    take seconds, and the resume tests must find snapshots to resume from. The default interval
    is tested in tests/test_engine.py."""
    before = os.environ.get("GENLAB_SNAPSHOT_SECONDS")
    os.environ["GENLAB_SNAPSHOT_SECONDS"] = "0"
    yield
    if before is None:
        os.environ.pop("GENLAB_SNAPSHOT_SECONDS", None)
    else:
        os.environ["GENLAB_SNAPSHOT_SECONDS"] = before


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse connections and name lookups for anything but loopback, in this process; point the
    dataset mirrors at a closed loopback port, for subprocesses the test starts."""
    def connect(self, address):
        _guard(address)
        return REAL["connect"](self, address)

    def connect_ex(self, address):
        _guard(address)
        return REAL["connect_ex"](self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host.decode() if isinstance(host, bytes) else host):
            raise NetworkBlocked(f"tests may not use the network (tried to resolve {host!r})")
        return REAL["getaddrinfo"](host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for variable in MIRROR_VARIABLES:
        monkeypatch.setenv(variable, LOOPBACK_MIRROR)


@pytest.fixture
def genlab_cli(capsys):
    """``genlab ARGS`` in this process: returns (exit code, stderr)."""
    from genlab.cli import main

    def run(args: list[str]) -> tuple[int, str]:
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    return run
