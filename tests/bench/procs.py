"""Process and port helpers shared by the benchmark scripts (loopback only, PIDs we started)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PASSWORD = "bench password 1234"
REPO = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 15.0


class BenchError(Exception):
    """Something broke (not "too slow"): the script exits non-zero with this message."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def node_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any PASAR_* setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env.update(PASAR_DATA_DIR=str(data_dir), PASAR_ADMIN_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM by PID, then SIGKILL after ``timeout``; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    return proc.returncode


def pasar(data_dir: Path, *args: str, **env: str) -> str:
    """Run one ``pasar`` command on ``data_dir``; its stdout, or BenchError with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "node", *args],
        env=node_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise BenchError(f"pasar {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


@contextlib.contextmanager
def running_node(
    data_dir: Path, head: Sequence[str], *, start_timeout: float = 60.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``<head> run --no-tor`` on a free admin port, until it listens; stopped by its PID afterwards.

    ``head`` is the command before ``run``: ``[python, "-m", "node"]``, or a bench script's own node mode.
    """
    port = free_port()
    with open(data_dir / "node.log", "ab") as log:
        proc = subprocess.Popen(
            [*head, "run", "--no-tor", "--admin-port", str(port)],
            env=node_env(data_dir, PASAR_STORE_PORT_BASE="0", PASAR_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while not port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (data_dir / "node.log").read_text(errors="replace")[-2000:]
                    raise BenchError(f"node did not start (exit {proc.poll()}):\n{tail}")
                time.sleep(0.05)
            yield proc, port
        finally:
            stop_process(proc)
