"""The demo's regtest bitcoind: found, started on free loopback ports with cookie auth, asked over JSON-RPC.

(tests/regtest.py does the same for the test suite with python-bitcoinrpc; its ``find_bitcoind`` rule
is the same as ``find_bitcoind`` here.)
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..testnet.tools import free_ports
from .api import LOCAL
from .state import OUR_PROGRAMS, DemoError

START_TIMEOUT = 90.0
RPC_TIMEOUT = 120.0
NOT_FOUND = (
    "no bitcoind: set PASAR_BITCOIND to a bitcoind program, or run deploy/build-bitcoind.sh once (about 15 "
    "minutes; it caches one under ${XDG_CACHE_HOME:-~/.cache}/pasar/bitcoind/)"
)


def find_bitcoind() -> Path:
    """``PASAR_BITCOIND``, else the newest build cached by deploy/build-bitcoind.sh; DemoError naming both."""
    env = os.environ.get("PASAR_BITCOIND")
    if env:
        if not os.access(env, os.X_OK):
            raise DemoError(f"PASAR_BITCOIND={env} is not an executable file; {NOT_FOUND}")
        if not (Path(env).name.startswith("bitcoind") and OUR_PROGRAMS.fullmatch(Path(env).name)):
            # `pasar demo down` stops only processes named as the demo's programs (state.is_ours)
            raise DemoError(f"PASAR_BITCOIND={env}: name the bitcoind program itself (bitcoind*), not a wrapper")
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pasar" / "bitcoind"
    found = sorted(cache.glob("*/bitcoind"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        if os.access(path, os.X_OK):
            return path
    raise DemoError(NOT_FOUND)


class Bitcoind:
    """One regtest bitcoind under ``root`` (datadir, logs); started and asked by the demo."""

    def __init__(self, root: Path, program: Path) -> None:
        self.root, self.program = root, program
        self.datadir = root / "datadir"
        self.rpc_port, self.p2p_port = free_ports(2)
        self.pid = 0

    @property
    def cookie(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    @property
    def cli_program(self) -> str:
        beside = self.program.with_name("bitcoin-cli")
        return str(beside) if os.access(beside, os.X_OK) else "bitcoin-cli"

    def args(self) -> list[str]:
        return [
            str(self.program), "-regtest", f"-datadir={self.datadir}", f"-port={self.p2p_port}",
            f"-rpcport={self.rpc_port}", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-server=1", "-listen=0",
            "-connect=0", "-dnsseed=0", "-fixedseeds=0", "-discover=0", "-fallbackfee=0.0002", "-rpcthreads=8",
            "-printtoconsole=0", f"-debuglogfile={self.root / 'debug.log'}",
        ]  # fmt: skip

    def launch(self) -> int:
        """Start the process (its PID at once, for the registry); ``wait_ready`` waits for its RPC."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        with open(self.root / "bitcoind.log", "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = proc.pid
        return proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{self.pid}").exists() or _zombie(self.pid):
                raise DemoError(f"bitcoind exited at start; see {self.root / 'debug.log'}")
            if self.cookie.exists():
                try:
                    self.call("getblockchaininfo", timeout=5)
                    return
                except DemoError:
                    pass
            time.sleep(0.2)
        raise DemoError(f"bitcoind's RPC did not answer within {timeout:.0f}s; see {self.root / 'debug.log'}")

    def call(self, method: str, *params: Any, wallet: str | None = None, timeout: float = RPC_TIMEOUT) -> Any:
        """One JSON-RPC call with the cookie; Core's error -> DemoError naming the method."""
        path = f"/wallet/{wallet}" if wallet else "/"
        try:
            auth = base64.b64encode(self.cookie.read_bytes().strip()).decode()
        except OSError as exc:
            raise DemoError(f"no cookie at {self.cookie}: is the demo's bitcoind running?") from exc
        body = json.dumps({"jsonrpc": "1.0", "id": "demo", "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}{path}", data=body, method="POST")
        req.add_header("Authorization", f"Basic {auth}")
        req.add_header("Content-Type", "application/json")
        try:
            with LOCAL.open(req, timeout=timeout) as resp:  # no proxy: the cookie stays on this machine
                raw = resp.read()
        except urllib.error.HTTPError as exc:  # Core answers RPC errors with 404/500 and a JSON body
            raw = exc.read()
        except OSError as exc:
            raise DemoError(f"bitcoind {method}: no answer on 127.0.0.1:{self.rpc_port}: {exc}") from exc
        try:
            reply = json.loads(raw, parse_float=Decimal)
        except ValueError as exc:
            raise DemoError(f"bitcoind {method}: not a JSON-RPC answer: {raw[:200]!r}") from exc
        if reply.get("error"):
            raise DemoError(f"bitcoind {method}: {reply['error'].get('message')} (code {reply['error'].get('code')})")
        return reply.get("result")

    def create_wallet(self, name: str) -> None:
        # name, disable_private_keys, blank, passphrase, avoid_reuse, descriptors, load_on_startup
        self.call("createwallet", name, False, False, "", False, True, True)

    def address(self, wallet: str) -> str:
        return str(self.call("getnewaddress", "", "bech32", wallet=wallet))

    def mine(self, blocks: int, address: str) -> None:
        self.call("generatetoaddress", blocks, address)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True
