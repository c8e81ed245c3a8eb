"""What ``pasar doctor`` asks a tor: its version, bootstrap and the consensus' validity (a clock check).

One short control connection (the same connect, probe and authentication as ``tor.Tor``), on a
daemon thread, closed before returning. Connecting beside a running node's own control
connection is fine: tor takes several controllers. stem has no timeouts, so the whole exchange is
bounded by ``timeout``: a tor that stops answering after the probe gives a ``TorError`` and the
blocked thread (a daemon) does not keep ``pasar doctor`` from exiting.
"""

from __future__ import annotations

import asyncio
import calendar
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import stem
import stem.control

from ..core.errors import TorError
from .tor import _connect, _tor_version

CONTROL_PORT_FILE = "control.port"  # written by the embedded tor (torprocess.embedded_torrc)
TIMEOUT = 20.0  # seconds for the whole exchange with tor


@dataclass(frozen=True)
class TorFacts:
    version: str
    bootstrap: str  # GETINFO status/bootstrap-phase, e.g. "NOTICE BOOTSTRAP PROGRESS=100 TAG=done ..."
    valid_after: int | None  # the current consensus' validity, UTC seconds (None: tor has none yet)
    valid_until: int | None
    fresh_until: int | None = None


def embedded_control(tor_dir: Path) -> str | None:
    """The control port a running embedded tor wrote under ``<data dir>/tor``, if any."""
    try:
        text = (tor_dir / CONTROL_PORT_FILE).read_text().strip()
    except OSError:
        return None
    return text.removeprefix("PORT=") if text.startswith("PORT=") else None


async def tor_facts(control: str, password: str, *, timeout: float = TIMEOUT) -> TorFacts:
    """``TorError`` (with the fix) when tor cannot be reached, refuses us or does not answer within ``timeout``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[TorFacts] = loop.create_future()

    def settle(result: TorFacts | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def work() -> None:
        try:
            result, error = _facts(control, password), None
        except BaseException as exc:  # handed to the waiting coroutine, which raises it
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone: doctor gave up on this tor and finished
            return

    threading.Thread(target=work, name="pasar-doctor-tor", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise TorError(
            f"tor at {control} did not answer within {timeout:.0f} s: is it stopped or stuck (see its log)?"
        ) from None


def _facts(control: str, password: str) -> TorFacts:
    controller = _connect(control, password)
    try:
        return TorFacts(
            version=str(_tor_version(controller)),
            bootstrap=_info(controller, "status/bootstrap-phase") or "",
            valid_after=_utc(_info(controller, "consensus/valid-after")),
            valid_until=_utc(_info(controller, "consensus/valid-until")),
            fresh_until=_utc(_info(controller, "consensus/fresh-until")),
        )
    finally:
        controller.close()


def _info(controller: stem.control.Controller, key: str) -> str | None:
    """A GETINFO value; None when this tor has no answer (no consensus yet, an older tor)."""
    try:
        return str(controller.get_info(key))
    except stem.SocketClosed as exc:
        raise TorError("the connection to tor's control port closed; is tor still running?") from exc
    except (stem.ControllerError, ValueError):
        return None


def _utc(text: str | None) -> int | None:
    """tor's "YYYY-MM-DD HH:MM:SS" (UTC) as seconds."""
    if not text:
        return None
    try:
        return calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
