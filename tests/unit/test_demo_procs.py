"""Which processes the demo counts as its own (review 2, #12), and admin ports taken before a node binds
them (#13).

``is_ours`` and ``processes_under`` match whole arguments (or ``-option=value``) of tor, bitcoind and
python/pasar only: a ``tail -f`` of a demo log neither blocks ``pasar demo down`` nor gets signalled.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.demo import market
from node.demo import nodes as nd
from node.demo.api import wait_for
from node.demo.bitcoind import find_bitcoind
from node.demo.state import DemoError, NodeInfo, Proc, State, is_ours, processes_under, stop
from node.testnet.tools import free_ports

SLEEPER = "import sys, time; time.sleep(120)"


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _start(started: list[subprocess.Popen[bytes]], args: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    started.append(proc)
    program = Path(args[0]).name.encode()

    def execed() -> bool:  # after the fork, /proc shows the parent's command line until exec
        return Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].endswith(program)

    wait_for(f"{args[0]} runs", execed, 30, pause=0.05)
    return proc


def test_a_viewer_of_a_demo_log_is_neither_ours_nor_in_the_way(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    root = tmp_path / "demo"
    log = root / "nodes" / "buyer" / "data" / "node.log"
    log.parent.mkdir(parents=True)
    log.write_text("started\n")
    tail = _start(spawn, ["tail", "-f", str(log)])
    data_dir = str(log.parent)
    assert not is_ours(tail.pid, str(log))  # its argument, but tail is not a program the demo starts
    assert processes_under(root) == []
    stop([Proc("buyer", tail.pid, str(log))], wait=1)
    assert tail.poll() is None
    node = _start(spawn, [sys.executable, "-c", SLEEPER, "--data-dir", data_dir])
    assert is_ours(node.pid, data_dir) and processes_under(root) == [node.pid]


def test_markers_match_whole_arguments_or_option_values(tmp_path: Path, spawn: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "demo"
    datadir = str(root / "bitcoind" / "datadir")
    core = _start(spawn, [sys.executable, "-c", SLEEPER, f"-datadir={datadir}", "-regtest"])
    other = _start(spawn, [sys.executable, "-c", SLEEPER, "--data-dir", datadir + "-old"])
    assert is_ours(core.pid, datadir)  # bitcoind's -datadir=DIR
    assert not is_ours(other.pid, datadir)  # a longer path that merely starts with the marker
    assert not is_ours(core.pid, str(root))  # the root is no argument of it
    assert sorted(processes_under(root)) == sorted([core.pid, other.pid])
    stop([Proc("bitcoind", other.pid, datadir)], wait=1)
    assert other.poll() is None


# -- #13: admin ports ---------------------------------------------------------------------------------
BINDER = """
import socket, sys, time
port, log = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
try:
    s.bind(("127.0.0.1", port))
except OSError as exc:
    with open(log, "a") as f:  # the node's own words (node/app serve) when its admin port is in use
        f.write(f"error: admin port {port} on 127.0.0.1 is unavailable ({exc.strerror}); is another node running?\\n")
    sys.exit(1)
s.listen(8)
time.sleep(120)
"""


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch, spawn: list[subprocess.Popen[bytes]]) -> Iterator[tuple[int, list[int]]]:
    """A port another program holds (bound, as an outgoing connection's is), handed out by the demo's first
    ``free_ports`` calls."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port, calls = holder.getsockname()[1], [0]

    def ports(count: int) -> list[int]:
        calls[0] += 1
        return [port] if calls[0] <= taken_calls[0] else free_ports(count)

    def launch(node: NodeInfo, password: str) -> Proc:
        """A stand-in for ``pasar run``: binds the admin port of its pasar.toml, or logs as the node does."""
        config = (Path(node.data_dir) / "pasar.toml").read_text()
        port = next(line.split("=")[1].strip() for line in config.splitlines() if line.startswith("admin_port"))
        log = str(Path(node.data_dir) / "node.log")
        args = [sys.executable, "-c", BINDER, port, log, "--data-dir", node.data_dir]
        spawn.append(subprocess.Popen(args, stdin=subprocess.DEVNULL))
        return Proc(node.name, spawn[-1].pid, node.data_dir)

    taken_calls = [1]
    monkeypatch.setattr(market, "free_ports", ports)
    monkeypatch.setattr(nd, "launch", launch)
    with holder:
        yield port, taken_calls


def _one_node(tmp_path: Path) -> State:
    data_dir = tmp_path / "demo" / "nodes" / "buyer" / "data"
    data_dir.mkdir(parents=True)
    state = State(str(tmp_path / "demo"))
    state.nodes = [NodeInfo("buyer", "buyer", str(data_dir), 0, wallet="buyer")]
    return state


def test_a_node_whose_admin_port_was_taken_starts_again_on_another(
    tmp_path: Path, taken: tuple[int, list[int]]
) -> None:
    port, _ = taken
    state = _one_node(tmp_path)
    try:
        market._start_nodes(state, lambda node: {"admin_port": node.admin_port})
        (node,) = state.nodes
        assert node.admin_port not in (0, port)
        assert f"admin_port = {node.admin_port}\n" in (Path(node.data_dir) / "pasar.toml").read_text()
        (proc,) = state.procs  # the one that exited is no longer recorded
        assert is_ours(proc.pid, node.data_dir)
    finally:
        stop(state.procs)


def test_a_port_taken_on_every_try_says_so(tmp_path: Path, taken: tuple[int, list[int]]) -> None:
    port, taken_calls = taken
    taken_calls[0] = market.PORT_TRIES
    state = _one_node(tmp_path)
    try:
        with pytest.raises(nd.PortTaken, match=f"admin port {port} was taken"):
            market._start_nodes(state, lambda node: {"admin_port": node.admin_port})
    finally:
        stop(state.procs)


def test_pasar_bitcoind_must_name_a_program_down_knows_as_bitcoind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("run-core.sh", "bitcoind-27.1"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PASAR_BITCOIND", str(tmp_path / "run-core.sh"))
    with pytest.raises(DemoError, match="name the bitcoind program itself"):
        find_bitcoind()
    monkeypatch.setenv("PASAR_BITCOIND", str(tmp_path / "bitcoind-27.1"))
    assert find_bitcoind() == tmp_path / "bitcoind-27.1"
