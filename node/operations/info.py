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


async def _get_tor(ctx: Context, _: NoInput) -> TorView:
    return ctx.tor()


async def _node_info(ctx: Context, _: NoInput) -> NodeInfo:
    """What this node holds and how its tor is doing (discovery adds its onion, peers, ...)."""
    records = await ctx.market.stores()
    listings = sum([len(await ctx.market.listings(r["onion"])) for r in records])
    return {"version": __version__, "stores": len(records), "listings": listings, "tor": ctx.tor()}


get_tor = Operation("get_tor", "GET", "/tor", NoInput, _get_tor)
node_info = Operation("node_info", "GET", "/node", NoInput, _node_info)

OPERATIONS = (get_tor, node_info)
