"""The demo's registry (``<root>/demo.json``) and the processes it names.

The registry is written before any process starts and again after each one, so ``pasar demo down`` can
stop whatever a half-finished ``pasar demo`` left. A PID is only signalled while ``/proc`` shows it still
runs tor, bitcoind or pasar with its ``marker`` (a path under the demo root) as one of its arguments: PIDs
get reused, and a viewer of a demo log names the same paths.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..adapters.fsutil import atomic_write
from ..core.errors import PasarError

REGISTRY = "demo.json"
STOP_WAIT = 15.0
POLL = 0.2


class DemoError(PasarError):
    """The demo market could not be brought up or down; the message says what to do."""

    code = "demo"


@dataclass
class Proc:
    """A process the demo started: ``marker`` is on its command line while it is ours."""

    name: str
    pid: int
    marker: str


@dataclass
class NodeInfo:
    """One ``pasar run`` of the demo and what it serves."""

    name: str
    role: str  # merchant | moderator | buyer
    data_dir: str
    admin_port: int
    wallet: str
    onion: str = ""  # the node onion (gossip, moderation offer)
    stores: list[dict[str, str]] = field(default_factory=list)  # name, onion, local_url, listings (ids, comma)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@dataclass
class State:
    root: str
    password: str = ""
    ready: bool = False
    started_at: float = 0.0
    startup_seconds: float = 0.0
    procs: list[Proc] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)
    bitcoind: dict[str, Any] = field(default_factory=dict)  # datadir, rpc_port, cli, mine_address
    socks_port: int = 0  # the browser's tor client

    @property
    def path(self) -> Path:
        return Path(self.root) / REGISTRY

    def save(self) -> None:
        atomic_write(self.path, json.dumps(asdict(self), indent=1).encode(), mode=0o600)

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        raise DemoError(f"no demo node named {name!r} in {self.path}")

    def mine_command(self, blocks: int = 1) -> list[str]:
        b = self.bitcoind
        return [
            str(b["cli"]), "-regtest", f"-datadir={b['datadir']}", f"-rpcport={b['rpc_port']}",
            "generatetoaddress", str(blocks), str(b["mine_address"]),
        ]  # fmt: skip

    @classmethod
    def load(cls, root: Path) -> State:
        path = root / REGISTRY
        try:
            data = json.loads(path.read_text())
            procs = [Proc(**p) for p in data.pop("procs")]
            nodes = [NodeInfo(**n) for n in data.pop("nodes")]
            return cls(**data, procs=procs, nodes=nodes)
        except FileNotFoundError as exc:
            raise DemoError(f"no demo under {root}: start one with `pasar demo`") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DemoError(f"unreadable demo registry {path}: {exc}; remove {root} by hand") from exc


# The programs the demo starts: tor, bitcoind, and python running ``pasar`` (``python3.11``, a venv's ``python``).
OUR_PROGRAMS = re.compile(r"tor|bitcoind.*|pasar|python[0-9.]*")


def _command(pid: int) -> list[str] | None:
    """The arguments of a live (not zombie) process of one of OUR_PROGRAMS; None for anything else."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    args = [os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")]
    if pid <= 0 or state in ("Z", "X") or not args or not OUR_PROGRAMS.fullmatch(os.path.basename(args[0])):
        return None
    return args


def _values(args: list[str]) -> list[str]:
    """Each argument whole, and the value of each ``-option=value`` (bitcoind's ``-datadir=DIR``)."""
    return args + [a.split("=", 1)[1] for a in args if a.startswith("-") and "=" in a]


def is_ours(pid: int, marker: str) -> bool:
    """True if ``pid`` is a live tor, bitcoind or pasar whose arguments hold ``marker`` as a whole argument
    (or as ``-option=marker``): a ``tail -f`` of a demo log, or a reused PID, is never ours."""
    args = _command(pid)
    return args is not None and marker in _values(args)


def processes_under(root: Path) -> list[int]:
    """PIDs of live tor, bitcoind or pasar processes with an argument under ``root`` (`down` must leave none).

    This process and its ancestors (``pasar demo down --root ROOT`` run from a wrapper) do not count, nor
    other programs (a ``less ROOT/bitcoind/debug.log`` does not keep `down` from removing ROOT).
    """
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    prefix, found = os.path.join(root, ""), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        args = _command(int(entry.name))
        if args is not None and any(v.startswith(prefix) for v in _values(args)):
            found.append(int(entry.name))
    return found


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process (``pasar demo`` failing half way)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(procs: list[Proc], wait: float = STOP_WAIT) -> None:
    """SIGTERM each process still ours, SIGKILL what is left after ``wait`` seconds; raise if one survives."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if is_ours(p.pid, p.marker)]
        for p in live:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            for p in live:
                _reap(p.pid)
            live = [p for p in live if is_ours(p.pid, p.marker)]
            if live:
                time.sleep(POLL)
        if not live:
            return
    names = ", ".join(f"{p.name} (pid {p.pid})" for p in procs if is_ours(p.pid, p.marker))
    if names:
        raise DemoError(f"{names} survived SIGKILL; find them with `ps` and stop them by hand")
