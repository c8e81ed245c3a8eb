"""Recovery without Pasar (docs/recovery.md) and the start-up re-watch, on a real regtest bitcoind.

The fenced blocks of docs/recovery.md marked ``<!-- recovery:NAME -->`` run here exactly as written, in
bash, against escrows made by Pasar's own code (tests/integration/escrow_world.py): ``bitcoin-cli`` is the
cached one beside bitcoind, given ``-regtest -datadir -rpcport`` by a wrapper first on ``PATH``; the
variables the page asks the reader to set (``SHEET``, ``ORDER``, ``ROLE``, ``TO``, ``FEE_SAT``; the other
party's ``WALLET``) are set before the blocks. The sheet comes out of a real encrypted backup, read by the
page's own Python lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from node.adapters import backup as backup_files
from node.adapters.bitcoin import BitcoinCore
from node.adapters.messages_schema import open_messages_db
from node.adapters.moderation_schema import MIGRATIONS as MODERATION_MIGRATIONS
from node.adapters.purchases_schema import open_purchase_db
from node.adapters.sqlite import SQLiteDatabase
from node.core import config as cfg
from node.core.backupfile import WEAKEST
from node.core.crypto import StoreKey
from node.core.errors import Unavailable, WalletError
from node.messaging.mailbox import Mailbox
from node.operations import backup as backups
from node.operations.recovery import recovery_sheet
from node.payments import rewatch
from node.payments.models import Order, OrderState
from node.payments.moderation import ModeratorService
from node.payments.service import Payments
from node.payments.settings import PaymentSettings
from node.purchases.service import Purchases
from node.web import appkeys
from node.web.backup import BACKUPS
from tests.conftest import watch_name
from tests.integration.escrow_world import AMOUNT, TIMEOUT, World, funded
from tests.integration.purchase_world import AMOUNT as BUYER_AMOUNT
from tests.integration.purchase_world import FEE as STORE_FEE
from tests.integration.purchase_world import Directory, StoreSide, catalog
from tests.integration.purchase_world import request as purchase_request
from tests.integration.test_orders_api import DEADLINE, PRICE, close_pair, open_pair, pay, place, serve
from tests.regtest import Regtest, RegtestError, find_bitcoind, sats

DOC = Path(__file__).resolve().parents[2] / "docs" / "recovery.md"
BLOCK = re.compile(r"<!-- recovery:([a-z]+) -->\n```sh\n(.*?)```", re.S)
FEE_SAT = 2_000
PASSPHRASE = "correct horse battery staple"


def doc_blocks() -> dict[str, str]:
    found = dict(BLOCK.findall(DOC.read_text()))
    assert set(found) >= {
        "restore",
        "decrypt",
        "read",
        "scan",
        "amount",
        "create",
        "sign",
        "cosign",
        "send",
        "inflight",
        "claim",
    }
    return found


BLOCKS = doc_blocks()


@dataclasses.dataclass
class Shell:
    """bash with the page's blocks; ``bitcoin-cli`` reaches the test's regtest bitcoind."""

    cwd: Path
    bin: Path

    def run(self, script: str, env: dict[str, str], *, ok: bool = True) -> subprocess.CompletedProcess[str]:
        python = Path(sys.executable).parent  # a python3 with PyNaCl (the page's "pip install pynacl")
        full = {**os.environ, "PATH": f"{self.bin}:{python}:{os.environ['PATH']}", **env}
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=self.cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done


def blocks(*names: str) -> str:
    return "\n".join(BLOCKS[name] for name in names)


def other_party(wallet: str, name: str = "cosign") -> str:
    """The other party's block, run with its own wallet; it hands ``THEIRS`` back (a file here, a message there)."""
    return f'( WALLET={wallet}\n{BLOCKS[name]}\nprintf %s "$THEIRS" > theirs.psbt )\nTHEIRS=$(cat theirs.psbt)\n'


@pytest.fixture
def shell(regtest: Regtest, tmp_path: Path) -> Shell:
    if shutil.which("jq") is None and not os.environ.get("CI"):
        pytest.skip("docs/recovery.md uses jq: apt install jq")
    bitcoind = find_bitcoind()
    assert bitcoind is not None
    cli = bitcoind.parent / "bitcoin-cli"
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "bitcoin-cli"
    args = f"-regtest -datadir={regtest.datadir} -rpcport={regtest.rpc_port} -rpcclienttimeout=60"
    wrapper.write_text(f'#!/bin/sh\nexec "{cli}" {args} "$@"\n')
    wrapper.chmod(0o755)
    work = tmp_path / "recovery"
    work.mkdir()
    return Shell(work, folder)


@dataclasses.dataclass
class SheetContext:
    """The part of ``operations.Context`` a sheet reads; this node buys nothing (no purchases open)."""

    payments: Payments
    moderation: ModeratorService

    @property
    def purchases(self) -> object:
        raise RuntimeError("this test's node has no purchases open")


async def backed_up_sheet(w: World, ctx: SheetContext, shell: Shell) -> Path:
    """A real encrypted backup of the vendor's data dir (helper A's code), its sheet read back by the page's
    Python lines; the sheet file's path."""
    snapshot = functools.partial(backup_files.write_backup, w.market._storage, limits=WEAKEST)
    out = shell.cwd / "pasar-backup.pasarbak"
    await backups.write_backup(ctx, snapshot, out, PASSPHRASE)
    shell.run(BLOCKS["decrypt"], {"BACKUP": str(out), "PASSPHRASE": PASSPHRASE})
    sheet = shell.cwd / "recovery.json"
    assert json.loads(sheet.read_bytes())["format"] == "pasar-recovery"
    env = {"BACKUP": str(out), "PASAR_BACKUP_PASSPHRASE": PASSPHRASE}
    shell.run(BLOCKS["restore"] + '\ncmp "$SHEET" recovery.json', env)  # pasar restore gives the same sheet
    return sheet


def sent_txid(done: subprocess.CompletedProcess[str]) -> str:
    txid = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", txid), done.stdout
    return txid


def entry(sheet: Path, order_id: str, role: str) -> dict[str, object]:
    found = [e for e in json.loads(sheet.read_text())["escrows"] if e["order_id"] == order_id and e["role"] == role]
    assert len(found) == 1
    return found[0]


def reader(sheet: Path, order: Order, role: str, **more: str) -> dict[str, str]:
    return {"SHEET": str(sheet), "ORDER": order.id, "ROLE": role, "FEE_SAT": str(FEE_SAT), **more}


# -- the page's commands ---------------------------------------------------------------------------------
async def test_every_spend_of_the_page_works_with_core_alone(world: World, shell: Shell) -> None:
    w, p = world, world.payments()
    together, _ = await funded(w, p)  # vendor + buyer, a new PSBT
    shipped, _ = await funded(w, p)  # the vendor's release in flight, the buyer signs it
    shipped = await p.fulfill(shipped.id, "sent by post")
    alone, _ = await funded(w, p, accept=False)  # the vendor alone after N blocks
    refund, _ = await funded(w, p, accept=False)  # the moderator + the buyer
    sheet = await backed_up_sheet(w, SheetContext(p, w.moderator), shell)
    doc = json.loads(sheet.read_text())
    assert doc["wallet"] == "vendor" and doc["missing"] and "purchases" in doc["missing"][0]
    mine = entry(sheet, together.id, "vendor")
    assert mine["descriptor"] == together.escrow.descriptor and mine["address"] == together.escrow.address
    assert mine["mine"] == ["vendor", "vendor_timeout"] and mine["timeout_blocks"] == TIMEOUT
    assert [(f["txid"], f["vout"], f["amount_sat"]) for f in mine["funding"]] == list(together.funding.outpoints)
    assert mine["claim_height"] == together.funding.first_seen_height + TIMEOUT
    assert "[" in mine["keys"]["vendor"] and "[" in mine["keys"]["buyer"]  # key origins: which wallet signs
    assert [x["state"] for x in entry(sheet, shipped.id, "vendor")["payouts"]] == ["pending"]

    # 1. vendor + buyer: the vendor builds and signs, the buyer co-signs with its own wallet
    to = w.regtest.address("vendor")
    script = blocks("read", "scan", "amount", "create", "sign") + other_party("buyer") + BLOCKS["send"]
    txid = sent_txid(shell.run(script, reader(sheet, together, "vendor", TO=to)))
    assert w.tx_outputs(txid) == {to: AMOUNT - FEE_SAT}

    # 2. the buyer signs the release the vendor signed when it shipped (a signature in flight)
    script = blocks("read", "scan") + "WALLET=buyer\n" + blocks("inflight", "send")
    txid = sent_txid(shell.run(script, reader(sheet, shipped, "vendor")))
    assert shipped.pending is not None and txid == shipped.pending.expected_txid
    assert w.tx_outputs(txid) == {o.address: o.amount_sat for o in shipped.pending.outputs}

    # 3. the vendor alone: refused before the escrow is N blocks deep, accepted after
    claim = blocks("read", "scan", "claim")
    early = shell.run(claim, reader(sheet, alone, "vendor"), ok=False)
    assert early.returncode != 0 and "no escrow output is N blocks deep yet" in early.stderr
    w.regtest.mine(TIMEOUT)
    dust = w.pay(alone.escrow.address, 5_000)  # anyone may add coins: this output is 1 block deep, not N
    w.regtest.mine(1)
    txid = sent_txid(shell.run(claim, reader(sheet, alone, "vendor")))
    assert sum(w.tx_outputs(txid).values()) == AMOUNT - FEE_SAT  # the deep output only, its amount recomputed
    assert w.regtest.cli("gettxout", dust, 0) or w.regtest.cli("gettxout", dust, 1)  # the dust stays for later

    # 4. the moderator (its own node's sheet and wallet) refunds with the buyer
    mod_ctx = SheetContext(w.payments(bitcoin=w.moderator_core), w.moderator)
    mod_sheet = shell.cwd / "moderator.json"
    mod_sheet.write_bytes(await recovery_sheet(mod_ctx))
    assert json.loads(mod_sheet.read_text())["wallet"] == "moderator"
    assert entry(mod_sheet, refund.id, "moderator")["mine"] == ["moderator"]
    to = refund.refund_address
    script = blocks("read", "scan", "amount", "create", "sign") + other_party("buyer") + BLOCKS["send"]
    txid = sent_txid(shell.run(script, reader(mod_sheet, refund, "moderator", TO=to)))
    assert w.tx_outputs(txid) == {to: AMOUNT - FEE_SAT}

    w.regtest.mine(1)  # all four confirm: Pasar's watcher sees its escrows paid out by someone else
    await p.watch_once()
    states = {(await p.order(o.id)).state for o in (together, alone, refund)}
    assert states == {OrderState.SPENT}
    assert (await p.order(shipped.id)).state is OrderState.COMPLETED  # its own payout, broadcast outside Pasar


async def test_the_sheet_is_valid_json_with_no_escrow(world: World) -> None:
    sheet = json.loads(await recovery_sheet(SheetContext(world.payments(), world.moderator)))
    assert sheet["escrows"] == [] and sheet["format"] == "pasar-recovery" and sheet["version"] == 1
    assert sheet["network"] == "regtest" and sheet["node"] == world.moderator.onion


# -- the start-up re-watch -----------------------------------------------------------------------------
async def test_a_new_watch_wallet_gets_the_open_escrows_back(world: World) -> None:
    w, p = world, world.payments()
    order, _ = await funded(w, p)
    fresh = w.regtest.adapter("vendor", watch_name("vendor"))  # a restored node, or Core's wallets swapped
    await fresh.ensure_wallets()
    try:
        assert await fresh.unspent([order.escrow.address]) == []  # what the watcher would see: nothing
        restored = w.payments(bitcoin=fresh)

        async def vendor_side() -> list[rewatch.Watched]:
            return rewatch.of_orders(await restored.store.open_orders())

        async def and_a_refused_one() -> list[rewatch.Watched]:
            return [rewatch.Watched("raw(00)#aaaaaaaa", 0)]  # a wrong checksum: Core refuses it, the rest goes on

        imported = await rewatch.rewatch_until_done(fresh, [vendor_side, and_a_refused_one])
        assert imported == [order.escrow.descriptor]
        assert await rewatch.rewatch_until_done(fresh, [vendor_side]) == []  # held now: nothing imported again
        await restored.watch_once()
        seen = await restored.order(order.id)
        assert seen.state is OrderState.ACCEPTED and seen.funding.paid_sat == AMOUNT
        assert sum(u.amount_sat for u in await fresh.unspent([order.escrow.address])) == AMOUNT
    finally:
        fresh.close()
        w.regtest.cli("unloadwallet", fresh.watch_wallet, False)


async def test_a_restored_node_watches_its_escrows_again(regtest: Regtest, tmp_path: Path) -> None:
    """A funded order, a backup of the running vendor node, a restore into a new data dir, a start with a new
    watch-only wallet: the re-watch imports the escrow before the watcher's first round, which sees it funded
    (without it the round would find the escrow empty and take the order for spent)."""
    pair, http = await open_pair(regtest, tmp_path)
    fresh = regtest.adapter("vendor", watch_name("vendor"))
    try:
        order_id, _ = await place(pair, regtest)
        await pay(pair, regtest, order_id)
        service = pair.vendor.app[BACKUPS]
        service.limits = WEAKEST
        out = tmp_path / "vendor.pasarbak"
        await service.write(out, PASSPHRASE)
        await pair.vendor.stop()
        restored = tmp_path / "restored"
        await asyncio.to_thread(backup_files.restore, out, restored, PASSPHRASE)
        sheet = json.loads((restored / "recovery.json").read_text())
        assert [e["order_id"] for e in sheet["escrows"] if e["role"] == "vendor"] == [order_id]
        node = await serve(cfg.load(restored, env={}), bitcoin=fresh, http=http)
        try:
            async with asyncio.timeout(DEADLINE):
                while fresh.calls["listunspent"] == 0:  # the watcher's first round has started
                    await asyncio.sleep(0.05)
            assert fresh.calls["importdescriptors"] == 1
            await node.app[appkeys.PAYMENTS].watch_once()
            seen = await node.api("GET", f"/orders/{order_id}")
            assert seen["state"] == "confirmed" and seen["paid_sat"] == PRICE, seen["history"]
        finally:
            await node.stop()
    finally:
        fresh.close()
        await close_pair(pair, http, regtest)
        with contextlib.suppress(RegtestError):
            regtest.cli("unloadwallet", fresh.watch_wallet, False)


# -- the buyer's own sheet -----------------------------------------------------------------------------
@dataclasses.dataclass
class BuyerNode:
    """The part of a buyer node's ``operations.Context`` a sheet reads: real purchases, no vendor orders."""

    purchases: Purchases
    moderation: ModeratorService
    payments: SimpleNamespace


async def test_the_buyer_signs_the_stores_payout_from_its_own_sheet(
    regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore, shell: Shell, tmp_path: Path
) -> None:
    buyer = regtest.adapter("buyer", watch_name("buyer"))
    await buyer.ensure_wallets()
    pdb = await open_purchase_db(tmp_path / "purchases.sqlite")
    mdb = await open_messages_db(tmp_path / "messages.sqlite")
    mod_db = SQLiteDatabase(tmp_path / "moderation.sqlite", MODERATION_MIGRATIONS)
    await mod_db.open()
    try:
        mailbox = Mailbox(mdb, retry_first=15, retry_cap=3600, give_up=14 * 86400)
        settings = PaymentSettings(network="regtest")
        purchases = Purchases(pdb, mailbox, buyer, Directory(catalog(int(time.time()))), settings)
        store = StoreSide(regtest, vendor_core, moderator_core, mailbox, purchases)
        p = await purchases.place(purchase_request())
        assert await store.send(p.id, "escrow", await store.escrow_fields(p.id)) == "applied"
        p = await purchases.get(p.id)
        assert p.escrow is not None
        await purchases.pay(p.id, address=p.escrow.address, amount_sat=BUYER_AMOUNT)
        regtest.sync()
        regtest.mine(1)
        await purchases.watch_once()
        for index, state in enumerate(("funded", "confirmed", "accepted", "fulfilled"), start=1):
            assert await store.state(p.id, state, index) == "applied"
        _, pay_to = store.escrows[p.id]
        psbt = await store.payout_psbt(p.id, [(pay_to, BUYER_AMOUNT - STORE_FEE)])
        outputs = [(pay_to, BUYER_AMOUNT - STORE_FEE, "vendor")]
        assert await store.payout(p.id, "release", psbt, outputs) == "applied"  # vendor-signed, waits for us

        no_orders = SimpleNamespace(open_orders=_nothing, list=_nothing)
        payments = SimpleNamespace(store=no_orders, ctx=SimpleNamespace(bitcoin=buyer), settings=settings)
        moderation = ModeratorService(mod_db, None, StoreKey.generate())
        sheet = shell.cwd / "buyer.json"
        sheet.write_bytes(await recovery_sheet(BuyerNode(purchases, moderation, payments)))
        mine = entry(sheet, p.id, "buyer")
        assert json.loads(sheet.read_text())["wallet"] == "buyer" and mine["mine"] == ["buyer"]
        assert [x["state"] for x in mine["payouts"]] == ["pending"] and mine["funding"]

        script = blocks("read", "scan", "inflight", "send")
        txid = sent_txid(shell.run(script, {"SHEET": str(sheet), "ORDER": p.id, "ROLE": "buyer"}))
        assert regtest.in_mempool(txid)
        tx = regtest.cli("getrawtransaction", txid, True)
        assert [(o["scriptPubKey"]["address"], sats(o["value"])) for o in tx["vout"]] == [
            (pay_to, BUYER_AMOUNT - STORE_FEE)
        ]
    finally:
        await pdb.close()
        await mdb.close()
        await mod_db.close()
        buyer.close()
        with contextlib.suppress(RegtestError):
            regtest.cli("unloadwallet", buyer.watch_wallet, False)


async def _nothing(*_: object, **__: object) -> list[object]:
    return []


class FlakyCore:
    """``rewatch`` fails while Core is "down"; what it was asked is kept."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.asked: list[list[tuple[str, int]]] = []

    async def rewatch(self, escrows: list[tuple[str, int]]) -> list[str]:
        self.asked.append(list(escrows))
        if len(self.asked) <= self.down:
            raise WalletError("Bitcoin Core did not answer listdescriptors: is bitcoind running?")
        return [d for d, _ in escrows]

    async def rescan_progress(self) -> float | None:
        return None


async def test_the_re_watch_retries_while_core_is_down_or_a_source_is_not_open() -> None:
    core = FlakyCore(down=2)
    opened: list[bool] = []

    async def orders() -> list[rewatch.Watched]:
        return [rewatch.Watched("wsh(a)#x", 50), rewatch.Watched("wsh(b)#y", 40), rewatch.Watched("wsh(a)#x", 30)]

    async def purchases() -> list[rewatch.Watched]:
        opened.append(True)
        if len(opened) == 1:
            raise Unavailable("the purchases are not open yet")
        return []

    done = await rewatch.rewatch_until_done(core, [orders, purchases], first=0.001, cap=0.002)
    assert done == ["wsh(b)#y", "wsh(a)#x"]  # each once, from its earliest time, newest first
    assert core.asked[-1] == [("wsh(b)#y", 40), ("wsh(a)#x", 30)] and len(core.asked) == 3  # newest first
    assert await rewatch.rewatch_until_done(FlakyCore(0), []) == []  # nothing open: Core is not even asked
