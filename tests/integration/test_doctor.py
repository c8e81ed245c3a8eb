"""``pasar doctor`` on a real setup: a node published on the private Tor network, the regtest
bitcoind, a real backup made with ``pasar backup``: every check is ``ok``. Then each failure prints
its fix: Core down, the wrong chain, a missing wallet, tor unreachable, keys readable by others,
no backup, a failed or old backup; and the clock checks' verdicts. Doctor changes nothing (no lock,
no ``-wal``/``-shm``), and a tor that stops answering after the probe does not hang it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.adapters.backup import record_status
from node.adapters.torcheck import tor_facts
from node.app.doctor import _consensus_clock, _user_version
from node.app.doctor_chain import _clock
from node.cli.doctor import node_holder
from node.core.backupfile import BackupStatus
from node.core.errors import TorError
from node.operations.doctor import Level
from node.testnet import TestNet
from tests.regtest import Regtest

from .conftest import Node, free_port, make_node

PUBLISH_TIMEOUT = 120.0


def settings(node: Node, regtest: Regtest, wallet: str, **more: str) -> None:
    lines = {
        "bitcoin_network": "regtest",
        "bitcoin_rpc_url": regtest.url,
        "bitcoin_rpc_cookie": str(regtest.cookie_path),
        "bitcoin_wallet": wallet,
        **more,
    }
    (node.data_dir / "pasar.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in lines.items()))


def doctor(node: Node, *flags: str) -> tuple[int, dict[str, str]]:
    """Exit code and ``{check name: "level detail"}`` of ``pasar doctor``."""
    done = node.cli("doctor", *flags, check=False)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines()[:-1]:  # the last line is the summary
        level, _, rest = line.partition(" ")
        name, _, detail = rest.partition(": ")
        assert level in ("ok", "warn", "fail"), line
        found[name] = f"{level} {detail}"
    return done.returncode, found


def wait_published(node: Node) -> None:
    deadline = time.monotonic() + PUBLISH_TIMEOUT
    while time.monotonic() < deadline:
        stores = json.loads(node.cli("store", "list", "--json").stdout)
        if all(s["status"] == "published" for s in stores):
            info = json.loads(node.cli("node", "--json").stdout)
            if info["node_status"] == "published":
                return
        time.sleep(1)
    raise AssertionError(f"stores not published within {PUBLISH_TIMEOUT}s: {node.read_log()}")


@pytest.fixture
def wallet(regtest: Regtest) -> str:
    name = f"doctor-{uuid.uuid4().hex[:8]}"
    regtest.create_wallet(name)
    regtest.mine(1)  # a recent tip
    return name


def test_every_check_passes_on_a_real_setup(tmp_path: Path, tornet: TestNet, regtest: Regtest, wallet: str) -> None:
    tor = tornet.start_client("doctor")
    node = make_node(tmp_path)
    try:
        settings(node, regtest, wallet, tor_control=f"127.0.0.1:{tor.control_port}")
        node.cli("store", "create", "Corner Shop")
        node.run_args = []
        node.start()
        wait_published(node)
        backup = tmp_path / "now.pasarbak"
        node.cli("backup", str(backup), PASAR_BACKUP_PASSPHRASE="doctor backup passphrase")
        assert backup.stat().st_size > 0
        code, checks = doctor(node)
    finally:
        node.stop()
        tornet.stop_client(tor)
    not_ok = {name: line for name, line in checks.items() if not line.startswith("ok ")}
    assert code == 0 and not not_ok, checks
    for name in ("data dir", "schema", "node", "tor", "clock (tor)", "node onion", "store 'Corner Shop'"):
        assert name in checks, checks
    for name in ("bitcoin", "bitcoin sync", "clock (bitcoin)", "bitcoin wallets", "disk", "backup"):
        assert name in checks, checks
    assert "published" in checks["store 'Corner Shop'"]
    assert "regtest chain" in checks["bitcoin"] and f"{wallet!r} loaded" in checks["bitcoin wallets"]


def test_each_failure_prints_its_fix(tmp_path: Path, regtest: Regtest, wallet: str) -> None:
    node = make_node(tmp_path)
    settings(node, regtest, wallet)
    code, checks = doctor(node)
    assert code == 0, checks  # nothing fails on a stopped node with Core up; what's left is a warning
    assert checks["node"].startswith("warn not running: start it with `pasar run`")
    assert checks["backup"].startswith("warn no backup yet: set backup_dir")

    code, checks = doctor(node, "--bitcoin-rpc-url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and checks["bitcoin"].startswith("fail Bitcoin Core did not answer getblockchaininfo")
    assert "is bitcoind running? check bitcoin_rpc_url" in checks["bitcoin"]

    code, checks = doctor(node, "--bitcoin-network", "signet")
    assert code == 1
    assert "runs the 'regtest' chain but bitcoin_network is 'signet'" in checks["bitcoin"]

    code, checks = doctor(node, "--bitcoin-wallet", "no-such-wallet")
    assert code == 1 and "createwallet no-such-wallet" in checks["bitcoin wallets"]

    code, checks = doctor(node, "--tor-control", f"127.0.0.1:{free_port()}")
    assert code == 1 and checks["tor"].startswith("fail nothing answers on tor's control port")
    assert "enable `ControlPort" in checks["tor"]

    record_status(
        node.data_dir, BackupStatus(int(time.time()) - 60, False, "no passphrase: set PASAR_BACKUP_PASSPHRASE")
    )
    code, checks = doctor(node)
    assert code == 1 and checks["backup"].startswith("fail the last backup failed")
    assert "set PASAR_BACKUP_PASSPHRASE" in checks["backup"]
    record_status(node.data_dir, BackupStatus(int(time.time()) - 30 * 86400, True, "old.pasarbak"))
    code, checks = doctor(node)
    assert checks["backup"].startswith("warn the last backup is 30 days old")

    (node.data_dir / "admin.token").chmod(0o644)
    code, checks = doctor(node)
    assert code == 1 and f"chmod 600 {node.data_dir / 'admin.token'}" in checks["data dir"]


def test_doctor_on_a_data_dir_never_initialised(tmp_path: Path) -> None:
    node = Node(tmp_path / "nothing", free_port())
    code, checks = doctor(node)
    assert code == 1 and checks == {"data dir": f"fail {node.data_dir} is not initialised: run `pasar init`"}


NOW = 1_800_000_000
HOUR = 3600
SKEWED = 'WARN BOOTSTRAP PROGRESS=80 TAG=conn_or WARNING="Clock skew -7200 in NETINFO cell" REASON=CLOCK_SKEW'


@pytest.mark.parametrize(
    ("after", "fresh", "until", "bootstrap", "level", "says"),
    [
        (NOW - 1800, None, NOW + 9000, "", Level.OK, "within"),
        (NOW + 3600, None, NOW + 14400, "", Level.FAIL, "this clock is 60 min behind tor's consensus"),
        (NOW - 20000, None, NOW - 7200, "", Level.FAIL, "expired 2 h ago: this clock runs ahead"),
        (None, None, None, "", Level.WARN, "no consensus yet"),
        # hourly consensuses: a right clock may be up to 2 h 51 min past valid-after
        (NOW - 170 * 60, NOW - 110 * 60, NOW + 10 * 60, "", Level.OK, "within"),
        (NOW - 3 * HOUR + 60, NOW - 2 * HOUR + 60, NOW + 60, SKEWED, Level.FAIL, "2 h ahead of the network"),
    ],
)
def test_tor_consensus_clock(
    after: int | None, fresh: int | None, until: int | None, bootstrap: str, level: Level, says: str
) -> None:
    check = _consensus_clock(after, until, NOW, fresh_until=fresh, bootstrap=bootstrap)
    assert check.level is level and says in check.detail, check


def test_tor_clock_ahead_past_the_refetch_time() -> None:
    """Past the latest time a tor client replaces its consensus, yet before valid-until: ahead."""
    after = NOW - 3 * HOUR + 5 * 60  # valid-until in 5 min; the refetch was due by after + 2 h 51 min
    check = _consensus_clock(after, after + 3 * HOUR, NOW + 15 * 60, fresh_until=after + HOUR)
    assert check.level is Level.FAIL and "past the time tor fetches a newer consensus" in check.detail, check


@pytest.mark.parametrize(
    ("chain", "offset", "net", "level", "says"),
    [
        ({"time": NOW - 300}, 0, "main", Level.OK, "within 0 s"),
        ({"time": NOW - 300}, 900, "main", Level.FAIL, "this clock is 15 min behind Core's peers"),
        ({"time": NOW + 3 * 3600}, 0, "main", Level.FAIL, "dated 3 h ahead"),
        ({"time": NOW - 5 * 3600}, 0, "main", Level.WARN, "5 h old: is Core connected"),
        ({"time": NOW - 5 * 3600}, 0, "regtest", Level.OK, "within"),
    ],
)
def test_bitcoin_clock(chain: dict[str, int], offset: int, net: str, level: Level, says: str) -> None:
    [check] = _clock(chain, {"timeoffset": offset}, NOW, net)
    assert check.level is level and says in check.detail


# -- doctor changes nothing -------------------------------------------------------------
def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_doctor_creates_and_changes_no_file(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.start()  # leaves WAL-mode databases behind, as a stopped node does
    node.stop()
    (node.data_dir / "node.lock").unlink(missing_ok=True)
    before = _tree(node.data_dir)
    assert any(name.endswith(".sqlite") for name in before)
    code, checks = doctor(node, "--payments", "false")
    assert code == 0, checks
    assert checks["schema"] == "ok every database is at this pasar's version", checks
    assert checks["node"].startswith("warn not running")
    assert _tree(node.data_dir) == before  # no node.lock, no -wal/-shm, nothing touched


def test_user_version_is_read_from_the_files(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "x.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the new version stays in the -wal, as on a running node
    conn.execute("CREATE TABLE t (a)")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.execute("BEGIN")
    conn.execute("PRAGMA user_version = 8")  # not committed: not seen
    before = _tree(tmp_path)
    assert sorted(before) == ["x.sqlite", "x.sqlite-shm", "x.sqlite-wal"]
    assert path.read_bytes()[60:64] == bytes(4)  # the main file's header still says 0
    assert _user_version(path) == 7
    assert _tree(tmp_path) == before  # nothing created, nothing written (not even the -shm)
    conn.rollback()
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sqlite"]  # folded in at close
    assert _user_version(path) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sqlite"]
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 10)
    assert _user_version(tmp_path / "junk.sqlite") is None


def test_node_holder_reads_the_lock_without_taking_it(tmp_path: Path) -> None:
    assert node_holder(tmp_path) is None  # no node.lock
    assert not (tmp_path / "node.lock").exists()
    lock = tmp_path / "node.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout)}))
    assert node_holder(tmp_path) is None  # a node that died left its PID behind
    lock.write_text(json.dumps({"pid": os.getpid()}))
    assert node_holder(tmp_path) is None  # alive, but it holds no lock: a reused PID
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert node_holder(tmp_path) == os.getpid()
    finally:
        os.close(fd)


# -- a tor that stops answering ---------------------------------------------------------
PROTOCOLINFO = b'250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor="0.4.8.16"\r\n250 OK\r\n'


@pytest.fixture
async def stalling_tor() -> AsyncIterator[str]:
    """A control port that answers doctor's probe, then never answers again (a stopped or stuck tor).

    At the end it closes every connection (and the ones stem then opens again) so that the blocked
    doctor thread ends with an error and closes its socket before the server goes.
    """
    writers: list[asyncio.StreamWriter] = []
    stalling = asyncio.Event()
    stalling.set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if not stalling.is_set():
            writer.close()
            return
        await reader.readline()
        if len(writers) == 1:  # the probe
            writer.write(PROTOCOLINFO)
            await writer.drain()
            writer.close()
            return
        await reader.read()  # stem's connection: no reply, until it goes away

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stalling.clear()
        for writer in writers:
            writer.close()
        deadline = time.monotonic() + 30
        while any(t.name == "pasar-doctor-tor" for t in threading.enumerate()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.close()


async def test_a_stuck_tor_gives_a_line_not_a_hang(stalling_tor: str) -> None:
    started = time.monotonic()
    with pytest.raises(TorError, match="did not answer within 1 s"):
        await tor_facts(stalling_tor, "", timeout=1)
    assert time.monotonic() - started < 10
    # and the process still exits while stem's thread waits for ever (it is a daemon)
    script = (
        "import asyncio, sys\n"
        "from node.adapters.torcheck import tor_facts\n"
        "from node.core.errors import TorError\n"
        "try:\n"
        f"    asyncio.run(tor_facts({stalling_tor!r}, '', timeout=1))\n"
        "except TorError as exc:\n"
        "    print(exc.message)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[2]
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and b"did not answer within 1 s" in stdout
