"""``pasar testnet up|down|status``: a private Tor network on 127.0.0.1 for demos and tests."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from ..core import config as cfg
from .output import out


def _testnet_root(args: argparse.Namespace, config: cfg.Config) -> Path:
    return Path(args.root).expanduser().resolve() if args.root else config.data_dir.parent / "pasar-testnet"


async def cmd_testnet(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..testnet import TestNet

    root = _testnet_root(args, config)
    if args.testnet_command == "down":
        await asyncio.to_thread(TestNet(root).down)
        out(f"stopped the private Tor network in {root}")
        return 0
    if args.testnet_command == "status":
        up = await asyncio.to_thread(lambda: TestNet(root).is_up())
        out(f"{root}: {'up' if up else 'down'}")
        return 0 if up else 3
    net = TestNet(root, authorities=args.authorities, relays=args.relays)
    started = time.monotonic()
    await asyncio.to_thread(net.up)
    buyer = await asyncio.to_thread(net.start_client, "buyer")
    out(f"private Tor network up in {time.monotonic() - started:.1f}s ({root}); only 127.0.0.1 is used")
    out("run a node in it:")
    out(f"  pasar run --tor-extra-torrc {root / 'member.torrc'}")
    out(f"a buyer's tor for it: SOCKS 127.0.0.1:{buyer.socks_port}, control 127.0.0.1:{buyer.control_port}")
    out(f"  curl --socks5-hostname 127.0.0.1:{buyer.socks_port} http://<store>.onion/")
    out("stop it with: pasar testnet down" + (f" --root {root}" if args.root else ""))
    return 0


def add_testnet_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    testnet = sub.add_parser("testnet", parents=[common], help="a private Tor network on 127.0.0.1 for demos and tests")
    actions = testnet.add_subparsers(dest="testnet_command", required=True, metavar="ACTION")
    for name, text in (
        ("up", "start directory authorities, relays and a buyer's tor"),
        ("down", "stop every tor the network started"),
        ("status", "say whether the network is up (exit 3 if not)"),
    ):
        p = actions.add_parser(name, parents=[common], help=text)
        p.add_argument("--root", help="where the network lives (default: pasar-testnet beside the data dir)")
        if name == "up":
            p.add_argument("--authorities", type=int, default=3, choices=range(1, 6), metavar="1-5")
            p.add_argument("--relays", type=int, default=3, choices=range(3, 11), metavar="3-10")
        p.set_defaults(func=cmd_testnet, needs_init=False)
