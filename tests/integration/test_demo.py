"""``pasar demo`` end to end: up as a subprocess, a listing bought by the demo buyer, ``demo down`` cleans up.

The demo (node/demo/) runs a private Tor network, a regtest bitcoind and five ``pasar run`` nodes on
127.0.0.1. The buyer node orders one merchant's listing through its purchases API, pays from its wallet;
blocks are mined with the very ``bitcoin-cli`` line the demo printed; the merchant accepts and fulfills,
the buyer releases. Then ``pasar demo down`` must leave no recorded process running and no file.
Every wait is on a condition with a generous bounded deadline (the machine is small and shared). It runs
with ``http_proxy`` naming a listener that must receive nothing: the demo never leaves loopback.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from node.demo import DemoError, State
from node.demo.api import Admin, wait_for
from node.demo.bitcoind import find_bitcoind
from node.demo.state import Proc, is_ours, processes_under, stop

pytestmark = pytest.mark.slow
UP_TIMEOUT = 1500.0  # tor consensus, five tors publishing onions, gossip and crawls, on 2 busy cores
STEP_TIMEOUT = 420.0


def _needs() -> None:
    missing = []
    try:
        find_bitcoind()
    except DemoError as exc:
        missing.append(exc.message)
    if not (shutil.which("tor") or Path("/usr/sbin/tor").exists()) or not shutil.which("tor-gencert"):
        missing.append("tor and tor-gencert: apt install tor")
    if missing:
        if os.environ.get("CI"):
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))


def pasar(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_") or k == "PASAR_BITCOIND"}
    return subprocess.run(
        [sys.executable, "-m", "node", *args], env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def mine_line(printed: str) -> list[str]:
    lines = printed.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("mine a block"))
    return shlex.split(lines[at + 1])


def state_of(admin: Admin, order: str, state: str, kind: str = "purchases") -> Any:
    view = admin.call("GET", f"/{kind}/{order}")
    return view if view["state"] == state else None


def buy_end_to_end(state: State, mine: list[str]) -> None:
    buyer, merchant = (Admin(n.name, n.admin_port, Path(n.data_dir)) for n in (state.node("buyer"), state.nodes[0]))
    store = state.nodes[0].stores[0]
    listing = store["listings"].split(",")[0]
    placed = buyer.call("POST", "/purchases", {
        "store": store["onion"], "listing": listing, "sku": None, "qty": 1, "shipping": "Post",
        "moderator": state.node("moderator").onion, "ship_to": "R. Heron, 1 Estuary Lane",
    })  # fmt: skip
    order = placed["id"]
    bought = wait_for("the escrow at the buyer", lambda: state_of(buyer, order, "awaiting_payment"), STEP_TIMEOUT)
    paid = buyer.call("POST", f"/purchases/{order}/pay", {
        "address": bought["escrow_address"], "amount_sat": bought["amount_sat"],
    })  # fmt: skip
    assert paid["paid_txid"], paid
    subprocess.run(mine, check=True, capture_output=True, timeout=120)  # the printed line, as a visitor runs it
    wait_for("the merchant sees it confirmed", lambda: state_of(merchant, order, "confirmed", "orders"), STEP_TIMEOUT)
    merchant.call("POST", f"/orders/{order}/accept", {})
    merchant.call("POST", f"/orders/{order}/fulfill", {"note": "posted, tracking RR123"})

    def payout() -> Any:
        view = buyer.call("GET", f"/purchases/{order}")
        return view["state"] == "fulfilled" and view["pending_payout"] and view

    wait_for("the release payout at the buyer", payout, STEP_TIMEOUT)
    buyer.call("POST", f"/purchases/{order}/release", {})
    subprocess.run(mine, check=True, capture_output=True, timeout=120)
    wait_for("the merchant's order completed", lambda: state_of(merchant, order, "completed", "orders"), STEP_TIMEOUT)
    wait_for("the buyer's purchase completed", lambda: state_of(buyer, order, "completed"), STEP_TIMEOUT)


def check_market(state: State, printed: str) -> None:
    """What the demo printed and what its nodes hold: three stores of listings with images, all in the
    buyer's directory; each storefront, admin URL, the password and the SOCKS port shown."""
    buyer = Admin("buyer", state.node("buyer").admin_port, Path(state.node("buyer").data_dir))
    merchants = [n for n in state.nodes if n.role == "merchant"]
    assert len(merchants) == 3 and {n.role for n in state.nodes} == {"merchant", "moderator", "buyer"}
    for node in merchants:
        admin = Admin(node.name, node.admin_port, Path(node.data_dir))
        (store,) = node.stores
        assert f"{store['onion']}.onion" in printed and node.admin_url in printed
        listings = admin.call("GET", f"/stores/{store['onion']}/listings")
        assert len(listings) >= 3 and all(item["images"] for item in listings), listings
        held = buyer.call("GET", f"/directory/stores/{store['onion']}")
        assert held["catalog_seq"], held
    assert state.password in printed and f"127.0.0.1:{state.socks_port}" in printed
    assert f"{state.node('buyer').admin_url}/directory" in printed
    assert f"up in {state.startup_seconds:.1f}s" in printed


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """``http_proxy`` (and the rest) name a listener that must receive nothing: every call stays on loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{listener.getsockname()[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with listener:
        yield listener
        with suppress(BlockingIOError):
            conn, _ = listener.accept()
            conn.close()
            pytest.fail("a request of the demo went to $http_proxy")


def test_demo_up_a_purchase_end_to_end_and_down_leaves_nothing(tmp_path: Path, proxy: socket.socket) -> None:
    _needs()
    root = tmp_path / "demo"
    up = pasar("demo", "--root", str(root), timeout=UP_TIMEOUT)
    recorded: list[tuple[int, str]] = []
    try:
        assert up.returncode == 0, f"pasar demo failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
        state = State.load(root)
        recorded = [(p.pid, p.marker) for p in state.procs]
        assert state.ready and all(is_ours(pid, marker) for pid, marker in recorded), state.procs
        status = pasar("demo", "status", "--root", str(root), timeout=60)
        assert status.returncode == 0 and "up" in status.stdout, status.stdout + status.stderr
        check_market(state, up.stdout)
        buy_end_to_end(state, mine_line(up.stdout))
    finally:
        if (root / "demo.json").exists():
            with suppress(DemoError):  # a torn registry: `down` below still says so, and cleans what it can
                recorded = recorded or [(p.pid, p.marker) for p in State.load(root).procs]
        down = pasar("demo", "down", "--root", str(root), timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid, marker in recorded if is_ours(pid, marker)], recorded
    assert not processes_under(root)
    assert not root.exists()
    assert pasar("demo", "status", "--root", str(root), timeout=60).returncode != 0


# -- without tor or bitcoind: the refusals and the PID checks ------------------------------------
def test_without_bitcoind_the_demo_says_where_to_get_one_and_makes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env["PASAR_BITCOIND"] = str(tmp_path / "no-such-bitcoind")
    got = subprocess.run(
        [sys.executable, "-m", "node", "demo", "--root", str(root)], env=env, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert got.returncode == 1, got.stdout + got.stderr
    assert "PASAR_BITCOIND" in got.stderr and "deploy/build-bitcoind.sh" in got.stderr, got.stderr
    assert not root.exists()


def test_status_and_down_without_a_demo_and_a_root_that_is_not_empty(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    status = pasar("demo", "status", "--root", str(root), timeout=60)
    assert status.returncode == 3 and "no demo" in status.stdout, status.stdout + status.stderr
    down = pasar("demo", "down", "--root", str(root), timeout=60)
    assert down.returncode == 1 and "no demo under" in down.stderr, down.stderr
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    up = pasar("demo", "--root", str(root), timeout=60)
    assert up.returncode == 1 and "not empty" in up.stderr, up.stderr
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]


def test_a_pid_is_signalled_only_while_its_command_line_names_the_marker(tmp_path: Path) -> None:
    marker = str(tmp_path / "demo" / "marker")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
    try:
        wait_for("the child's command line", lambda: is_ours(child.pid, marker), 30, pause=0.05)  # after its exec
        assert not is_ours(child.pid, str(tmp_path / "other"))
        stop([Proc("stranger", child.pid, str(tmp_path / "other"))], wait=1)
        assert child.poll() is None  # not ours by its command line: left alone
        assert processes_under(tmp_path / "demo") == [child.pid]
        stop([Proc("ours", child.pid, marker)])
        child.wait(timeout=10)  # stop() reaped it already (its status is lost to Popen)
        assert not is_ours(child.pid, marker) and not processes_under(tmp_path / "demo")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
