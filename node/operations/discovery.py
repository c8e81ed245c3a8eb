"""Discovery: peers, the directory (search, stores, blocks, reports) and crawling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from ..core import addresses
from ..core.errors import NotFound, ValidationError
from ..core.fields import Errors
from ..discovery.crawler import CrawlProgress
from ..discovery.models import Block, DirectoryStore, PeerView, Report, SearchPage, SearchQuery
from .base import Context, NoInput, Operation

MAX_LIMIT = 100
MAX_OFFSET = 10_000


class CrawlView(TypedDict):
    running: bool
    done: int
    total: int
    indexed: int
    failed: int
    mirrored: int
    unchanged: int  # answered 304: nothing new
    started_at: int | None
    finished_at: int | None


@dataclass(frozen=True)
class Body:
    body: Any


@dataclass(frozen=True)
class PeerRef:
    onion: str


@dataclass(frozen=True)
class BlockRef:
    kind: str
    value: str


@dataclass(frozen=True)
class StoreAddress:
    onion: str


@dataclass(frozen=True)
class SearchParams:
    """Query-string parameters, as text (checked by ``search_query``)."""

    q: str = ""
    limit: str = ""
    offset: str = ""
    category: str = ""
    min_price_sat: str = ""
    max_price_sat: str = ""
    ships_to: str = ""
    store: str = ""


def _number(errors: Errors, name: str, text: str, low: int, high: int) -> int | None:
    if text == "":
        return None
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        errors.add(name, f"must be a whole number from {low} to {high}")
        return None
    return int(text)


def search_query(p: SearchParams) -> SearchQuery:
    """Checked search parameters; every problem at once (ValidationError)."""
    errors = Errors()
    limit = _number(errors, "limit", p.limit, 1, MAX_LIMIT)
    offset = _number(errors, "offset", p.offset, 0, MAX_OFFSET)
    low = _number(errors, "min_price_sat", p.min_price_sat, 0, 21_000_000 * 100_000_000)
    high = _number(errors, "max_price_sat", p.max_price_sat, 0, 21_000_000 * 100_000_000)
    ships_to = p.ships_to.strip().upper()
    if ships_to and not (ships_to == "WORLDWIDE" or (len(ships_to) == 2 and ships_to.isascii() and ships_to.isalpha())):
        errors.add("ships_to", "must be a two-letter country code such as DE, or WORLDWIDE")
    store = addresses.normalize(p.store) if p.store.strip() else ""
    if store and not addresses.is_address(store):
        errors.add("store", "must be a store's onion address")
    if len(p.q) > 500:
        errors.add("q", "at most 500 characters")
    if errors:
        raise ValidationError(errors)
    return SearchQuery(
        q=p.q,
        limit=limit or 20,
        offset=offset or 0,
        category=p.category.strip()[:80],
        min_price_sat=low,
        max_price_sat=high,
        ships_to=ships_to,
        store=store,
    )


def _onion_of(body: Any) -> str:
    onion = body.get("onion") if isinstance(body, dict) else None
    if not isinstance(onion, str):
        raise ValidationError({"onion": "required: another node's onion address"})
    return onion


async def _list_peers(ctx: Context, _: NoInput) -> list[PeerView]:
    return await ctx.discovery.gossip.peers()


async def _add_peer(ctx: Context, inp: Body) -> PeerView:
    """``{"onion": "<node onion>"}``: gossip with this node from now on."""
    return await ctx.discovery.gossip.add_peer(_onion_of(inp.body), "manual")


async def _remove_peer(ctx: Context, inp: PeerRef) -> None:
    await ctx.discovery.gossip.remove_peer(addresses.normalize(inp.onion))


async def _ban_peer(ctx: Context, inp: PeerRef) -> None:
    """Never gossip with this node again (kept in the table, so gossip does not bring it back); undo: remove it."""
    await ctx.discovery.gossip.ban_peer(addresses.normalize(inp.onion))


async def _search(ctx: Context, inp: SearchParams) -> SearchPage:
    return await ctx.discovery.directory.search(search_query(inp))


async def _directory_store(ctx: Context, inp: StoreAddress) -> DirectoryStore:
    found = await ctx.discovery.directory.store(addresses.normalize(inp.onion))
    if found is None:
        raise NotFound(f"the directory knows no store {inp.onion}")
    return found


def _crawl_view(progress: CrawlProgress) -> CrawlView:
    return CrawlView(
        running=progress.running,
        done=progress.done,
        total=progress.total,
        indexed=progress.indexed,
        failed=progress.failed,
        mirrored=progress.mirrored,
        unchanged=progress.unchanged,
        started_at=progress.started_at,
        finished_at=progress.finished_at,
    )


async def _crawl(ctx: Context, _: NoInput) -> CrawlView:
    """One pass over the announced stores now (joins a pass under way); returns when it is done."""
    return _crawl_view(await ctx.discovery.need_crawler().crawl_once())


async def _crawl_status(ctx: Context, _: NoInput) -> CrawlView:
    return _crawl_view(ctx.discovery.need_crawler().progress)


async def _list_blocks(ctx: Context, _: NoInput) -> list[Block]:
    return await ctx.discovery.directory.blocks()


async def _add_block(ctx: Context, inp: Body) -> Block:
    """``{"kind": "store"|"tag", "value": ..., "reason": ...}``: never crawled, listed, mirrored or relayed."""
    body = inp.body if isinstance(inp.body, dict) else {}
    kind, value, reason = body.get("kind"), body.get("value"), body.get("reason", "")
    errors = Errors()
    if kind not in ("store", "tag"):
        errors.add("kind", 'must be "store" or "tag"')
    if not isinstance(value, str) or not value.strip():
        errors.add("value", "required: a store's onion address or a tag")
    if not isinstance(reason, str):
        errors.add("reason", "must be text")
    if errors or not isinstance(kind, str) or not isinstance(value, str) or not isinstance(reason, str):
        raise ValidationError(errors)
    if kind == "store":
        value = addresses.normalize(value)
    block = await ctx.discovery.directory.block(kind, value, reason)
    if kind == "store":
        await ctx.discovery.gossip.forget_store(value)
    return block


async def _remove_block(ctx: Context, inp: BlockRef) -> None:
    value = addresses.normalize(inp.value) if inp.kind == "store" else inp.value
    await ctx.discovery.directory.unblock(inp.kind, value)


async def _list_reports(ctx: Context, _: NoInput) -> list[Report]:
    return await ctx.discovery.directory.reports()


list_peers = Operation("list_peers", "GET", "/peers", NoInput, _list_peers)
add_peer = Operation("add_peer", "POST", "/peers", Body, _add_peer, status=201)
remove_peer = Operation("remove_peer", "DELETE", "/peers/{onion}", PeerRef, _remove_peer, status=204)
ban_peer = Operation("ban_peer", "POST", "/peers/{onion}/ban", PeerRef, _ban_peer, status=204)
search = Operation("search", "GET", "/search", SearchParams, _search)
directory_store = Operation("directory_store", "GET", "/directory/stores/{onion}", StoreAddress, _directory_store)
crawl = Operation("crawl", "POST", "/crawl", NoInput, _crawl, optional_body=True, long_running=True)
crawl_status = Operation("crawl_status", "GET", "/crawl", NoInput, _crawl_status)
list_blocks = Operation("list_blocks", "GET", "/blocks", NoInput, _list_blocks)
add_block = Operation("add_block", "POST", "/blocks", Body, _add_block, status=201)
remove_block = Operation("remove_block", "DELETE", "/blocks/{kind}/{value}", BlockRef, _remove_block, status=204)
list_reports = Operation("list_reports", "GET", "/reports", NoInput, _list_reports)

OPERATIONS = (
    list_peers, add_peer, remove_peer, ban_peer, search, directory_store, crawl, crawl_status, list_blocks, add_block,
    remove_block, list_reports,
)  # fmt: skip
