"""``pasar demo``: a whole market on 127.0.0.1, brought up, described and taken down.

Under ``root``: ``demo.json`` (the registry: PIDs, ports, paths, the admin password), ``tor/`` (the private
Tor network of node.testnet, and a tor client for a browser), ``bitcoind/`` (regtest datadir and logs) and
``nodes/<name>/data`` (three merchants, a moderator, a buyer: ``pasar run`` each, with its own tor).
``down`` stops every recorded PID still ours, then the network, and removes ``root``.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..adapters.fsutil import make_private_dir
from ..testnet import TestNet, TestNetError
from ..testnet.tools import free_ports
from . import nodes as nd
from .api import Admin, ApiError, wait_for
from .bitcoind import Bitcoind, find_bitcoind
from .catalog import SHOPS, listing_body, picture
from .state import REGISTRY, DemoError, NodeInfo, Proc, State, is_ours, processes_under, stop

Say = Callable[[str], None]
TOR_UP = 300.0  # the private network's first consensus on a busy 2-core machine
TOR_REACH = 600.0  # fresh onions published and first circuits between five embedded tors
PORT_TRIES = 3  # starts of a node whose admin port another program took first
BUYER_COINS = 5  # coinbase outputs of 50 BTC each, mature
MODERATOR = "moderator"
BUYER = "buyer"


def plan(root: Path) -> list[NodeInfo]:
    """The five nodes and their wallets (nothing started; admin ports are picked when they start)."""
    names = [shop.node for shop in SHOPS] + [MODERATOR, BUYER]
    roles = ["merchant"] * len(SHOPS) + [MODERATOR, BUYER]
    return [
        NodeInfo(name, role, str(root / "nodes" / name / "data"), 0, wallet=name)
        for name, role in zip(names, roles, strict=True)
    ]


def node_settings(node: NodeInfo, everyone: list[NodeInfo], bitcoind: Bitcoind, member: Path) -> dict[str, object]:
    """Each node seeds gossip with every other node: the buyer's directory hears of all three stores."""
    return {
        "admin_port": node.admin_port, "tor_extra_torrc": str(member), "bitcoin_network": "regtest",
        "bitcoin_rpc_url": f"http://127.0.0.1:{bitcoind.rpc_port}", "bitcoin_rpc_cookie": str(bitcoind.cookie),
        "bitcoin_wallet": node.wallet, "seed_peers": [n.onion for n in everyone if n is not node],
    }  # fmt: skip


def up(root: Path, say: Say) -> State:
    """Bring the demo up under ``root`` (empty or absent) and return its registry, ready."""
    root = root.absolute()
    if (root / REGISTRY).exists():
        state = State.load(root)
        if state.ready and all(is_ours(p.pid, p.marker) for p in state.procs):
            say(f"the demo under {root} is already up")
            return state
        raise DemoError(f"a demo registry is left in {root}: run `pasar demo down --root {root}` first")
    if root.exists() and any(root.iterdir()):
        raise DemoError(f"{root} is not empty: choose another --root, or remove it")
    program = find_bitcoind()  # before anything is made: a missing program leaves nothing to clean up
    for tool in ("tor", "tor-gencert"):
        if shutil.which(tool) is None:
            raise DemoError(f"{tool} not found on PATH: apt install tor (Debian puts it in /usr/sbin)")
    make_private_dir(root)
    started = time.monotonic()
    state = State(str(root), password=secrets.token_urlsafe(12), started_at=time.time())
    state.save()
    net = TestNet(root / "tor")
    try:
        _bring_up(state, net, program, say)
    except BaseException:
        say("the demo did not come up; stopping what it started (its logs stay until `pasar demo down`)")
        _stop_all(state, net, keep_logs=True)
        raise
    state.ready, state.startup_seconds = True, round(time.monotonic() - started, 1)
    state.save()
    return state


def _bring_up(state: State, net: TestNet, program: Path, say: Say) -> None:
    root = Path(state.root)
    bitcoind = Bitcoind(root / "bitcoind", program)
    make_private_dir(bitcoind.root)
    make_private_dir(net.root)
    state.procs.append(Proc("bitcoind", bitcoind.launch(), str(bitcoind.datadir)))
    state.save()
    say("starting the private Tor network, a regtest bitcoind and five nodes' data dirs...")
    state.nodes = plan(root)
    _beside_the_network(state, net, bitcoind)
    say("Tor network up; starting the nodes...")
    member = net.root / "member.torrc"
    _start_nodes(state, lambda node: node_settings(node, state.nodes, bitcoind, member))
    admins = {n.name: Admin(n.name, n.admin_port, Path(n.data_dir)) for n in state.nodes}
    _open_shops(state, admins, say)
    state.socks_port = net.start_client("browser", timeout=TOR_UP).socks_port
    state.save()
    say("waiting for the stores to accept the moderator over Tor and for gossip to reach the buyer...")
    _wait_market(state, admins)
    state.procs += [p for p in map(nd.embedded_tor, state.nodes) if p is not None]


def _wallets(state: State, bitcoind: Bitcoind) -> None:
    """A wallet per node and a miner's; the buyer owns mature coins, the rest of the 100 blocks the miner."""
    for name in ["miner", *(n.wallet for n in state.nodes)]:
        bitcoind.create_wallet(name)
    miner = bitcoind.address("miner")
    bitcoind.mine(BUYER_COINS, bitcoind.address(BUYER))
    bitcoind.mine(101, miner)
    state.bitcoind = {
        "datadir": str(bitcoind.datadir), "rpc_port": bitcoind.rpc_port, "cli": bitcoind.cli_program,
        "mine_address": miner,
    }  # fmt: skip


def _beside_the_network(state: State, net: TestNet, bitcoind: Bitcoind) -> None:
    """bitcoind's wallets and ``pasar init`` while the Tor network starts in a thread.

    On any failure (Ctrl-C included) the network's start is cancelled and waited for: it stops the tors it
    launched within a poll, so the caller's cleanup does not wait minutes for it, nor run beside it.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="testnet-up")
    tor_up = pool.submit(net.up, timeout=TOR_UP)
    try:
        bitcoind.wait_ready()
        _wallets(state, bitcoind)
        nd.init_all(state.nodes, state.password)
        state.save()
        tor_up.result()
    except BaseException:
        net.cancel()
        raise
    finally:
        while True:  # bounded: a cancelled up() returns as soon as its tors are stopped
            try:
                pool.shutdown(wait=True)
                break
            except KeyboardInterrupt:  # a second Ctrl-C: the first one is being handled already
                continue


def _start_nodes(state: State, settings: Callable[[NodeInfo], dict[str, object]]) -> None:
    """Each node's admin port is picked just before it binds it; one taken meanwhile (by any program's
    connection: tors and bitcoind make many) makes that node start again on another port."""
    pending = state.nodes
    for attempt in range(1, PORT_TRIES + 1):
        launched = []
        for node, port in zip(pending, free_ports(len(pending)), strict=True):
            node.admin_port = port
            nd.write_config(node, settings(node))
            launched.append((node, nd.launch(node, state.password)))
            state.procs.append(launched[-1][1])  # recorded the moment it exists
            state.save()
        pending = []
        for node, proc in launched:
            try:
                nd.wait_listening(node, proc)
            except nd.PortTaken:
                if attempt == PORT_TRIES:
                    raise
                state.procs.remove(proc)
                pending.append(node)
        if not pending:
            return


def _open_shops(state: State, admins: dict[str, Admin], say: Say) -> None:
    """The moderator's offer; each merchant's store with its listings and pictures."""
    admins[MODERATOR].call("PATCH", "/moderation", {
        "enabled": True, "fee_percent": 1, "fee_sat": 500, "terms": "Both statements within 7 days.",
    })  # fmt: skip
    for shop in SHOPS:
        admin, node = admins[shop.node], state.node(shop.node)
        store = admin.call("POST", "/stores", {"name": shop.name, "description": shop.description})
        onion, ids = store["onion"], []
        for item in shop.items:
            image = admin.call("POST", f"/stores/{onion}/images", raw=picture(item))
            stored = admin.call("POST", f"/stores/{onion}/listings", {"listings": [listing_body(item, image["id"])]})
            ids.append((stored[0] if isinstance(stored, list) else stored)["id"])
        node.stores.append({"name": shop.name, "onion": onion, "listings": ",".join(ids), "local_url": ""})
        say(f"  {shop.name}: {onion}.onion, {len(ids)} listings")
    state.save()


def _wait_market(state: State, admins: dict[str, Admin]) -> None:
    """Every store accepts the moderator (its node reaches the offer over Tor), then the buyer lists them all."""
    moderator = state.node(MODERATOR).onion
    stores = [(n, s) for n in state.nodes for s in n.stores]

    def accept(node: NodeInfo, store: dict[str, str]) -> None:
        path = f"/stores/{store['onion']}/moderators"

        def accepted() -> bool:
            reply = admins[node.name].call("PATCH", path, {"moderators": [moderator]}, timeout=180)
            return not reply["warnings"] and any(t["onion"] == moderator for t in reply["moderator_terms"])

        wait_for(f"{store['name']} reaches the moderator's offer", accepted, TOR_REACH, pause=5, stop=given_up)

    given_up, pool = threading.Event(), ThreadPoolExecutor(len(stores), thread_name_prefix="demo-accept")
    try:
        for done in [pool.submit(accept, n, s) for n, s in stores]:
            done.result()
    except BaseException:  # one failed, or Ctrl-C: the others return at their next poll, not after TOR_REACH
        given_up.set()  # (a call in flight ends when the caller's cleanup stops the nodes)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for node, store in stores:
        detail = admins[node.name].call("GET", f"/stores/{store['onion']}")
        store["local_url"] = detail["local_url"] or ""
        _wait_listed(admins[BUYER], store, int(detail["seq"]))
    state.save()


def _wait_listed(buyer: Admin, store: dict[str, str], seq: int) -> None:
    def held() -> bool:
        try:
            got = buyer.call("GET", f"/directory/stores/{store['onion']}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return bool(got.get("catalog_seq") and int(got["catalog_seq"]) >= seq)

    wait_for(f"the buyer's directory lists {store['name']}", held, TOR_REACH, pause=2)


def _stop_all(state: State, net: TestNet, *, keep_logs: bool) -> None:
    """Nodes (their tors follow them), any embedded tor left, bitcoind, then the private network.

    ``keep_logs`` (a failed start): the network's tors are stopped and its logs stay until ``down``.
    """
    known = {p.name for p in state.procs}
    late = [t for t in map(nd.embedded_tor, state.nodes) if t is not None and t.name not in known]
    procs = state.procs + late
    stop([p for p in procs if p.name in {n.name for n in state.nodes}])
    stop([p for p in procs if p.name.endswith("-tor")])
    stop([p for p in procs if p.name == "bitcoind"])
    try:
        net.down(keep_logs=keep_logs)
    except TestNetError as exc:
        raise DemoError(f"the private Tor network did not stop: {exc.message}") from exc


def down(root: Path) -> list[str]:
    """Stop everything the demo under ``root`` started and remove ``root``; what was stopped, by name."""
    root = root.absolute()
    state = State.load(root)
    stopped = [p.name for p in state.procs if is_ours(p.pid, p.marker)]
    _stop_all(state, TestNet(root / "tor"), keep_logs=False)
    left = processes_under(root)
    if left:
        raise DemoError(f"processes still use {root} (pids {left}); stop them, then run `pasar demo down` again")
    shutil.rmtree(root)
    return stopped


def status(root: Path) -> tuple[State, dict[str, bool]]:
    """The registry and, for each recorded process, whether it still runs."""
    state = State.load(root.absolute())
    return state, {p.name: is_ours(p.pid, p.marker) for p in state.procs}
