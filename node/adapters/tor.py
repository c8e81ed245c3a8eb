"""Tor through its control port (stem 1.8.2), kept off the event loop.

``Tor`` owns one control connection at a time and, in embedded mode, the tor
process it launched. Every stem call runs on one worker thread; stem's event
callbacks (on stem's own thread) are handed back to the event loop with
``call_soon_threadsafe``. Library errors become ``TorError`` whose message
names the fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stem
import stem.connection
import stem.control
import stem.response
import stem.response.events
import stem.version

from ..core.config import host_port
from ..core.errors import TorError
from ..core.models import OnionSpec
from . import torprocess
from .torprocess import TorSettings, find_binary

__all__ = ["Tor", "TorSettings", "add_onion_command", "find_binary"]
log = logging.getLogger(__name__)
# stem sets its own logger to TRACE on import and logs every control message.
logging.getLogger("stem").setLevel(logging.WARNING)
T = TypeVar("T")

MIN_VERSION = stem.version.Version("0.4.6")  # ClientAuthV3 on ADD_ONION
POW_VERSION = stem.version.Version("0.4.9.2")  # PoWDefensesEnabled on ADD_ONION
PROBE_TIMEOUT = 10.0


def add_onion_command(spec: OnionSpec) -> str:
    """The ADD_ONION control command that publishes ``spec``."""
    parts = [f"ADD_ONION ED25519-V3:{spec.key_blob}"]
    flags = ["DiscardPK"]
    if spec.max_streams:
        flags.append("MaxStreamsCloseCircuit")
    if spec.client_keys:
        flags.append("V3Auth")
    parts.append("Flags=" + ",".join(flags))
    if spec.max_streams:
        parts.append(f"MaxStreams={spec.max_streams}")
    if spec.pow:
        parts.append("PoWDefensesEnabled=1")
    parts.append(f"Port=80,{spec.target}")
    parts.extend(f"ClientAuthV3={key}" for key in spec.client_keys)
    return " ".join(parts)


@dataclass
class TorEvents:
    """Callbacks, all called on the event loop."""

    on_lost: Callable[[], None]
    on_descriptor: Callable[[str, str, str], None]  # action, onion name, reason
    on_bootstrap: Callable[[int, str], None]


@dataclass
class _Session:
    controller: stem.control.Controller
    process: subprocess.Popen[bytes] | None = None
    listeners: list[tuple[Callable[..., None], Any]] = field(default_factory=list)


class Tor:
    def __init__(self, settings: TorSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tor")
        self._session: _Session | None = None
        self.version = ""
        self.supports_pow = False
        self.socks: tuple[str, int] | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.embedded

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- connecting --------------------------------------------------------
    async def start(
        self,
        *,
        on_lost: Callable[[], None],
        on_descriptor: Callable[[str, str, str], None],
        on_bootstrap: Callable[[int, str], None],
    ) -> None:
        """Launch (embedded) or reach tor, authenticate, and listen for events.

        Callbacks run on the event loop: ``on_descriptor(action, onion name, reason)``
        for HS_DESC events, ``on_bootstrap(percent, summary)``, and ``on_lost()``
        once when the control connection closes.
        """
        loop = asyncio.get_running_loop()
        events = TorEvents(on_lost, on_descriptor, on_bootstrap)

        def progress(percent: int, summary: str) -> None:
            loop.call_soon_threadsafe(events.on_bootstrap, percent, summary)

        await self._call(self._start, events, loop, progress)

    def _start(self, events: TorEvents, loop: asyncio.AbstractEventLoop, progress: Callable[[int, str], None]) -> None:
        """Everything that can go wrong here becomes a TorError, and leaves nothing running."""
        self._stop()
        process = None
        try:
            if self.settings.embedded:
                process = torprocess.launch(self.settings, progress)
                control = torprocess.control_file(self.settings.data_dir)
            else:
                control = self.settings.control
            self._session = _Session(_connect(control, self.settings.password), process)
            controller = self._session.controller
            version = _tor_version(controller)
            self.version, self.supports_pow = str(version).split(" ")[0], version >= POW_VERSION
            self.socks = self._socks_endpoint(controller)
            self._listen(self._session, events, loop, progress)
        except BaseException as exc:  # leave nothing running, whatever went wrong (a bug too)
            if self._session is not None:
                self._stop()
            elif process is not None:
                torprocess.terminate(process)
            if isinstance(exc, OSError | stem.ControllerError):
                raise TorError(f"could not start using tor: {exc}") from exc
            raise

    def _socks_endpoint(self, controller: stem.control.Controller) -> tuple[str, int] | None:
        """Where outbound connections go; None if this tor has no loopback SocksPort (yet)."""
        if self.settings.socks:
            parsed = host_port(self.settings.socks)
            assert parsed is not None  # checked by the settings table
            return parsed
        listeners = [(h, p) for h, p in _control_call(controller.get_listeners, stem.control.Listener.SOCKS)]
        local = [(h, p) for h, p in listeners if h.startswith("127.")]
        if not local:
            log.warning(
                "this tor has no SocksPort on loopback, so the node cannot make outbound connections: "
                "add `SocksPort 127.0.0.1:9050` to its torrc or give --tor-socks"
            )
            return None
        return local[0]

    def _listen(
        self,
        session: _Session,
        events: TorEvents,
        loop: asyncio.AbstractEventLoop,
        progress: Callable[[int, str], None],
    ) -> None:
        controller = session.controller

        def on_desc(event: stem.response.events.HSDescEvent) -> None:
            loop.call_soon_threadsafe(
                events.on_descriptor, str(event.action), str(event.address), str(event.reason or "")
            )

        def on_status(event: stem.response.events.StatusEvent) -> None:
            if event.action == "BOOTSTRAP":
                args = event.keyword_args
                progress(int(args.get("PROGRESS", 0)), str(args.get("SUMMARY", "")))

        def on_state(ctrl: Any, state: stem.control.State, when: float) -> None:
            if state == stem.control.State.CLOSED and self._session is session:
                loop.call_soon_threadsafe(events.on_lost)

        _control_call(controller.add_event_listener, on_desc, stem.control.EventType.HS_DESC)
        _control_call(controller.add_event_listener, on_status, stem.control.EventType.STATUS_CLIENT)
        controller.add_status_listener(on_state, spawn=False)
        phase = _control_call(controller.get_info, "status/bootstrap-phase", "")
        match = re.search(r"PROGRESS=(\d+).*SUMMARY=\"([^\"]*)\"", phase)
        if match:
            progress(int(match.group(1)), match.group(2))

    # -- onions ------------------------------------------------------------
    async def add_onion(self, spec: OnionSpec) -> str:
        """Publish; returns the onion name tor computed (without ``.onion``)."""

        def run() -> str:
            reply = _control_call(self._controller().msg, add_onion_command(spec))
            if not reply.is_ok():
                raise TorError(_add_onion_problem(str(reply)))
            _control_call(stem.response.convert, "ADD_ONION", reply)
            return str(reply.service_id)

        return await self._call(run)

    async def onions(self) -> list[str]:
        """Onion names this control connection has published (``GETINFO onions/current``)."""

        def run() -> list[str]:
            return str(_control_call(self._controller().get_info, "onions/current", "")).split()

        return await self._call(run)

    async def remove_onion(self, name: str) -> None:
        def run() -> None:
            reply = _control_call(self._controller().msg, f"DEL_ONION {name}")
            if not reply.is_ok() and "Unknown Onion Service" not in str(reply):
                raise TorError(
                    f"tor refused to withdraw {name}.onion ({reply}); restart tor (or the node) to withdraw it"
                )

        await self._call(run)

    def _controller(self) -> stem.control.Controller:
        if self._session is None:
            raise TorError("not connected to tor right now; Pasar reconnects by itself (see `pasar run`'s log)")
        return self._session.controller

    # -- stopping ----------------------------------------------------------
    async def stop(self) -> None:
        await self._call(self._stop)

    def _stop(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        session.controller.close()
        if session.process is not None:
            torprocess.terminate(session.process)

    async def close(self) -> None:
        await self.stop()
        self._pool.shutdown(wait=True)


# -- helpers (run on the worker thread) -------------------------------------
def _control_call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except stem.SocketClosed as exc:
        raise TorError("the connection to tor's control port closed; is tor still running?") from exc
    except stem.ControllerError as exc:  # OperationFailed (an error reply), ProtocolError (a malformed one)
        raise TorError(f"tor's control port replied with an error ({exc}); check tor's log") from exc


def _tor_version(controller: stem.control.Controller) -> stem.version.Version:
    """tor's version; stem raises ValueError when the reply to ``GETINFO version`` is not one."""
    try:
        return _control_call(controller.get_version)
    except ValueError as exc:
        raise TorError(f"tor reported a version Pasar cannot read ({exc}); is this a tor control port?") from exc


def _add_onion_problem(reply: str) -> str:
    if "collision" in reply.lower():
        return "tor already publishes this onion address (is another Pasar node using this data?)"
    if "PoW" in reply:
        return (
            "this tor cannot turn on proof-of-work for onions added over the control port "
            "(that needs tor 0.4.9.2 or newer): upgrade tor or turn the store's proof-of-work option off"
        )
    return f"tor refused the onion service ({reply}); check tor's log and the store's onion options"


def _probe(control: str) -> None:
    """Refuse, with a message, anything that does not answer like a control port within PROBE_TIMEOUT.

    stem has no timeout: a port that accepts and never replies would hang the node.
    """
    family = socket.AF_UNIX if control.startswith("/") else socket.AF_INET
    address: Any = control
    if family == socket.AF_INET:
        address = host_port(control)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        try:
            sock.connect(address)
        except OSError as exc:
            raise TorError(_unreachable(control, exc)) from exc
        try:
            sock.sendall(b"PROTOCOLINFO 1\r\n")
            reply = sock.recv(64)
        except TimeoutError:
            raise TorError(f"{control} did not answer like a tor control port within {PROBE_TIMEOUT:.0f}s") from None
        except OSError:
            reply = b""
    if b"Tor is not an HTTP Proxy" in reply:  # what a SocksPort says to a text command
        raise TorError(f"{control} is tor's SOCKS port, not its control port: use tor's ControlPort (usually 9051)")
    if not reply.startswith((b"250", b"5")):
        raise TorError(_not_control(control))


def _not_control(control: str) -> str:
    if control.rpartition(":")[2] in ("9050", "9150"):
        return f"{control} is a SOCKS port, not a control port: use tor's ControlPort (usually 9051)"
    return f"{control} is not a tor control port (it did not answer PROTOCOLINFO): check tor_control"


def _connect(control: str, password: str) -> stem.control.Controller:
    _probe(control)
    try:
        if control.startswith("/"):
            controller = stem.control.Controller.from_socket_file(control)
        else:
            parsed = host_port(control)
            assert parsed is not None  # checked by the settings table
            controller = stem.control.Controller.from_port(parsed[0], parsed[1])
    except stem.SocketError as exc:
        raise TorError(_unreachable(control, exc)) from exc
    try:
        stem.connection.authenticate(controller, password=password or None)
    except (stem.connection.AuthenticationFailure, stem.ProtocolError, stem.SocketError) as exc:
        controller.close()
        raise TorError(_auth_problem(control, exc)) from exc
    try:
        _check_version(controller, control)
    except TorError:
        controller.close()
        raise
    return controller


def _unreachable(control: str, exc: Exception) -> str:
    if control.startswith("/"):
        if os.path.exists(control) and not os.access(control, os.R_OK | os.W_OK):
            return (
                f"no permission to use tor's control socket {control}: add this user to tor's group "
                "(`sudo adduser $USER debian-tor`, then log in again)"
            )
        return f"cannot reach tor's control socket {control} ({exc}): is tor running with `ControlSocket {control}`?"
    port = control.rpartition(":")[2]
    hint = {
        "9050": "; 9050 is tor's SocksPort: the control port is usually 9051",
        "9150": "; 9150 is Tor Browser's SocksPort: use a system tor's control port (see torrc.example)",
    }.get(port, "")
    return f"nothing answers on tor's control port {control} ({exc}): enable `ControlPort {control}` in torrc{hint}"


def _auth_problem(control: str, exc: Exception) -> str:
    if isinstance(exc, stem.connection.UnreadableCookieFile):
        return (
            f"cannot read tor's cookie file {exc.cookie_path}: add this user to its group "
            "(`sudo adduser $USER debian-tor`, then log in again) and set `CookieAuthFileGroupReadable 1`"
        )
    if isinstance(exc, stem.connection.MissingPassword):
        return "this tor's control port wants a password: set tor_password (or enable CookieAuthentication 1)"
    if isinstance(exc, stem.connection.IncorrectPassword):
        return "tor rejected tor_password: check it against HashedControlPassword in torrc"
    if control.rpartition(":")[2] in ("9050", "9150"):
        return _not_control(control)
    return f"cannot authenticate to tor at {control}: {exc} (is this tor's ControlPort?)"


def _check_version(controller: stem.control.Controller, control: str) -> None:
    methods = _control_call(controller.get_protocolinfo).auth_methods
    if methods == (stem.connection.AuthMethod.NONE,):
        raise TorError(
            f"tor's control port {control} needs no authentication, so any local program could take it over: "
            "set `CookieAuthentication 1` (or HashedControlPassword) in torrc"
        )
    version = _tor_version(controller)
    if version < MIN_VERSION:
        raise TorError(f"tor {version} is too old: Pasar needs tor {MIN_VERSION} or newer")
