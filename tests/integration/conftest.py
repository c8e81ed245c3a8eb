"""Start real ``pasar`` processes on loopback and talk to them over real HTTP.

Every process a test starts is stopped by its PID in teardown; waits are
bounded in count and time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.testnet import TestNet
from tests.integration.escrow_world import World, open_world
from tests.regtest import Regtest

PASSWORD = "correct horse battery"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env.update(PASAR_DATA_DIR=str(data_dir), PASAR_ADMIN_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def pasar(
    data_dir: Path, *args: str, check: bool = True, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "node", *args],
        env=cli_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pasar {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@dataclass
class Node:
    data_dir: Path
    admin_port: int
    proc: subprocess.Popen[str] | None = None
    _log: object = None
    log: list[str] = field(default_factory=list)
    run_args: list[str] = field(default_factory=lambda: ["--no-tor"])

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        self._log = open(self.data_dir / "node.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", *self.run_args, "--admin-port", str(self.admin_port)],
            env=cli_env(self.data_dir, PASAR_STORE_PORT_BASE="0"),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(400):
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.read_log()}")
            info = self.lock_info()
            if info.get("pid") == self.proc.pid and self._port_open():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"node did not start within {START_TIMEOUT}s: {self.read_log()}")

    def _port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.admin_port)) == 0

    def lock_info(self) -> dict[str, object]:
        try:
            return json.loads((self.data_dir / "node.lock").read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def read_log(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        code = self.proc.returncode
        self._log.close()
        self.proc = None
        return code

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        return pasar(self.data_dir, *args, check=check, **env)


def make_node(tmp_path: Path) -> Node:
    data_dir = tmp_path / "data"
    pasar(data_dir, "init")
    return Node(data_dir, free_port())


@pytest.fixture
def node_factory(tmp_path):
    started: list[Node] = []

    def factory(name: str = "n") -> Node:
        node = make_node(tmp_path / name)
        started.append(node)
        return node

    yield factory
    for node in started:
        node.stop()


@pytest.fixture
def running_node(node_factory):
    node = node_factory()
    node.start()
    return node


@pytest.fixture(scope="session")
def tornet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNet]:
    """One private Tor network on 127.0.0.1 for the whole session (node/testnet.py)."""
    network = TestNet(tmp_path_factory.mktemp("tornet"))
    try:
        network.up()
        yield network
    finally:
        network.down()


@pytest.fixture
async def world(
    regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore, tmp_path: Path
) -> AsyncIterator[World]:
    """A vendor's payments, a moderator and the regtest chain (escrow_world.py); a test file may define its own."""
    async with open_world(regtest, vendor_core, moderator_core, tmp_path) as w:
        yield w
