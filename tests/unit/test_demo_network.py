"""A demo that fails (or gets Ctrl-C) while its private Tor network starts (review 2, #5 and #6).

The network starts in a thread beside bitcoind and ``pasar init``; a failure there cancels it at once (no
wait for TOR_UP), no tor is left running, no thread is left to hold up the exit, and the network's logs stay
until ``pasar demo down``, which removes everything. Real tors of node.testnet on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from node.adapters.fsutil import make_private_dir
from node.demo import market
from node.demo.api import wait_for
from node.demo.bitcoind import Bitcoind
from node.demo.state import DemoError, State
from node.testnet import TestNet
from node.testnet.tools import is_ours

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("tor") and shutil.which("tor-gencert")), reason="needs tor, tor-gencert"),
]


def _running_tors(net: TestNet) -> list[tuple[int, Path]]:
    try:
        registry = json.loads((net.root / "network.json").read_text())
    except (OSError, ValueError):
        return []
    nodes = [(n["pid"], Path(n["torrc"])) for n in registry["authorities"] + registry["relays"]]
    return [(pid, torrc) for pid, torrc in nodes if pid and is_ours(pid, torrc)]


class _FailingBitcoind(Bitcoind):
    """Fails, the way ``wait_ready`` does for a bitcoind that exits at start, once the network's tors run."""

    def __init__(self, net: TestNet, error: BaseException) -> None:
        super().__init__(net.root.parent / "bitcoind", Path("/nonexistent/bitcoind"))
        self.net, self.error = net, error
        self.tors: list[tuple[int, Path]] = []

    def wait_ready(self, timeout: float = 120) -> None:
        def all_logging() -> list[tuple[int, Path]]:
            tors = _running_tors(self.net)
            return tors if len(tors) == 6 and all((t.parent / "notice.log").exists() for _, t in tors) else []

        self.tors = wait_for("the network's six tors log", all_logging, timeout, pause=0.1)
        raise self.error


@pytest.mark.parametrize("error", [DemoError("bitcoind exited at start"), KeyboardInterrupt()])
def test_a_failure_while_the_network_starts_stops_it_at_once_and_keeps_its_logs(
    tmp_path: Path, error: BaseException
) -> None:
    root = tmp_path / "demo"
    make_private_dir(root)
    state = State(str(root))
    state.save()
    net = TestNet(root / "tor")
    make_private_dir(net.root)
    core = _FailingBitcoind(net, error)
    try:
        with pytest.raises(type(error)):
            market._beside_the_network(state, net, core)
        failed_at = time.monotonic()
        assert core.tors and not [pid for pid, torrc in core.tors if is_ours(pid, torrc)]
        assert not [t for t in threading.enumerate() if t.name.startswith("testnet-up")]
        assert not (net.root / "network.json").exists()
        market._stop_all(state, net, keep_logs=True)  # what up() does next
        assert time.monotonic() - failed_at < 30  # nothing waits for TOR_UP (300 s)
        logs = sorted(p.parent.name for p in (net.root / "net").glob("*/notice.log"))
        assert logs == ["auth0", "auth1", "auth2", "relay0", "relay1", "relay2"]
        assert market.down(root) == []
        assert not root.exists()
    finally:
        net.cancel()
        net.down()
