"""Process and port helpers shared by the benchmark scripts (loopback only, PIDs we started)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
