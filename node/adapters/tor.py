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
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import stem
import stem.connection
import stem.control
import stem.process
import stem.response
import stem.response.events
import stem.version

from ..config import host_port
from ..errors import TorError
from ..fsutil import atomic_write, make_private_dir

log = logging.getLogger(__name__)
# stem sets its own logger to TRACE on import and logs every control message.
logging.getLogger("stem").setLevel(logging.WARNING)
T = TypeVar("T")

MIN_VERSION = stem.version.Version("0.4.6")  # ClientAuthV3 on ADD_ONION
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
INSTALL_HINT = (
    "install it (Debian/Ubuntu: `sudo apt install tor`), set tor_binary to its path, "
    "or attach to a running tor with --tor-control"
)
_BOOTSTRAP = re.compile(r"Bootstrapped (\d+)%.*?: (.*)$")


@dataclass(frozen=True)
class TorSettings:
    """What the node was told about tor (from Config)."""

    data_dir: Path  # <node data dir>/tor, used by the embedded tor
    control: str = ""  # "" = embedded, "HOST:PORT" or "/path/to/socket"
    socks: str = ""
    password: str = ""
    binary: str = "tor"
    extra_torrc: str = ""

    @property
    def embedded(self) -> bool:
        return not self.control


@dataclass(frozen=True)
class OnionSpec:
    """One onion service: its key, where port 80 goes, and its options."""

    key_blob: str  # ADD_ONION ED25519-V3 blob
    target: str  # "unix:/path" or "127.0.0.1:PORT"
    client_keys: tuple[str, ...] = ()  # base32 x25519 public keys (invite-only when non-empty)
    max_streams: int = 0  # per rendezvous circuit; 0 = unlimited
    pow: bool = False  # proof-of-work DoS defence

    def command(self) -> str:
        parts = [f"ADD_ONION ED25519-V3:{self.key_blob}"]
        flags = ["DiscardPK"]
        if self.max_streams:
            flags.append("MaxStreamsCloseCircuit")
        if self.client_keys:
            flags.append("V3Auth")
        parts.append("Flags=" + ",".join(flags))
        if self.max_streams:
            parts.append(f"MaxStreams={self.max_streams}")
        if self.pow:
            parts.append("PoWDefensesEnabled=1")
        parts.append(f"Port=80,{self.target}")
        parts.extend(f"ClientAuthV3={key}" for key in self.client_keys)
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


def find_binary(name: str) -> str:
    """``tor`` lives in /usr/sbin on Debian, which a user's PATH often lacks."""
    found = shutil.which(name)
    if found:
        return found
    if "/" not in name:
        for directory in SBIN_DIRS:
            candidate = Path(directory) / name
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise TorError(f"the tor program ({name!r}) was not found: {INSTALL_HINT}")


class Tor:
    def __init__(self, settings: TorSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tor")
        self._session: _Session | None = None
        self.version = ""
        self.socks: tuple[str, int] | None = None

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
        self._stop()
        process = _launch(self.settings, progress) if self.settings.embedded else None
        try:
            control = _control_file(self.settings.data_dir) if process else self.settings.control
            controller = _connect(control, self.settings.password)
        except TorError:
            if process:
                _terminate(process)
            raise
        session = _Session(controller, process)
        self._session = session
        try:
            self.version = str(controller.get_version()).split(" ")[0]
            self.socks = self._socks_endpoint(controller)
            self._listen(session, events, loop, progress)
        except TorError:
            self._stop()
            raise

    def _socks_endpoint(self, controller: stem.control.Controller) -> tuple[str, int] | None:
        """Where outbound connections go; None if this tor has no loopback SocksPort (yet)."""
        if self.settings.socks:
            parsed = host_port(self.settings.socks)
            assert parsed is not None  # checked by the settings table
            return parsed
        listeners = [(h, p) for h, p in _control_call(controller.get_listeners, stem.control.Listener.SOCKS)]
        local = [(h, p) for h, p in listeners if h.startswith("127.") or h == "::1"]
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
                progress(int(event.keywords.get("PROGRESS", 0)), str(event.keywords.get("SUMMARY", "")))

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
            reply = _control_call(self._controller().msg, spec.command())
            if not reply.is_ok():
                raise TorError(_add_onion_problem(str(reply)))
            stem.response.convert("ADD_ONION", reply)
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
                raise TorError(f"tor refused to remove {name}.onion: {reply}")

        await self._call(run)

    def _controller(self) -> stem.control.Controller:
        if self._session is None:
            raise TorError("not connected to tor")
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
            _terminate(session.process)

    async def close(self) -> None:
        await self.stop()
        self._pool.shutdown(wait=True)


# -- helpers (run on the worker thread) -------------------------------------
def _control_call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except stem.SocketClosed:
        raise TorError("the connection to tor's control port closed; is tor still running?") from None
    except (stem.ProtocolError, stem.OperationFailed, stem.ControllerError) as exc:
        raise TorError(f"tor's control port replied with an error: {exc}") from None


def _add_onion_problem(reply: str) -> str:
    if "collision" in reply.lower():
        return "tor already publishes this onion address (is another Pasar node using this data?)"
    if "PoW" in reply:
        return (
            "this tor cannot turn on proof-of-work for onions added over the control port "
            "(that needs tor 0.4.9.2 or newer): upgrade tor or turn the store's proof-of-work option off"
        )
    return f"tor refused the onion service: {reply}"


def _connect(control: str, password: str) -> stem.control.Controller:
    try:
        if control.startswith("/"):
            controller = stem.control.Controller.from_socket_file(control)
        else:
            parsed = host_port(control)
            assert parsed is not None  # checked by the settings table
            controller = stem.control.Controller.from_port(parsed[0], parsed[1])
    except stem.SocketError as exc:
        raise TorError(_unreachable(control, exc)) from None
    try:
        stem.connection.authenticate(controller, password=password or None)
    except (stem.connection.AuthenticationFailure, stem.ProtocolError, stem.SocketError) as exc:
        controller.close()
        raise TorError(_auth_problem(control, exc)) from None
    _check_version(controller, control)
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
        return f"{control} is a SOCKS port, not a control port: use tor's ControlPort (usually 9051)"
    return f"cannot authenticate to tor at {control}: {exc} (is this tor's ControlPort?)"


def _check_version(controller: stem.control.Controller, control: str) -> None:
    methods = controller.get_protocolinfo().auth_methods
    if methods == (stem.connection.AuthMethod.NONE,):
        controller.close()
        raise TorError(
            f"tor's control port {control} needs no authentication, so any local program could take it over: "
            "set `CookieAuthentication 1` (or HashedControlPassword) in torrc"
        )
    version = controller.get_version()
    if version < MIN_VERSION:
        controller.close()
        raise TorError(f"tor {version} is too old: Pasar needs tor {MIN_VERSION} or newer")


def embedded_torrc(settings: TorSettings) -> str:
    d = settings.data_dir
    lines = [
        "# Written by Pasar on every start; edits are lost. Add your own lines to tor_extra_torrc.",
        f"DataDirectory {d / 'data'}",
        "ControlPort 127.0.0.1:auto",
        f"ControlPortWriteToFile {d / 'control.port'}",
        "CookieAuthentication 1",
        f"CookieAuthFile {d / 'control_auth_cookie'}",
        f"SocksPort {settings.socks or '127.0.0.1:auto'} IsolateSOCKSAuth",
        f"PidFile {d / 'tor.pid'}",
        "Log notice stdout",
        f"Log notice file {d / 'notice.log'}",
        "AvoidDiskWrites 1",
    ]
    if settings.extra_torrc:
        lines.append(f"%include {Path(settings.extra_torrc).expanduser().resolve()}")
    return "\n".join(lines) + "\n"


def _launch(settings: TorSettings, progress: Callable[[int, str], None]) -> subprocess.Popen[bytes]:
    binary = find_binary(settings.binary)
    if settings.extra_torrc and not Path(settings.extra_torrc).expanduser().is_file():
        raise TorError(f"tor_extra_torrc {settings.extra_torrc} is not a readable file")
    d = settings.data_dir
    make_private_dir(d / "data")
    _stop_leftover(d)
    torrc, defaults = d / "torrc", d / "torrc.defaults"
    atomic_write(torrc, embedded_torrc(settings).encode())
    atomic_write(defaults, b"")
    (d / "control.port").unlink(missing_ok=True)

    def on_line(line: str) -> None:
        match = _BOOTSTRAP.search(line)
        if match:
            progress(int(match.group(1)), match.group(2))
        elif "[warn]" in line or "[err]" in line:
            log.warning("tor: %s", line.split("] ", 1)[-1])

    try:
        process: subprocess.Popen[bytes] = stem.process.launch_tor(
            tor_cmd=binary,
            args=["--defaults-torrc", str(defaults)],
            torrc_path=str(torrc),
            completion_percent=0,
            init_msg_handler=on_line,
            take_ownership=True,
            stdin="\n",  # makes stem close tor's stdin pipe at once (it leaks it otherwise)
        )
    except OSError as exc:
        raise TorError(f"tor did not start: {exc} (see {d / 'notice.log'})") from None
    log.info("started tor (pid %d, %s)", process.pid, binary)
    return process


def _control_file(d: Path) -> str:
    """The control port the embedded tor wrote (``PORT=127.0.0.1:NNNN``)."""
    path = d / "control.port"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text.startswith("PORT="):
            return text.removeprefix("PORT=")
        time.sleep(0.05)
    raise TorError(f"tor started but did not open its control port (see {d / 'notice.log'})")


def _stop_leftover(d: Path) -> None:
    """A tor this data dir started earlier (a killed node) still holds the lock: stop it."""
    try:
        pid = int((d / "tor.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(d / "torrc").encode() not in cmdline:
        return
    log.info("stopping tor %d left by an earlier run", pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
