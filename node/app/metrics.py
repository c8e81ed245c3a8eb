"""The node's metrics: one ``CollectorRegistry`` per admin app, read from the node's state at scrape time.

``make_metrics(app)`` builds the registry (request figures: ``node/web/metrics.py``) and a collector of
the rest. Before each scrape ``refresh`` reads, from whatever parts of the node are running: each onion's
publishing state (the app's ``STATUS``), vendor orders by state and the outbox by delivery state (one read of
their databases), gossip's totals (``Gossip.totals``: the rounds this node ran; ``Gossip.served``: what
peers sent it), the crawler's totals, and the RPCs made to Bitcoin Core and those that failed. A part that
is off (no payments, no gossip, no tor) leaves its families out, and so does a part whose read fails (logged,
counted in ``pasar_metrics_refresh_errors_total{part}``): the rest of the scrape still answers. docs/metrics.md
lists every family.

``metrics_token`` reads ``<data-dir>/metrics.token`` (0600), the scrape-only secret ``GET /metrics`` asks
for, and writes a new one when it is missing (``pasar init``, or a node started on an older data dir).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..adapters.bitcoin import BitcoinCore
from ..adapters.fsutil import atomic_write
from ..core.errors import ConfigError, PasarError
from ..core.models import PublishState
from ..discovery.crawler import Crawler
from ..discovery.gossip import RoundStats
from ..payments.models import OrderState
from ..web import appkeys
from ..web.metrics import Metrics, RequestMetrics
from .payments import PARTS

log = logging.getLogger(__name__)
T = TypeVar("T")
SCRAPE_FILE = "metrics.token"


def metrics_token(data_dir: Path, *, renew: bool = False) -> str:
    """The scrape-only token in ``<data-dir>/metrics.token`` (0600); a new one when missing or ``renew``."""
    path = data_dir / SCRAPE_FILE
    if renew or not path.exists():
        atomic_write(path, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
    token = path.read_text().strip()
    if len(token) < 32:
        raise ConfigError(f"{path} is damaged: run `pasar init --new-metrics-token`")
    return token


@dataclass(frozen=True)
class GossipFigures:
    rounds: RoundStats  # the rounds this node ran (pulled, and its own stems pushed)
    served: RoundStats  # what peers' requests brought (pushed to this node)
    peers: int
    announcements: int


@dataclass(frozen=True)
class CrawlFigures:
    passes: int
    listings: int
    results: dict[str, int]
    last_pass: int | None


@dataclass
class NodeState:
    """What the last refresh read; the collector renders it."""

    onions: list[tuple[str, str, PublishState]] = field(default_factory=list)  # (onion, role, state)
    orders: dict[str, int] | None = None
    outbox: dict[str, int] | None = None
    gossip: GossipFigures | None = None
    crawl: CrawlFigures | None = None
    rpc_calls: dict[str, int] | None = None
    rpc_errors: dict[str, int] | None = None


def _roles(app: web.Application) -> dict[str, str]:
    discovery = app.get(appkeys.DISCOVERY)
    if discovery is None:
        return {}
    roles = {discovery.node_onion: "node"}
    if discovery.directory_onion:
        roles[discovery.directory_onion] = "directory"
    return roles


async def _orders(app: web.Application) -> dict[str, int] | None:
    parts = app.get(PARTS)
    if parts is None:
        return None
    counts = await asyncio.gather(*(parts.orders.count(state=state) for state in OrderState))
    return {state.value: n for state, n in zip(OrderState, counts, strict=True)}


async def _gossip(app: web.Application) -> GossipFigures | None:
    gossip = app.get(appkeys.GOSSIP)
    if gossip is None:
        return None
    peers, held = await gossip.counts()
    rounds, served = replace(gossip.totals), replace(gossip.served)  # copies: a snapshot
    return GossipFigures(rounds=rounds, served=served, peers=peers, announcements=held)


def _crawl(crawler: Crawler | None) -> CrawlFigures | None:
    if crawler is None:
        return None
    return CrawlFigures(crawler.passes, crawler.listings_indexed, dict(crawler.results), crawler.last_finished)


async def _outbox(app: web.Application) -> dict[str, int] | None:
    mailbox = app.get(appkeys.MESSAGES)
    return None if mailbox is None else await mailbox.counts()


async def _part(part: str, read: Callable[[], Awaitable[T | None]], failures: Counter[str]) -> T | None:
    """One part's read; a failure (a busy or closing database...) leaves that part out of this scrape."""
    try:
        return await read()
    except PasarError as exc:
        failures[part] += 1
        log.warning("metrics: could not read %s, left out of this scrape: %s", part, exc.message, exc_info=exc)
        return None


async def read_state(app: web.Application, failures: Counter[str] | None = None) -> NodeState:
    """The node's state now, from the parts that run; ``failures`` counts the parts whose read failed."""
    failures = Counter() if failures is None else failures
    roles = _roles(app)
    state = NodeState(
        onions=[(o, roles.get(o, "store"), s.state) for o, s in sorted(app[appkeys.STATUS].items())],
        orders=await _part("orders", lambda: _orders(app), failures),
        outbox=await _part("outbox", lambda: _outbox(app), failures),
        gossip=await _part("gossip", lambda: _gossip(app), failures),
        crawl=_crawl(app.get(appkeys.CRAWLER)),
    )
    parts = app.get(PARTS)
    if parts is not None and isinstance(parts.bitcoin, BitcoinCore):
        state.rpc_calls, state.rpc_errors = dict(parts.bitcoin.calls), dict(parts.bitcoin.errors)
    return state


def _labelled(family: CounterMetricFamily | GaugeMetricFamily, values: dict[str, int]) -> Metric:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def _onions(state: NodeState) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "pasar_onion_state",
        "Each onion's publishing state: 1 for the state it is in, 0 for the others (role: store, node, directory)",
        labels=("onion", "role", "state"),
    )
    for onion, role, now in state.onions:
        for candidate in PublishState:
            family.add_metric([onion, role, candidate.value], 1 if candidate is now else 0)
    yield family


def _payments(state: NodeState) -> Iterator[Metric]:
    if state.orders is not None:
        orders = GaugeMetricFamily("pasar_orders", "This node's vendor orders by state", labels=("state",))
        yield _labelled(orders, state.orders)
    if state.outbox is not None:
        by = GaugeMetricFamily("pasar_outbox_messages", "Sent node messages by delivery state", labels=("delivery",))
        yield _labelled(by, state.outbox)
        depth = state.outbox.get("queued", 0) + state.outbox.get("sent", 0)
        yield GaugeMetricFamily("pasar_outbox_depth", "Node messages waiting for delivery (queued or sent)", depth)
    if state.rpc_calls is not None and state.rpc_errors is not None:
        calls = CounterMetricFamily(
            "pasar_bitcoin_rpc_calls", "RPCs made to Bitcoin Core, by method", labels=("method",)
        )
        yield _labelled(calls, state.rpc_calls)
        errors = CounterMetricFamily(
            "pasar_bitcoin_rpc_errors", "RPCs to Bitcoin Core that failed (error or no answer)", labels=("method",)
        )
        yield _labelled(errors, state.rpc_errors)


def _rejections(stats: RoundStats) -> dict[str, int]:
    invalid = stats.rejected - stats.bad_signatures  # ``rejected`` counts the bad signatures too
    return {"invalid": invalid, "bad_signature": stats.bad_signatures, "refused": stats.refused}


def _gossip_families(figures: GossipFigures) -> Iterator[Metric]:
    rounds, served = figures.rounds, figures.served
    yield CounterMetricFamily("pasar_gossip_rounds", "Gossip rounds this node ran", rounds.rounds)
    exchanges = CounterMetricFamily(
        "pasar_gossip_exchanges", "Exchanges with peers in this node's rounds, by result", labels=("result",)
    )
    # Stems are exchanges too (their failures are in ``failed``; ``stems`` counts those that went through).
    yield _labelled(exchanges, {"succeeded": rounds.succeeded + rounds.stems, "failed": rounds.failed})
    accepted = CounterMetricFamily(
        "pasar_gossip_accepted",
        "Announcements and reviews kept: pulled in this node's rounds, or pushed to it by peers",
        labels=("direction",),
    )
    yield _labelled(accepted, {"pulled": rounds.accepted, "pushed": served.accepted})
    rejected = CounterMetricFamily(
        "pasar_gossip_rejections",
        "Gossiped items not kept, by reason (invalid, bad_signature, refused) and direction (pulled, pushed)",
        labels=("direction", "reason"),
    )
    for direction, stats in (("pulled", rounds), ("pushed", served)):
        for reason, n in _rejections(stats).items():
            rejected.add_metric([direction, reason], n)
    yield rejected
    yield CounterMetricFamily("pasar_gossip_peers_banned", "Peers banned for invalid signatures", rounds.bans)
    yield GaugeMetricFamily("pasar_gossip_peers", "Peers in the peer table", figures.peers)
    yield GaugeMetricFamily("pasar_gossip_announcements", "Store announcements held", figures.announcements)


def _crawl_families(crawl: CrawlFigures) -> Iterator[Metric]:
    yield CounterMetricFamily("pasar_crawl_passes", "Crawl passes run", crawl.passes)
    stores = CounterMetricFamily(
        "pasar_crawl_stores",
        "Stores fetched by the crawler, by result (indexed, unchanged, failed; mirrored: failed, then from a mirror)",
        labels=("result",),
    )
    yield _labelled(stores, {"indexed": 0, "unchanged": 0, "failed": 0, "mirrored": 0} | crawl.results)
    yield CounterMetricFamily("pasar_crawl_listings_indexed", "Listings indexed by the crawler", crawl.listings)
    if crawl.last_pass is not None:
        yield GaugeMetricFamily(
            "pasar_crawl_last_pass_timestamp_seconds", "When the last crawl pass ended (Unix time)", crawl.last_pass
        )


class NodeCollector:
    """Renders the state the last ``refresh`` read (a scrape refreshes first)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.state = NodeState()
        self.failures: Counter[str] = Counter()  # reads that failed, by part (orders, outbox, gossip)

    async def refresh(self) -> None:
        self.state = await read_state(self.app, self.failures)

    def collect(self) -> Iterable[Metric]:
        state = self.state
        info = GaugeMetricFamily("pasar_info", "This node's Pasar version", labels=("version",))
        info.add_metric([__version__], 1)
        yield info
        failed = CounterMetricFamily(
            "pasar_metrics_refresh_errors",
            "State reads that failed at a scrape, by part (orders, outbox, gossip): that part was left out",
            labels=("part",),
        )
        yield _labelled(failed, {"orders": 0, "outbox": 0, "gossip": 0} | dict(self.failures))
        yield from _onions(state)
        yield from _payments(state)
        if state.gossip is not None:
            yield from _gossip_families(state.gossip)
        if state.crawl is not None:
            yield from _crawl_families(state.crawl)


def make_metrics(app: web.Application) -> Metrics:
    """The admin app's metrics (a registry of its own: tests run many nodes in one process)."""
    registry = CollectorRegistry()
    requests = RequestMetrics(registry)
    collector = NodeCollector(app)
    registry.register(collector)
    token = metrics_token(app[appkeys.CONFIG].data_dir)
    return Metrics(registry=registry, requests=requests, refresh=collector.refresh, token=token)
