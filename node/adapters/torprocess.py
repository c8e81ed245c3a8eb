"""The embedded tor process: its torrc, launching it (stem), stopping it.

Only processes this data directory started are ever signalled: a leftover
tor is stopped only if its command line names our torrc.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import stem.process

from ..core.config import Config
from ..core.errors import TorError
from .fsutil import atomic_write, make_private_dir

log = logging.getLogger(__name__)

SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
INSTALL_HINT = (
    "install it (Debian/Ubuntu: `sudo apt install tor`), set tor_binary to its path, "
    "or attach to a running tor with --tor-control"
)
LAUNCH_TIMEOUT = 90.0
_BOOTSTRAP = re.compile(r"Bootstrapped (\d+)%.*?: (.*)$")


@dataclass(frozen=True)
class TorSettings:
    """What the node was told about tor; the defaults live in the settings table (``Config``)."""

    data_dir: Path  # <node data dir>/tor, used by the embedded tor
    control: str  # "" = embedded, "HOST:PORT" or "/path/to/socket"
    socks: str
    password: str
    binary: str
    extra_torrc: str

    @classmethod
    def from_config(cls, config: Config) -> TorSettings:
        return cls(
            data_dir=config.data_dir / "tor",
            control=config.tor_control,
            socks=config.tor_socks,
            password=config.tor_password,
            binary=config.tor_binary,
            extra_torrc=config.tor_extra_torrc,
        )

    @property
    def embedded(self) -> bool:
        return not self.control


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


def launch(settings: TorSettings, progress: Callable[[int, str], None]) -> subprocess.Popen[bytes]:
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

    # stem ignores its own timeout off the main thread: stop a tor that hangs before saying anything.
    watchdog = threading.Timer(LAUNCH_TIMEOUT, _stop_leftover, (d,))
    watchdog.daemon = True
    watchdog.start()
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
        raise TorError(f"tor did not start: {exc} (see {d / 'notice.log'})") from exc
    finally:
        watchdog.cancel()
    log.info("started tor (pid %d, %s)", process.pid, binary)
    return process


def control_file(d: Path) -> str:
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
    log.info("stopping tor %d started from this data directory", pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
