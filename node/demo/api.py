"""The demo talks to its nodes as any script does: their admin JSON API on 127.0.0.1, with the API token."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .state import DemoError

T = TypeVar("T")
POLL = 1.0
# urllib's default opener sends every request through $http_proxy, 127.0.0.1 included (with the admin token or
# bitcoind's cookie in its headers): the demo's calls never go through a proxy.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ApiError(DemoError):
    """A node answered an API call with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Admin:
    """The admin API of one demo node (``/api/v1``)."""

    def __init__(self, name: str, port: int, data_dir: Path) -> None:
        self.name, self.port, self.data_dir = name, port, data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 120) -> Any:
        token = (self.data_dir / "admin.token").read_text().strip()
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v1{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        try:
            with LOCAL.open(req, timeout=timeout) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:1000]
            raise ApiError(exc.code, f"{self.name}: {method} {path}: HTTP {exc.code}: {text}") from None
        except OSError as exc:
            raise ApiError(0, f"{self.name}: {method} {path}: no answer on port {self.port}: {exc}") from exc
        return json.loads(answer) if answer else None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, pause: float = POLL, stop: threading.Event | None = None
) -> T:
    """Poll ``check`` until it returns something truthy; a DemoError or OSError counts as "not yet".

    ``stop`` (set by a caller that gave up, e.g. on Ctrl-C) ends the wait at once with a DemoError.
    """
    deadline, last, stop = time.monotonic() + timeout, "", stop or threading.Event()
    while True:
        if stop.is_set():
            raise DemoError(f"{what}: the demo stopped waiting")
        try:
            value = check()
        except (DemoError, OSError) as exc:
            value, last = None, str(exc)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DemoError(f"{what}: not within {timeout:.0f}s (last: {last or value!r}); is the machine busy?")
        stop.wait(pause)
