"""Stores, their onion-service access and client keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from ..core.crypto import ClientAuthKey
from ..core.errors import NotFound
from ..core.models import Client, Profile, PublicOnionOptions, StoreRecord
from ..hosting import client_auth
from ..market.market import Market
from .base import Context, NoInput, Operation


class StoreSummary(TypedDict):
    onion: str
    address: str
    name: str
    seq: int
    local_url: str | None
    status: str
    state: str
    invite_only: bool
    announce: bool  # gossiped to other nodes (never while invite-only)
    port: int | None  # saved; None = a free port at each start


class StoreDetail(StoreSummary):
    profile: Profile
    onion_service: PublicOnionOptions


class Deleted(TypedDict):
    onion: str
    name: str
    moved_to: str


class ClientKey(Client):
    auth_private: str  # the line a buyer's tor needs: "<onion>:descriptor:x25519:<private>"


@dataclass(frozen=True)
class NewStore:
    body: Any  # profile fields, checked by the market


@dataclass(frozen=True)
class StoreRef:
    store: str  # onion address, unique prefix or name


@dataclass(frozen=True)
class StoreBody:
    store: str
    body: Any


@dataclass(frozen=True)
class ClientRef:
    store: str
    client: str


def summary(ctx: Context, record: StoreRecord) -> StoreSummary:
    onion = record["onion"]
    status = ctx.status(onion)
    return {
        "onion": onion,
        "address": f"{onion}.onion",
        "name": record["profile"]["name"],
        "seq": record["seq"],
        "local_url": ctx.local_url(record),
        "status": str(status),  # the state, and for an error its reason: "error: ..."
        "state": status.state.value,  # local | starting | published | stopped | error
        "invite_only": Market.access_options(record)["invite_only"],
        "announce": Market.access_options(record)["announce"],
        "port": record["port"],
    }


def detail(ctx: Context, record: StoreRecord) -> StoreDetail:
    return {
        **summary(ctx, record),
        "profile": record["profile"],
        "onion_service": client_auth.public_view(Market.access_options(record)),
    }


def _client_key(onion: str, client: Client) -> ClientKey:
    line = ClientAuthKey(public=client["public"], private=client["private"]).auth_private_line(onion)
    return {**client, "auth_private": line}


async def _list_stores(ctx: Context, _: NoInput) -> list[StoreSummary]:
    return [summary(ctx, s) for s in await ctx.market.stores()]


async def _create_store(ctx: Context, inp: NewStore) -> StoreDetail:
    return detail(ctx, await ctx.market.create_store(inp.body))


async def _get_store(ctx: Context, inp: StoreRef) -> StoreDetail:
    return detail(ctx, await ctx.market.store(inp.store))


async def _update_store(ctx: Context, inp: StoreBody) -> StoreDetail:
    """Profile fields, ``"port"`` (a number or ``"auto"``; a running listener moves at once), ``"announce"``."""
    market, body = ctx.market, inp.body
    onion = await market.resolve(inp.store)
    if not (isinstance(body, dict) and "announce" in body):
        return detail(ctx, await market.update_store(onion, body))
    announce = {"announce": body["announce"]}
    client_auth.validate_options(announce, client_auth.defaults())  # checked before anything is written
    rest = {k: v for k, v in body.items() if k != "announce"}
    if rest:
        await market.update_store(onion, rest)
    await market.set_access(onion, announce)
    return detail(ctx, await market.store(onion))


async def _delete_store(ctx: Context, inp: StoreBody) -> Deleted:
    """``{"confirm": "<the store's onion address>"}``; moves the store's folder to ``<data-dir>/deleted/``."""
    confirm = inp.body.get("confirm") if isinstance(inp.body, dict) else None
    gone = await ctx.market.delete_store(await ctx.market.resolve(inp.store), confirm)
    return {"onion": gone.onion, "name": gone.name, "moved_to": str(gone.moved_to)}


async def _update_access(ctx: Context, inp: StoreBody) -> PublicOnionOptions:
    """``{"invite_only": bool, "max_streams": int, "pow": bool}``, any subset; republishes the onion."""
    return client_auth.public_view(await ctx.market.set_access(await ctx.market.resolve(inp.store), inp.body))


async def _add_client(ctx: Context, inp: StoreBody) -> ClientKey:
    """A new client key ``{"name": ...}``; the reply carries the private key for the invited buyer."""
    onion = await ctx.market.resolve(inp.store)
    return _client_key(onion, await ctx.market.add_client(onion, inp.body))


async def _get_client(ctx: Context, inp: ClientRef) -> ClientKey:
    """One client key with its private half, to give (again) to the invited buyer."""
    record = await ctx.market.store(inp.store)
    for client in Market.access_options(record)["clients"]:
        if client["id"] == inp.client:
            return _client_key(record["onion"], client)
    raise NotFound(f"no client key {inp.client!r} in this store")


async def _remove_client(ctx: Context, inp: ClientRef) -> None:
    await ctx.market.remove_client(await ctx.market.resolve(inp.store), inp.client)


S = "/stores/{store}"
list_stores = Operation("list_stores", "GET", "/stores", NoInput, _list_stores)
create_store = Operation("create_store", "POST", "/stores", NewStore, _create_store, status=201)
get_store = Operation("get_store", "GET", S, StoreRef, _get_store)
update_store = Operation("update_store", "PATCH", S, StoreBody, _update_store)
delete_store = Operation("delete_store", "DELETE", S, StoreBody, _delete_store, optional_body=True)
update_access = Operation("update_access", "PATCH", f"{S}/access", StoreBody, _update_access)
add_client = Operation("add_client", "POST", f"{S}/clients", StoreBody, _add_client, status=201)
get_client = Operation("get_client", "GET", f"{S}/clients/{{client}}", ClientRef, _get_client)
remove_client = Operation("remove_client", "DELETE", f"{S}/clients/{{client}}", ClientRef, _remove_client, status=204)

OPERATIONS = (
    list_stores, create_store, get_store, update_store, delete_store, update_access, add_client, get_client,
    remove_client,
)  # fmt: skip
