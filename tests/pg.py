"""A throwaway PostgreSQL for tests and benchmarks: initdb + pg_ctl in a temp dir, unix socket only.

    with ThrowawayPostgres() as pg:          # or pg = ThrowawayPostgres(); pg.start(); ...; pg.stop()
        dsn = pg.create_database()           # a fresh, empty database; its DSN

- Binaries: ``PASAR_PG_BIN`` (a folder holding initdb, pg_ctl, postgres), else the newest
  ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package; ``deploy/install.sh --test``
  installs it). :func:`find_pg_bin` is None when there is none.
- The server listens on a unix socket in its temp dir only (``listen_addresses=''``: no TCP), with
  trust authentication for the one user ``pasar``, fsync off (the data is thrown away).
- As root (PostgreSQL refuses to run as root), the cluster runs as the ``postgres`` user (Debian's
  package creates it), else ``nobody``.
- ``stop`` sends SIGINT (fast shutdown) to the postmaster's PID, waits for it to exit (bounded),
  then removes the temp dir. Nothing else is touched.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

USER = "pasar"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path | None:
    """The folder of initdb/pg_ctl/postgres, or None."""
    named = os.environ.get("PASAR_PG_BIN")
    if named:
        return Path(named) if (Path(named) / "initdb").exists() else None
    found = []
    for path in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        match = re.fullmatch(r"\d+", path.parent.parent.name)
        if match:
            found.append((int(path.parent.parent.name), path.parent))
    return max(found)[1] if found else None


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class ThrowawayPostgres:
    def __init__(self, bin_dir: Path | None = None, *, settings: dict[str, str] | None = None) -> None:
        """``settings``: extra server settings (``{"shared_buffers": "512MB"}``), passed as ``-c name=value``."""
        found = bin_dir or find_pg_bin()
        if found is None:
            raise PostgresError("no PostgreSQL binaries: run deploy/install.sh --test or set PASAR_PG_BIN")
        self.bin = found
        self.root: Path | None = None
        self.pid: int | None = None
        self._user = _run_as()
        self._settings = dict(settings or {})

    @property
    def socket_dir(self) -> Path:
        if self.root is None:
            raise PostgresError("not started")
        return self.root / "sock"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} user={USER} dbname={dbname}"

    def _cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = self._user
        preexec = None
        if user is not None:

            def preexec() -> None:
                os.setgroups([])  # not root's supplementary groups
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        return subprocess.run(args, capture_output=True, text=True, env=env, preexec_fn=preexec, check=False)

    def start(self) -> ThrowawayPostgres:
        """initdb + pg_ctl start in a new temp dir; on any failure the server (if up) and the dir are removed."""
        self.root = Path(tempfile.mkdtemp(prefix="pasar-pg-"))
        try:
            self._start(self.root)
        except BaseException:
            self._abort()
            raise
        return self

    def _start(self, root: Path) -> None:
        data, sock = root / "data", root / "sock"
        sock.mkdir()
        if self._user is not None:
            for path in (root, sock):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        init = self._cmd(
            str(self.bin / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"
        )
        if init.returncode != 0:
            raise PostgresError(f"initdb failed: {init.stderr.strip()}")
        options = f"-k {sock} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {name}={value}" for name, value in self._settings.items())
        started = self._cmd(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w",
            "-t", str(int(START_TIMEOUT)), "start",
        )  # fmt: skip
        self.pid = self._postmaster_pid()
        if started.returncode != 0:
            log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
            raise PostgresError(f"pg_ctl start failed: {started.stderr.strip()} {log}")
        if self.pid is None:
            raise PostgresError(f"pg_ctl start left no postmaster.pid in {data}")

    def _postmaster_pid(self) -> int | None:
        """The PID in our data dir's postmaster.pid, if it names our running postmaster."""
        if self.root is None:
            return None
        try:
            pid = int((self.root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if self._ours(pid) else None

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` is still our postmaster: alive, and its command line names our data dir."""
        if self.root is None or not _alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.root / "data").encode() in cmdline

    def _abort(self) -> None:
        """After a failed start: stop a postmaster that came up anyway (by its PID file), remove the dir."""
        self.pid = self.pid or self._postmaster_pid()
        self.stop()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (named ``name`` or a fresh one); its DSN."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown of our postmaster (by PID, checked to be ours before each signal), then remove the dir."""
        if self.pid is not None:
            for sig in (signal.SIGINT, signal.SIGQUIT):
                if not self._ours(self.pid):
                    break
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + STOP_TIMEOUT
                while _alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if _alive(self.pid) and self._ours(self.pid):
                raise PostgresError(f"PostgreSQL (PID {self.pid}) did not stop: its files stay in {self.root}")
            self.pid = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie child counts as gone once reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
