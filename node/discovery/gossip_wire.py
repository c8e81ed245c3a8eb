"""The gossip exchange on the wire (docs/protocol.md, "Gossip"): parse and encode, strictly bounded (pure).

Request (client -> ``POST /.well-known/pasar/gossip``)::

    {"v": 1, "from": <node onion>|null, "cursor": {"epoch": <hex>, "after": <int>}|"head"|null,
     "push": [<announcement envelope>, ...], "peers": [<node onion>, ...]}

``cursor``: null = from the start (a node without a table yet); "head" =
nothing already held, only a cursor at the receiver's newest (first contact of
a node that already has a table); an object = since that cursor (from the
start if the receiver's epoch differs).

Answer::

    {"v": 1, "epoch": <hex>, "next": <int>, "more": <bool>, "held": <int>,
     "announcements": [<announcement envelope>, ...], "peers": [<node onion>, ...]}

``held`` is how many announcements the answering node holds: a node that
asked for "head" and holds fewer pulls that peer's whole table instead.

Items of ``push`` / ``announcements`` are checked one by one later (a bad
one is counted and dropped, the good ones kept); everything else here is
checked whole, and a message that breaks a rule is refused whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..core import envelope
from ..core.errors import PayloadTooLarge, ValidationError

VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_ITEMS = 200  # announcements in one message (push or answer)
MAX_PEERS = 16  # node onions in one message
MAX_AFTER = 2**63 - 1
HEAD = "head"
_EPOCH = re.compile(r"[0-9a-f]{1,32}")
_ONION = re.compile(r"[a-z2-7]{56}")
_REQUEST = frozenset({"v", "from", "cursor", "push", "peers"})
_ANSWER = frozenset({"v", "epoch", "next", "more", "held", "announcements", "peers"})
_ENVELOPE_ROOM = 512  # bytes of a message besides its announcements (peers, cursor, field names)


@dataclass(frozen=True)
class Cursor:
    epoch: str
    after: int


@dataclass(frozen=True)
class Request:
    sender: str | None
    cursor: Cursor | str | None  # a Cursor, HEAD, or None (from the start)
    push: list[Any]  # unverified items
    peers: list[str]


@dataclass(frozen=True)
class Answer:
    epoch: str
    next: int
    more: bool
    held: int
    announcements: list[Any]  # unverified items
    peers: list[str]


def _load(data: bytes, max_bytes: int, fields: frozenset[str]) -> dict[str, Any]:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"a gossip message is at most {max_bytes} bytes")
    obj = envelope.loads(data)
    if not isinstance(obj, dict):
        raise ValidationError({"message": "must be a JSON object"})
    problems = {k: "missing" for k in fields - obj.keys()}
    problems.update({str(k): "unknown field" for k in obj.keys() - fields})
    if problems:
        raise ValidationError(problems, "malformed gossip message")
    if type(obj["v"]) is not int or obj["v"] != VERSION:  # not 1.0, not true
        raise ValidationError({"v": f"unsupported gossip version (this node speaks {VERSION})"})
    return obj


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_AFTER


def _items(obj: dict[str, Any], name: str) -> list[Any]:
    items = obj[name]
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise ValidationError({name: f"must be a list of at most {MAX_ITEMS} announcements"})
    return items


def _peers(obj: dict[str, Any]) -> list[str]:
    peers = obj["peers"]
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise ValidationError({"peers": f"must be a list of at most {MAX_PEERS} node onions"})
    if not all(isinstance(p, str) and _ONION.fullmatch(p) for p in peers):
        raise ValidationError({"peers": "must hold onion addresses (56 lower-case characters, no .onion)"})
    return list(dict.fromkeys(peers))


def parse_request(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Request:
    """A received request, checked; raises PayloadTooLarge / ValidationError."""
    obj = _load(data, max_bytes, _REQUEST)
    sender = obj["from"]
    if sender is not None and not (isinstance(sender, str) and _ONION.fullmatch(sender)):
        raise ValidationError({"from": "must be the sender's node onion (56 characters, no .onion) or null"})
    cursor = obj["cursor"]
    parsed: Cursor | str | None = HEAD if cursor == HEAD else None
    if cursor is not None and cursor != HEAD:
        if not isinstance(cursor, dict) or set(cursor) != {"epoch", "after"}:
            raise ValidationError({"cursor": 'must be {"epoch": <hex>, "after": <int>}, "head" or null'})
        if not isinstance(cursor["epoch"], str) or not _EPOCH.fullmatch(cursor["epoch"]) or not _int(cursor["after"]):
            raise ValidationError({"cursor": "epoch must be 1-32 hex digits and after a non-negative integer"})
        parsed = Cursor(cursor["epoch"], cursor["after"])
    return Request(sender, parsed, _items(obj, "push"), _peers(obj))


def parse_answer(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Answer:
    """A peer's answer, checked; raises PayloadTooLarge / ValidationError."""
    obj = _load(data, max_bytes, _ANSWER)
    if not isinstance(obj["epoch"], str) or not _EPOCH.fullmatch(obj["epoch"]):
        raise ValidationError({"epoch": "must be 1-32 hex digits"})
    if not _int(obj["next"]) or not _int(obj["held"]) or not isinstance(obj["more"], bool):
        raise ValidationError({"next": "next and held must be non-negative integers and more a boolean"})
    return Answer(obj["epoch"], obj["next"], obj["more"], obj["held"], _items(obj, "announcements"), _peers(obj))


def _join(raws: list[bytes]) -> bytes:
    return b"[" + b",".join(raws) + b"]"


def encode_request(sender: str | None, cursor: Cursor | str | None, push: list[bytes], peers: list[str]) -> bytes:
    """A request; ``push`` holds canonical announcement bytes (sent as they are)."""
    wire_cursor = {"epoch": cursor.epoch, "after": cursor.after} if isinstance(cursor, Cursor) else cursor
    head = json.dumps({"v": VERSION, "from": sender, "cursor": wire_cursor, "peers": peers}, separators=(",", ":"))
    return head.encode()[:-1] + b',"push":' + _join(push) + b"}"


def encode_answer(epoch: str, next_: int, more: bool, held: int, announcements: list[bytes], peers: list[str]) -> bytes:
    head = json.dumps(
        {"v": VERSION, "epoch": epoch, "next": next_, "more": more, "held": held, "peers": peers},
        separators=(",", ":"),
    ).encode()
    return head[:-1] + b',"announcements":' + _join(announcements) + b"}"


def fit(raws: list[bytes], *, max_bytes: int = MAX_MESSAGE_BYTES, max_items: int = MAX_ITEMS) -> int:
    """How many of ``raws`` (in order) fit in one message."""
    room = max_bytes - _ENVELOPE_ROOM - MAX_PEERS * 60
    used = 0
    for n, raw in enumerate(raws[:max_items]):
        used += len(raw) + 1
        if used > room:
            return n
    return min(len(raws), max_items)
