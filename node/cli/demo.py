"""``pasar demo [up]|down|status``: a whole market on 127.0.0.1, and where to click."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import config as cfg
from .output import out

if TYPE_CHECKING:
    from ..demo import State


def _root(args: argparse.Namespace, config: cfg.Config) -> Path:
    given = getattr(args, "root", None)
    return Path(given).expanduser().resolve() if given else config.data_dir.parent / "pasar-demo"


def describe(state: State) -> list[str]:
    """Where to click: storefronts, admin pages and their password, the buyer's directory, how to mine."""
    lines = [f"demo market up in {state.startup_seconds:.1f}s under {state.root} (only 127.0.0.1 is used)", ""]
    lines.append(f"a Tor client for your browser: SOCKS5 127.0.0.1:{state.socks_port} (proxy DNS through it)")
    lines.append("storefronts (open the onion through that SOCKS port, or the loopback URL directly):")
    for node in state.nodes:
        for store in node.stores:
            lines.append(f"  {store['name']:<14} http://{store['onion']}.onion/   {store['local_url']}")
    lines.append(f"admin pages (password: {state.password}):")
    for node in state.nodes:
        lines.append(f"  {node.name:<10} ({node.role:<9}) {node.admin_url}/   data dir {node.data_dir}")
    buyer = next(n for n in state.nodes if n.role == "buyer")
    lines.append(f"the buyer's directory: {buyer.admin_url}/directory  (purchases: {buyer.admin_url}/purchases)")
    lines.append("mine a block (confirms payments and payouts):")
    lines.append("  " + shlex.join(state.mine_command(1)))
    lines.append(f"stop it and remove its files: {_pasar()} demo down --root {shlex.quote(state.root)}")
    return lines


def _pasar() -> str:
    """How to call ``pasar`` again: the venv's script when it is not on PATH (``./deploy/run.sh demo``)."""
    script = Path(sys.executable).parent / "pasar"
    if shutil.which("pasar") == str(script) or not script.exists():
        return "pasar"
    return shlex.quote(str(script))


async def cmd_demo(args: argparse.Namespace, config: cfg.Config) -> int:
    from .. import demo

    root = _root(args, config)
    action = getattr(args, "demo_command", None) or "up"
    if action == "down":
        stopped = await asyncio.to_thread(demo.down, root)
        out(f"stopped {len(stopped)} processes of the demo ({', '.join(stopped) or 'none running'}); removed {root}")
        return 0
    if action == "status":
        if not (root / demo.REGISTRY).exists():
            out(f"{root}: no demo (start one with `pasar demo`)")
            return 3
        state, alive = await asyncio.to_thread(demo.status, root)
        for name, running in alive.items():
            out(f"{name}: {'running' if running else 'stopped'}")
        up = state.ready and all(alive.values())
        out(f"{root}: {'up' if up else 'down or partly down'}")
        if up:
            for line in describe(state):
                out(line)
        return 0 if up else 3
    # Blocks on purpose, with Ctrl-C raising at once (asyncio's handler would only cancel after the wait):
    # the interrupted `up` stops what it started before the error reaches main().
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        state = demo.up(root, out)
    finally:
        signal.signal(signal.SIGINT, previous)
    for line in describe(state):
        out(line)
    return 0


def add_demo_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    root_help = "where the demo lives (default: pasar-demo beside the data dir)"
    p = sub.add_parser(
        "demo", parents=[common], help="a whole demo market on 127.0.0.1 (Tor network, regtest bitcoind, 5 nodes)"
    )
    p.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
    p.set_defaults(func=cmd_demo, needs_init=False)
    actions = p.add_subparsers(dest="demo_command", required=False, metavar="ACTION")
    for name, text in (
        ("up", "bring the demo up (the default)"),
        ("down", "stop every process the demo started and remove its files"),
        ("status", "say whether the demo runs (exit 3 if not) and where to click"),
    ):
        a = actions.add_parser(name, parents=[common], help=text)
        a.add_argument("--root", default=argparse.SUPPRESS, help=root_help)
