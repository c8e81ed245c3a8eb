"""The demo's ``pasar`` processes: each node's data dir and ``pasar.toml``, ``pasar init``, ``pasar run``.

Every node is a plain ``python -m node --data-dir DIR run`` (its data dir on the command line, so a PID is
known to be ours), with its own embedded tor joined to the private network by ``tor_extra_torrc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..adapters import keyfiles
from .api import port_open
from .state import DemoError, NodeInfo, Proc

REPO = Path(__file__).resolve().parents[2]  # where ``python -m node`` finds the package
INIT_TIMEOUT = 180.0
START_TIMEOUT = 120.0
# Short intervals so a visitor sees gossip, crawls and payments within seconds (defaults suit real use).
FAST = {
    "gossip_interval": 5, "crawl_interval": 5, "payment_poll_interval": 1.0, "purchase_poll_interval": 3.0,
    "message_retry_first": 5.0, "message_retry_cap": 20.0, "escrow_timeout_blocks": 144, "confirmations": 1,
    "fallback_fee_rate": 2, "store_port_base": 0, "log_level": "info",
}  # fmt: skip


def env(password: str) -> dict[str, str]:
    """The caller's environment without ``PASAR_*`` settings (the node reads its pasar.toml) or ``*_proxy``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_") and not k.lower().endswith("_proxy")}
    return clean | {"PASAR_ADMIN_PASSWORD": password, "PYTHONUNBUFFERED": "1"}


def init_all(nodes: list[NodeInfo], password: str) -> None:
    """``pasar init`` of every node side by side (password hashing is CPU-bound), then their node keys."""
    procs = []
    for node in nodes:
        Path(node.data_dir).parent.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "node", "--data-dir", node.data_dir, "init"]
        procs.append((node, subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            args, env=env(password), cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )))  # fmt: skip
    failed = []
    try:
        for node, proc in procs:
            try:
                output, _ = proc.communicate(timeout=INIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"{node.name}: {output.strip()[-500:]}")
    finally:  # Ctrl-C: no `pasar init` outlives the demo
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    if failed:
        raise DemoError("pasar init failed:\n" + "\n".join(failed))
    for node in nodes:  # the node onion is known before the first run: peers are seeded by pasar.toml
        node.onion = keyfiles.load_or_create(Path(node.data_dir) / "node.key").onion


def write_config(node: NodeInfo, settings: dict[str, object]) -> None:
    """``<data dir>/pasar.toml``: the demo's settings, so ``pasar --data-dir DIR ...`` sees the same node."""
    lines = ["# written by `pasar demo`; removed by `pasar demo down`"]
    for key, value in (FAST | settings).items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        else:  # strings and lists of strings: JSON's quoting is valid TOML for them
            lines.append(f"{key} = {json.dumps(value)}")
    (Path(node.data_dir) / "pasar.toml").write_text("\n".join(lines) + "\n")


def launch(node: NodeInfo, password: str) -> Proc:
    """Start ``pasar run`` (not waiting): the Proc to record at once."""
    data_dir = Path(node.data_dir)
    args = [sys.executable, "-m", "node", "--data-dir", node.data_dir, "run"]
    with open(data_dir / "node.log", "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
            args,
            env=env(password),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    return Proc(node.name, proc.pid, node.data_dir)


class PortTaken(DemoError):
    """A node exited at start because another program holds its admin port: start it on another one."""


def wait_listening(node: NodeInfo, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """Until the node's admin port answers; PortTaken if the node said that port is in use, and exited."""
    deadline = time.monotonic() + timeout
    while not port_open(node.admin_port):
        try:
            os.waitpid(proc.pid, os.WNOHANG)  # a child that exited becomes a zombie until reaped
        except ChildProcessError:
            pass
        gone = not Path(f"/proc/{proc.pid}").exists()
        if gone or time.monotonic() > deadline:
            tail = log_tail(node)
            if gone and f"admin port {node.admin_port} on" in tail and "already in use" in tail.lower():
                raise PortTaken(f"node {node.name}: admin port {node.admin_port} was taken before it started")
            raise DemoError(f"node {node.name} did not start; its log:\n{tail}")
        time.sleep(0.2)


def embedded_tor(node: NodeInfo) -> Proc | None:
    """The node's own tor (it writes ``tor/tor.pid``): recorded so ``down`` checks it is gone too."""
    tor_dir = Path(node.data_dir) / "tor"
    try:
        pid = int((tor_dir / "tor.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return Proc(f"{node.name}-tor", pid, str(tor_dir / "torrc"))


def log_tail(node: NodeInfo, chars: int = 3000) -> str:
    path = Path(node.data_dir) / "node.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no log at {path})"
