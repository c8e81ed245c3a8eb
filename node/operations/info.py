"""The node itself: what it holds and how its tor is doing."""

from __future__ import annotations

from typing import TypedDict

from .. import __version__
from .base import Context, NoInput, Operation, TorView


class NodeInfo(TypedDict):
    version: str
    stores: int
    listings: int
    tor: TorView
    onion: str  # the node onion (gossip and mirrors), never a store's
    node_status: str  # the node onion's publishing state, like a store's
    gossip: bool
    peers: int
    announcements: int
    directory_stores: int
    listings_indexed: int
    directory_onion: str | None  # the public directory onion (directory_public = true)


async def _get_tor(ctx: Context, _: NoInput) -> TorView:
    return ctx.tor()


async def _node_info(ctx: Context, _: NoInput) -> NodeInfo:
    """What this node holds, how its tor is doing, its node onion, peers and directory."""
    records = await ctx.market.stores()
    listings = sum([len(await ctx.market.listings(r["onion"])) for r in records])
    discovery = ctx.discovery
    peers, announcements = await discovery.gossip.counts()
    stores, indexed = await discovery.directory.counts()
    onion = discovery.node_onion
    return {
        "version": __version__,
        "stores": len(records),
        "listings": listings,
        "tor": ctx.tor(),
        "onion": onion,
        "node_status": str(ctx.status(onion)),
        "gossip": discovery.gossip_on,
        "peers": peers,
        "announcements": announcements,
        "directory_stores": stores,
        "listings_indexed": indexed,
        "directory_onion": discovery.directory_onion,
    }


get_tor = Operation("get_tor", "GET", "/tor", NoInput, _get_tor)
node_info = Operation("node_info", "GET", "/node", NoInput, _node_info)

OPERATIONS = (get_tor, node_info)
