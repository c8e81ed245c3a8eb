"""A real regtest ``bitcoind`` for the tests (STYLE.md rule 11: HWI's harness does the same).

``Regtest(root)`` starts bitcoind from ``PASAR_BITCOIND`` or the cache of ``deploy/build-bitcoind.sh``
with a datadir under ``root``, free loopback ports, cookie auth, ``-regtest -listen=0 -connect=0``; every
wait is bounded; ``stop()`` ends the process it started, by its PID. Nothing but 127.0.0.1 is touched.

    rt = Regtest(tmp_path); rt.start()
    rt.create_wallet("miner"); rt.mine(101, to_wallet="miner")
    rt.cli("getblockcount"); rt.cli("getbalances", wallet="miner")
    rt.config_overrides("vendor")   # Pasar settings pointing at it (bitcoin_wallet = "vendor")
    rt.stop()
"""

from __future__ import annotations

import atexit
import http.client
import os
import socket
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

if TYPE_CHECKING:
    from node.adapters.bitcoin import BitcoinCore

BUILD_VERSION = "py-bitcoinkernel-0.1.0a5"  # keep in step with deploy/build-bitcoind.sh
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RPC_TIMEOUT = 60.0
COIN = 100_000_000
T = TypeVar("T")

__all__ = ["COIN", "Regtest", "RegtestError", "btc", "find_bitcoind", "free_port", "sats"]


class RegtestError(RuntimeError):
    """bitcoind could not be started, stopped or asked something (the message says why).

    ``rpc_code`` is Core's error code when Core answered with an error, else None.
    """

    def __init__(self, message: str, rpc_code: int | None = None) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code


def find_bitcoind() -> Path | None:
    """``PASAR_BITCOIND`` or the build script's cache; None when neither has a bitcoind."""
    env = os.environ.get("PASAR_BITCOIND")
    if env:
        return Path(env) if os.access(env, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "pasar" / "bitcoind" / BUILD_VERSION / "bitcoind"
    return path if os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sats(btc: Decimal | float | str) -> int:
    """BTC as Core prints it -> integer satoshis."""
    return int((Decimal(str(btc)) * COIN).to_integral_exact())


def btc(sat: int) -> str:
    """Integer satoshis -> the exact BTC text Core parses (never a float)."""
    return f"{sat // COIN}.{sat % COIN:08d}"


def _wait(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise RegtestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Regtest:
    """One regtest bitcoind in ``root/datadir``; start/stop/restart keep the datadir and ports."""

    def __init__(self, root: Path, bitcoind: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        found = bitcoind or find_bitcoind()
        if found is None:
            raise RegtestError(
                "no bitcoind: run deploy/build-bitcoind.sh (about 15 minutes once) or set PASAR_BITCOIND"
            )
        self.bitcoind = found
        self.extra_args = extra_args
        self.root = root
        self.datadir = root / "datadir"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.rpc_port = free_port()
        self.p2p_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.wallets: list[str] = []
        self._atexit = False
        self._started = False  # once started, the ports stay (adapters and configs point at them)

    # -- process -----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def cookie_path(self) -> Path:
        return self.datadir / "regtest" / ".cookie"

    @property
    def log_path(self) -> Path:
        return self.root / "bitcoind.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def args(self) -> list[str]:
        return [
            str(self.bitcoind),
            "-regtest",
            f"-datadir={self.datadir}",
            f"-port={self.p2p_port}",
            f"-rpcport={self.rpc_port}",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-server=1",
            "-listen=0",
            "-connect=0",
            "-dnsseed=0",
            "-fixedseeds=0",
            "-discover=0",
            "-txindex=0",
            "-fallbackfee=0.0002",
            "-rpcthreads=8",
            "-rpcworkqueue=128",
            "-printtoconsole=0",
            "-debuglogfile=" + str(self.root / "debug.log"),
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start bitcoind (same datadir and ports as before) and wait until RPC answers.

        The first start picks other free ports when another process took them in the meantime.
        """
        if self.running:
            return
        for attempt in range(3):
            try:
                self._launch()
                return
            except RegtestError:
                self.kill()  # never leave a half-started bitcoind behind
                if self._started or attempt == 2:
                    raise
                self.rpc_port, self.p2p_port = free_port(), free_port()

    def _launch(self) -> None:
        if self.cookie_path.exists():
            self.cookie_path.unlink()  # a stale cookie from a killed run would fool the wait
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        _wait("bitcoind's RPC", self._ready, START_TIMEOUT)
        self._started = True
        for name in self.wallets:  # wallets created with load_on_startup come back by themselves
            self._load(name)

    def _ready(self) -> bool | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RegtestError(f"bitcoind exited with {self.proc.returncode} at start:\n{self.log_tail()}")
        if not self.cookie_path.exists():
            return None
        try:
            self.cli("getblockchaininfo")
        except RegtestError:
            return None
        return True

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.root / "debug.log"):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self) -> None:
        """Stop the bitcoind this object started: ``stop`` RPC, then SIGTERM, then SIGKILL, each bounded."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.proc = None
            return
        try:
            self.cli("stop", timeout=10)
        except RegtestError:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is flushed; ``start()`` recovers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- RPC -----------------------------------------------------------------------
    def cli(self, method: str, *params: Any, wallet: str | None = None, timeout: float = RPC_TIMEOUT) -> Any:
        """One JSON-RPC call (numbers with a point come back as ``Decimal``); errors -> RegtestError.

        ``RegtestError.rpc_code`` is Core's error code (None when Core did not answer).
        """
        path = "" if wallet is None else "/wallet/" + quote(wallet, safe="")
        try:
            user, password = self.cookie_path.read_text().strip().split(":", 1)
        except (OSError, ValueError) as exc:
            raise RegtestError(f"no cookie at {self.cookie_path}: is bitcoind running?") from exc
        conn = http.client.HTTPConnection("127.0.0.1", self.rpc_port, timeout=timeout)
        proxy = AuthServiceProxy(f"http://{user}:{password}@127.0.0.1:{self.rpc_port}{path}", None, timeout, conn)
        try:
            return getattr(proxy, method)(*params)
        except JSONRPCException as exc:
            raise RegtestError(f"{method} {params!r}: {exc.message} (code {exc.code})", exc.code) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise RegtestError(f"{method}: bitcoind at {self.url} did not answer: {exc}") from exc
        finally:
            conn.close()

    def _load(self, name: str) -> None:
        try:
            self.cli("loadwallet", name)
        except RegtestError as exc:
            if exc.rpc_code != -35:  # already loaded
                raise

    # -- wallets and coins -------------------------------------------------------------
    def create_wallet(self, name: str, *, watch_only: bool = False) -> None:
        """A descriptor wallet (with private keys unless ``watch_only``), loaded again at each start."""
        if name in self.cli("listwallets"):
            return
        try:
            # name, disable_private_keys, blank, passphrase, avoid_reuse, descriptors, load_on_startup
            self.cli("createwallet", name, watch_only, watch_only, None, False, True, True)
        except RegtestError as exc:
            if exc.rpc_code != -36:  # exists on disk: load it
                raise
            self._load(name)
        if name not in self.wallets:
            self.wallets.append(name)

    def address(self, wallet: str) -> str:
        return str(self.cli("getnewaddress", "", "bech32", wallet=wallet))

    def key(self, wallet: str) -> str:
        """A fresh key of ``wallet`` as ``[fingerprint/path]pubkey`` (what a buyer pastes at checkout)."""
        info = self.cli("getaddressinfo", self.address(wallet), wallet=wallet)
        desc = str(info["desc"])
        inner = desc[desc.index("(") + 1 : desc.index(")")]
        return inner.replace("'", "h")

    def height(self) -> int:
        return int(self.cli("getblockcount"))

    def sync(self) -> None:
        """Wait until every wallet has seen what the node has (wallets learn of transactions and
        blocks asynchronously: without this, a watch-only wallet may not list a payment just sent)."""
        self.cli("syncwithvalidationinterfacequeue")

    def mine(self, n: int = 1, to_wallet: str = "miner") -> list[str]:
        """Mine ``n`` blocks to a fresh address of ``to_wallet``; their hashes (wallets synced)."""
        hashes = list(self.cli("generatetoaddress", n, self.address(to_wallet), timeout=120))
        self.sync()
        return hashes

    def fund(self, wallet: str, address: str, sat: int) -> str:
        """Send ``sat`` from ``wallet`` to ``address`` (stays in the mempool until ``mine``; every wallet
        has seen it when this returns); the txid."""
        txid = str(self.cli("sendtoaddress", address, btc(sat), wallet=wallet))
        self.sync()
        return txid

    def balance(self, wallet: str) -> int:
        """Trusted + pending balance of ``wallet`` in sat (immature coinbase excluded)."""
        mine = self.cli("getbalances", wallet=wallet)["mine"]
        return sats(mine["trusted"]) + sats(mine["untrusted_pending"])

    def sign(self, wallet: str, psbt: str) -> str:
        """``walletprocesspsbt psbt true "ALL" true false`` in ``wallet`` (the buyer signing outside Pasar)."""
        return str(self.cli("walletprocesspsbt", psbt, True, "ALL", True, False, wallet=wallet)["psbt"])

    def in_mempool(self, txid: str) -> bool:
        return txid in self.cli("getrawmempool")

    # -- Pasar's view of it ---------------------------------------------------------------
    def config_overrides(self, wallet: str) -> dict[str, Any]:
        """Pasar settings (``config.load(..., flags=...)`` or ``Config(...)`` keywords) pointing at this node."""
        return {
            "bitcoin_network": "regtest",
            "bitcoin_rpc_url": self.url,
            "bitcoin_rpc_cookie": str(self.cookie_path),
            "bitcoin_wallet": wallet,
            "fallback_fee_rate": 2,
        }

    def env(self, wallet: str) -> dict[str, str]:
        """The same as ``PASAR_*`` variables, for a ``pasar`` process."""
        return {f"PASAR_{k.upper()}": str(v) for k, v in self.config_overrides(wallet).items()}

    def adapter(self, wallet: str, watch_wallet: str, **settings: Any) -> BitcoinCore:
        """A ``BitcoinCore`` adapter signing with ``wallet`` and watching in ``watch_wallet``."""
        from node.adapters.bitcoin import BitcoinCore, BitcoinSettings

        values = {**self.config_overrides(wallet), **settings}
        return BitcoinCore(BitcoinSettings.from_values(values), watch_wallet)
