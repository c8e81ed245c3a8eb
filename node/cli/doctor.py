"""``pasar doctor``: check this node's setup and print what to fix (exit 1 when something fails)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from ..adapters.datadir import read_lock_info
from ..core import config as cfg
from .output import out


def node_holder(data_dir: Path) -> int | None:
    """The PID of the node holding ``data_dir``, found without taking its lock or creating a file.

    A running node writes its PID into ``node.lock`` and empties it when it stops; a node that died
    leaves its PID behind, so that PID must still be alive and, when ``/proc/locks`` is readable,
    hold an flock (a PID reused by another program almost never does).
    """
    pid = read_lock_info(data_dir).get("pid")
    if not isinstance(pid, int) or pid <= 0 or not Path(f"/proc/{pid}").exists():
        return None
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return pid  # no /proc/locks to ask: the live PID it is
    # "1: FLOCK  ADVISORY  WRITE 4242 00:2b:1234 0 EOF" (the device and inode differ on overlay filesystems)
    held = any(line.split()[1:2] == ["FLOCK"] and line.split()[4:5] == [str(pid)] for line in locks.splitlines())
    return pid if held else None


@asynccontextmanager
async def _running_node(config: cfg.Config) -> AsyncIterator[Any]:
    """The running node's API (a ``RemoteBackend``), or None when no node holds the data dir."""
    from ..app import read_token
    from .backends import RemoteBackend

    if node_holder(config.data_dir) is None:
        yield None
        return
    url = read_lock_info(config.data_dir).get("admin_url")
    if not url:
        yield None
        return
    headers = {"Authorization": f"Bearer {read_token(config)}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield RemoteBackend(session, str(url))


async def cmd_doctor(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..app.doctor import diagnose, summary
    from ..operations.doctor import failed

    if not (config.data_dir / "node.json").exists():
        checks = await diagnose(config, None)
    else:
        async with _running_node(config) as node:
            checks = await diagnose(config, node)
    for check in checks:
        out(check.line())
    out(summary(checks))
    return 1 if failed(checks) else 0


def add_doctor_command(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check this node's setup (data dir, tor, onions, Bitcoin Core, clock, disk, backups) and say what to fix",
    )
    p.set_defaults(func=cmd_doctor, needs_init=False)
