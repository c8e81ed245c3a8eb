"""The private Tor network on 127.0.0.1 (node.testnet): loopback-only torrcs and sockets, a client
bootstrap, idempotent up(), and down() by PID from a fresh process.

One network serves the whole module; the down() test runs last. Timings are logged (run with
``-o log_cli=true --log-cli-level=INFO`` to see them), never asserted.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testnet import ClientTor, TestNet, TestNetError, local_only

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNet]:
    network = TestNet(tmp_path_factory.mktemp("testnet"))
    started = time.monotonic()
    try:
        network.up()
        log.info("TIMING up() took %.1f s", time.monotonic() - started)
        yield network
    finally:
        network.down()


def registry(net: TestNet) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((net.root / "network.json").read_text())
    return data


def registry_pids(net: TestNet) -> list[tuple[int, str]]:
    data = registry(net)
    return [(n["pid"], n["torrc"]) for kind in ("authorities", "relays", "clients") for n in data[kind]]


def alive(pid: int) -> bool:
    """A live (not zombie) process: a zombie is dead, only not yet reaped by its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _decode(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address.split(":")[0])
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # 32-bit words in host order
    return ipaddress.ip_address(raw)


def socket_addresses(pid: int) -> list[tuple[str, str]]:
    """(local, remote) addresses of every TCP/UDP socket ``pid`` holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.append((str(_decode(fields[1])), str(_decode(fields[2]))))
    return found


def control(client: ClientTor, *commands: str) -> str:
    cookie = client.cookie_path.read_bytes().hex()
    with socket.create_connection(("127.0.0.1", client.control_port), timeout=10) as sock:
        sock.sendall("".join(f"{c}\r\n" for c in (f"AUTHENTICATE {cookie}", *commands, "QUIT")).encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply.decode()


def test_every_generated_torrc_is_local_only(net: TestNet) -> None:
    torrcs = [*net.torrc_files(), net.root / "member.torrc"]
    assert len(torrcs) >= 7
    for torrc in torrcs:
        assert local_only(torrc.read_text()), torrc
    member = (net.root / "member.torrc").read_text()
    assert member.count("DirAuthority ") == 3 and "TestingTorNetwork 1" in member
    assert member.splitlines()[1:] == net.member_torrc_lines()
    for pid, path in registry_pids(net):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert args[1:5] == ["-f", path, "--defaults-torrc", str(net.root / "empty")]


def test_local_only_rejects_public_or_missing_authorities() -> None:
    auth = "DirAuthority a orport=9001 no-v2 v3ident=" + "A" * 40 + " {addr}:9030 " + "B" * 40
    assert local_only(auth.format(addr="127.0.0.1") + "\nSocksPort 0\n")
    assert local_only(auth.format(addr="127.0.0.2"))
    assert not local_only(auth.format(addr="128.31.0.39"))
    assert not local_only(auth.format(addr="127.0.0.1") + "\n" + auth.format(addr="198.51.100.7"))
    assert not local_only(auth.format(addr="localhost"))
    assert not local_only("SocksPort 0\nTestingTorNetwork 1\n")
    assert not local_only("# DirAuthority a 127.0.0.1:9030 " + "B" * 40)
    assert not local_only(auth.format(addr="127.0.0.1") + "\nFallbackDir 193.23.244.244:80 orport=443 id=" + "C" * 40)
    assert not local_only(auth.format(addr="127.0.0.1") + "\nbridge obfs4 192.0.2.1:443 " + "D" * 40)
    assert not local_only(auth.format(addr="127.0.0.1") + "\n%include /etc/tor/torrc.d/")


def test_consensus_flags_guard_authorities_and_hsdir_relays(net: TestNet) -> None:
    consensus = Path(registry(net)["authorities"][0]["data_dir"]) / "cached-microdesc-consensus"
    flags: dict[str, list[str]] = {}
    name = ""
    for line in consensus.read_text().splitlines():
        if line.startswith("r "):
            name = line.split()[1]
        elif line.startswith("s "):
            flags[name] = line.split()[1:]
    assert sorted(flags) == ["auth0", "auth1", "auth2", "relay0", "relay1", "relay2"]
    for name, node_flags in flags.items():
        assert ("Guard" in node_flags) == name.startswith("auth"), (name, node_flags)
        assert ("HSDir" in node_flags) == name.startswith("relay"), (name, node_flags)


def test_client_bootstraps_and_talks_only_to_loopback(net: TestNet) -> None:
    started = time.monotonic()
    client = net.start_client("c1")
    log.info("TIMING start_client() took %.1f s", time.monotonic() - started)
    assert client.cookie_path == client.data_dir / "control_auth_cookie"
    assert (client.data_dir.stat().st_mode & 0o777) == 0o700
    assert "PROGRESS=100" in control(client, "GETINFO status/bootstrap-phase")
    assert client.pid in [pid for pid, _ in registry_pids(net)]
    for pid, _ in registry_pids(net):
        for local, remote in socket_addresses(pid):
            assert ipaddress.ip_address(local).is_loopback, (pid, local)
            assert ipaddress.ip_address(remote).is_loopback or ipaddress.ip_address(remote).is_unspecified
    old_pid = client.pid
    started = time.monotonic()
    net.restart_client(client)
    log.info("TIMING restart_client() took %.1f s", time.monotonic() - started)
    assert client.pid != old_pid and not alive(old_pid)
    assert "PROGRESS=100" in control(client, "GETINFO status/bootstrap-phase")
    net.stop_client(client)
    assert not alive(client.pid)
    assert "c1" not in [c["name"] for c in registry(net)["clients"]]


def test_up_again_is_idempotent(net: TestNet) -> None:
    before = registry_pids(net)
    net.up()
    TestNet(net.root).up()
    assert registry_pids(net) == before
    assert TestNet.attach(net.root).is_up()


def test_a_stopped_child_is_reaped_while_proc_no_longer_shows_its_torrc(tmp_path: Path) -> None:
    # An exiting tor loses its /proc cmdline before it can be waited for: is_ours() is already False, and
    # a bare poll() left the Popen unreaped (a ResourceWarning, so an error, in a loaded test run).
    network = TestNet(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    network._procs[child.pid] = child
    network._stop_pids([(child.pid, tmp_path / "torrc")])  # not signalled: /proc does not name this torrc
    assert child.returncode == 0


def test_stale_registry_is_refused_and_foreign_pids_are_never_signalled(tmp_path: Path) -> None:
    stale = {"name": "auth0", "pid": os.getpid(), "torrc": str(tmp_path / "torrc"), "data_dir": str(tmp_path)}
    stale["or_port"] = 1
    data = {"ready": True, "tor_binary": "tor", "authorities": [stale], "relays": [stale], "clients": []}
    (tmp_path / "network.json").write_text(json.dumps(data))
    with pytest.raises(TestNetError, match="down"):
        TestNet(tmp_path).up()
    TestNet(tmp_path).down()  # the PID is this pytest, not a tor of the network: it must survive
    assert not (tmp_path / "network.json").exists()


def test_down_from_a_fresh_process_stops_every_tor(net: TestNet) -> None:
    client = net.start_client("c2")
    pids = registry_pids(net)
    assert client.pid in [pid for pid, _ in pids] and len(pids) == 7
    code = f"from pathlib import Path; from node.testnet import TestNet; TestNet(Path({str(net.root)!r})).down()"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    assert [pid for pid, _ in pids if alive(pid)] == []
    assert not net.is_up()
    assert not (net.root / "net").exists() and not (net.root / "network.json").exists()
