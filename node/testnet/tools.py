"""Helpers of the private Tor network: torrc checks, ports, bounded waits, processes."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import PasarError

POLL = 0.2
LOCAL_KEYWORDS = {"dirauthority", "fallbackdir", "bridge", "alternatedirauthority", "alternatebridgeauthority"}


class TestNetError(PasarError):
    """The test network could not be brought up or down; the message says what to do."""

    __test__ = False
    code = "testnet"


def local_only(torrc_text: str) -> bool:
    """True if every directory/bridge line points at loopback and there is at least one DirAuthority.

    ``%include`` makes it False: included files cannot be checked from the text.
    """
    authorities = 0
    for raw in torrc_text.replace("\\\n", " ").splitlines():
        words = raw.split("#", 1)[0].split()
        keyword = words[0].lstrip("+/").lower() if words else ""
        if keyword == "%include":
            return False
        if keyword not in LOCAL_KEYWORDS:
            continue
        authorities += keyword == "dirauthority"
        addresses = [w for w in words[1:] if ":" in w and "=" not in w]
        addresses += [w.split("=", 1)[1] for w in words[1:] if w.lower().startswith("ipv6=")]
        if not addresses or not all(_is_loopback(a) for a in addresses):
            return False
    return authorities > 0


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return False


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (the sockets are held open together)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def ticks(timeout: float) -> Iterator[None]:
    """Rounds of a wait loop, bounded in count and time, POLL seconds apart."""
    deadline = time.monotonic() + timeout
    for i in range(int(timeout / POLL) + 1):
        if i:
            time.sleep(POLL)
        if time.monotonic() > deadline:
            return
        yield


def log_tail(data_dir: Path, lines: int = 15) -> str:
    out = []
    for path in (data_dir / "notice.log", data_dir / "stdout.log"):
        if path.exists():
            out.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(out) or f"(no log in {data_dir})"


def is_ours(pid: int, torrc: Path) -> bool:
    """True if ``pid`` is a live (not zombie) process started with ``torrc``: PIDs get reused."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return pid > 0 and state not in ("Z", "X") and os.fsencode(str(torrc)) in args


def paths(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: Path(v) if k in ("data_dir", "torrc", "cookie_path") else v for k, v in fields.items()}


def run_all(jobs: list[tuple[list[str], Path | None]], timeout: float = 60.0) -> None:
    """Run short tools side by side (key generation is CPU-bound); raise on the first failure."""
    procs: list[tuple[list[str], subprocess.Popen[str]]] = []
    try:
        for args, cwd in jobs:
            proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            procs.append((args, proc))
        for args, proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise TestNetError(f"{' '.join(args)} failed ({proc.returncode}): {out[-800:]}")
    except FileNotFoundError as e:
        raise TestNetError(f"{e.filename} not found: apt install tor") from e
    except subprocess.TimeoutExpired as e:
        raise TestNetError(f"{e.cmd[0]} took over {timeout:.0f} s; is the machine overloaded?") from e
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout and not proc.stdout.closed:
                proc.communicate()
