"""``pasar doctor``: checks a node's setup and says what to fix (the verdicts: ``operations/doctor.py``).

Checks, in order: the data directory (initialised, private, schema versions), the node (running?),
tor (reachable, version, bootstrap, the consensus' validity as a clock check), the onions (each
store's and the node's: asked of the running node), Bitcoin Core (``doctor_chain.py``), free disk
space, and the age of the last backup. Nothing is changed: no file is created or written (the
schema versions are read from the databases' files, not through SQLite; the node's lock is only
read), no wallet
loaded, no tor started.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import operations as ops
from ..adapters import dbfiles
from ..adapters.backup import last_backup
from ..adapters.torcheck import embedded_control, tor_facts
from ..adapters.torprocess import find_binary
from ..core.config import Config
from ..core.errors import PasarError
from ..operations.doctor import Check, Level, duration, size
from .doctor_chain import CLOCK_SKEW, bitcoin_checks

In = TypeVar("In")
Out = TypeVar("Out")

SECRET_FILES = ("node.key", "directory.key", "admin.token", "metrics.token")
DISK_FAIL = 100 << 20  # below this the databases may fail to write
DISK_WARN = 1 << 30


class NodeApi(Protocol):
    """The running node's admin API (``cli.backends.RemoteBackend``)."""

    async def run(self, op: ops.Operation[In, Out], inp: In) -> Out: ...


async def diagnose(config: Config, node: NodeApi | None, *, now: float | None = None) -> list[Check]:
    """Every check, in the order printed; ``node`` is None when no node runs on the data dir."""
    at = time.time() if now is None else now
    found = data_dir_checks(config.data_dir)
    if found[0].level is Level.FAIL:  # not initialised: nothing else can be read
        return found
    found.append(
        Check(Level.OK, "node", "running")
        if node
        else Check(Level.WARN, "node", "not running: start it with `pasar run`")
    )
    found += await tor_checks(config, running=node is not None, now=at)
    found += await onion_checks(node)
    found += await bitcoin_checks(config, now=at)
    found.append(disk_check(config.data_dir))
    found.append(await backup_check(config, now=at))
    return found


# -- data directory ----------------------------------------------------------------
def data_dir_checks(data_dir: Path) -> list[Check]:
    if not (data_dir / "node.json").exists():
        return [Check(Level.FAIL, "data dir", f"{data_dir} is not initialised: run `pasar init`")]
    found: list[Check] = []
    mode = data_dir.stat().st_mode
    if mode & 0o077:
        found.append(Check(Level.WARN, "data dir", f"{data_dir} is readable by others: chmod 700 {data_dir}"))
    open_secrets = [str(p) for p in _secret_files(data_dir) if p.stat().st_mode & 0o077]
    if open_secrets:
        found.append(Check(Level.FAIL, "data dir", f"keys readable by others: chmod 600 {' '.join(open_secrets)}"))
    if not found:
        found.append(Check(Level.OK, "data dir", f"{data_dir} (private)"))
    found.append(schema_check(data_dir))
    return found


def _secret_files(data_dir: Path) -> list[Path]:
    paths = [data_dir / name for name in SECRET_FILES]
    paths += list((data_dir / "stores").glob("*/key"))
    return [p for p in paths if p.is_file()]


def _known_versions() -> dict[str, int]:
    from ..adapters import (
        directory_schema,
        gossip_schema,
        messages_schema,
        moderation_schema,
        payments_schema,
        purchases_schema,
    )

    return {
        "gossip.sqlite": len(gossip_schema.MIGRATIONS),
        "directory.sqlite": len(directory_schema.MIGRATIONS),
        payments_schema.FILE_NAME: len(payments_schema.MIGRATIONS),
        "moderation.sqlite": len(moderation_schema.MIGRATIONS),
        messages_schema.FILE_NAME: len(messages_schema.MIGRATIONS),
        purchases_schema.FILE_NAME: len(purchases_schema.MIGRATIONS),
    }


SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)


def _user_version(path: Path) -> int | None:
    """The database's schema version, read from its files without creating or writing any (None: not a database).

    ``user_version`` is the big-endian integer at bytes 60-63 of page 1. A node that is running (or
    was stopped with its write-ahead log not yet folded in) may hold a newer page 1 in ``-wal``: the
    last committed copy there wins. No SQLite connection is opened: even a read-only one would
    create or rewrite ``-shm``.
    """
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError:
        return None
    if not header:
        return 0  # an empty file is an empty database
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return None
    page1 = _wal_page1(path.with_name(path.name + "-wal"))
    return int.from_bytes((page1 or header)[60:64], "big")


def _wal_page1(wal: Path) -> bytes | None:
    """Page 1 as of the last commit in a write-ahead log (sqlite.org/fileformat.html#the_write_ahead_log)."""
    try:
        data = wal.read_bytes()
    except OSError:
        return None
    if len(data) < 32 or int.from_bytes(data[0:4], "big") not in WAL_MAGIC:
        return None
    page_size = int.from_bytes(data[8:12], "big") or 65536
    salts = data[16:24]
    found: bytes | None = None
    pending: bytes | None = None
    offset = 32
    while offset + 24 + page_size <= len(data):
        frame = data[offset : offset + 24]
        if frame[8:16] != salts:  # a frame left from an earlier generation of the log
            break
        if int.from_bytes(frame[0:4], "big") == 1:
            pending = data[offset + 24 : offset + 24 + 100]
        if int.from_bytes(frame[4:8], "big"):  # a commit: what came before it counts
            found = pending if pending is not None else found
        offset += 24 + page_size
    return found


def schema_check(data_dir: Path) -> Check:
    newer, older, damaged = [], [], []
    for name, known in _known_versions().items():
        path = data_dir / name
        if not path.exists():
            continue
        version = _user_version(path)
        if version is None:
            damaged.append(name)
        elif version > known:
            newer.append(f"{name} (version {version}, this pasar knows {known})")
        elif version < known:
            older.append(f"{name} {version} -> {known}")
    node_schema = _node_schema(data_dir)
    if node_schema is None or node_schema > dbfiles.SCHEMA_VERSION:
        newer.append(f"node.json (schema {node_schema})")
    if newer:
        return Check(
            Level.FAIL, "schema", f"written by a newer pasar: {', '.join(newer)}: run that version, or restore a backup"
        )
    if damaged:
        return Check(Level.FAIL, "schema", f"not SQLite databases: {', '.join(damaged)}: restore them from a backup")
    if older:
        return Check(Level.OK, "schema", f"migrated at the next start: {', '.join(older)}")
    return Check(Level.OK, "schema", "every database is at this pasar's version")


def _node_schema(data_dir: Path) -> int | None:
    try:
        doc: Any = json.loads((data_dir / "node.json").read_bytes())
        return int(doc["meta"]["1"]["schema"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- tor and onions ------------------------------------------------------------------
async def tor_checks(config: Config, *, running: bool, now: float) -> list[Check]:
    control = config.tor_control or (embedded_control(config.data_dir / "tor") if running else None)
    if not control:
        try:
            binary = find_binary(config.tor_binary)
        except PasarError as exc:
            return [Check(Level.FAIL, "tor", exc.message)]
        return [Check(Level.OK, "tor", f"the node starts its own tor ({binary}) when it runs")]
    try:
        facts = await tor_facts(control, config.tor_password)
    except PasarError as exc:
        return [Check(Level.FAIL, "tor", exc.message)]
    found = [Check(Level.OK, "tor", f"tor {facts.version} at {control}")]
    if "PROGRESS=100" not in facts.bootstrap:
        found.append(Check(Level.WARN, "tor bootstrap", f"not done: {facts.bootstrap or 'unknown'}; see tor's log"))
    found.append(
        _consensus_clock(
            facts.valid_after, facts.valid_until, now, fresh_until=facts.fresh_until, bootstrap=facts.bootstrap
        )
    )
    return found


def _consensus_clock(
    valid_after: int | None, valid_until: int | None, now: float, *, fresh_until: int | None = None, bootstrap: str = ""
) -> Check:
    """This clock against tor's: tor's own CLOCK_SKEW warning, then the consensus' validity.

    A clock that runs ahead by less than about 3 h stays inside the consensus tor holds, because a
    tor client fetches the next consensus late (``_latest_refetch``); tor's CLOCK_SKEW warning and
    the bitcoin clock check (Core's peers) are what catch it.
    """
    name = "clock (tor)"
    skew = _tor_skew(bootstrap)
    if skew is not None:
        way = "ahead of" if skew < 0 else "behind"
        return Check(
            Level.FAIL, name, f"tor reports this clock {duration(skew)} {way} the network (CLOCK_SKEW): {_NTP}"
        )
    if valid_after is None or valid_until is None:
        return Check(Level.WARN, name, "tor has no consensus yet: the clock is checked once it has one")
    if now < valid_after - CLOCK_SKEW:
        return Check(
            Level.FAIL,
            name,
            f"this clock is {duration(valid_after - now)} behind tor's consensus: onion services fail; {_NTP}",
        )
    latest = valid_until if fresh_until is None else _latest_refetch(valid_after, fresh_until, valid_until)
    if now > latest + CLOCK_SKEW:
        if now <= valid_until + CLOCK_SKEW:
            return Check(
                Level.FAIL,
                name,
                f"this clock is {duration(now - latest)} past the time tor fetches a newer consensus: "
                f"it runs ahead; {_NTP}",
            )
        return Check(
            Level.FAIL,
            name,
            f"tor's consensus expired {duration(now - valid_until)} ago: this clock runs ahead ({_NTP}), "
            "or tor cannot reach the network (see its log)",
        )
    return Check(Level.OK, name, "within tor's consensus validity")


def _latest_refetch(valid_after: int, fresh_until: int, valid_until: int) -> float:
    """The latest time a tor client with a right clock replaces this consensus (dir-spec 5.1).

    It fetches at a random time from 3/4 of a voting interval after ``fresh-until`` until 7/8 of
    the rest of the validity: with hourly consensuses, 2 h 51 min after ``valid-after``.
    """
    start = fresh_until + 0.75 * (fresh_until - valid_after)
    return start + 0.875 * max(0.0, valid_until - start)


def _tor_skew(bootstrap: str) -> int | None:
    """Seconds of skew from tor's bootstrap warning ``... WARNING="Clock skew -7200 in ..." REASON=CLOCK_SKEW``."""
    if "REASON=CLOCK_SKEW" not in bootstrap:
        return None
    match = re.search(r"[Cc]lock skew (-?\d+)", bootstrap)
    return int(match.group(1)) if match else 0


_NTP = "keep the clock in sync (e.g. `timedatectl set-ntp true`)"


async def onion_checks(node: NodeApi | None) -> list[Check]:
    if node is None:
        return [Check(Level.WARN, "onions", "not checked: the node is not running")]
    try:
        stores = await node.run(ops.stores.list_stores, ops.NoInput())
        info = await node.run(ops.info.node_info, ops.NoInput())
    except PasarError as exc:
        return [Check(Level.FAIL, "onions", f"the running node did not answer: {exc.message}")]
    found = [_onion_check("node onion", info["onion"], info["node_status"])]
    found += [_onion_check(f"store {s['name']!r}", s["onion"], s["status"]) for s in stores]
    return found


def _onion_check(name: str, onion: str, status: str) -> Check:
    where = f"{onion[:16]}....onion"
    if status == "published":
        return Check(Level.OK, name, f"{where} published")
    if status.startswith("error"):
        return Check(Level.FAIL, name, f"{where} {status}")
    if status == "local":
        return Check(Level.WARN, name, f"{where} served on loopback only (the node runs with --no-tor)")
    return Check(Level.WARN, name, f"{where} {status}: not yet published; look again in a minute, or see tor's log")


# -- disk and backups ------------------------------------------------------------------
def disk_check(data_dir: Path) -> Check:
    usage = shutil.disk_usage(data_dir)
    free = f"{size(usage.free)} free in {data_dir}"
    if usage.free < DISK_FAIL:
        return Check(Level.FAIL, "disk", f"only {free}: databases fail to write soon; free some space")
    if usage.free < DISK_WARN:
        return Check(Level.WARN, "disk", f"{free}: free some space (images, imports and backups need room)")
    return Check(Level.OK, "disk", free)


async def backup_check(config: Config, *, now: float) -> Check:
    status = await last_backup(config.data_dir)
    how = (
        f"backups go to {config.backup_dir} every {duration(config.backup_interval)}"
        if config.backup_dir
        else "set backup_dir for scheduled backups, or run `pasar backup FILE`"
    )
    if status is None:
        return Check(Level.WARN, "backup", f"no backup yet: {how}")
    if not status.ok:
        return Check(Level.FAIL, "backup", f"the last backup failed {duration(now - status.at)} ago: {status.detail}")
    age = now - status.at
    if age > 2 * config.backup_interval:
        return Check(Level.WARN, "backup", f"the last backup is {duration(age)} old: {how}")
    return Check(Level.OK, "backup", f"{duration(age)} old ({status.detail})")


def summary(checks: Sequence[Check]) -> str:
    fails = sum(c.level is Level.FAIL for c in checks)
    warns = sum(c.level is Level.WARN for c in checks)
    if not fails and not warns:
        return "everything looks right"
    return f"{fails} to fix, {warns} to look at"


__all__ = ["Check", "Level", "NodeApi", "diagnose", "summary"]
