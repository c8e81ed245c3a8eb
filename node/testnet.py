"""A private Tor network on 127.0.0.1 for end-to-end tests and ``pasar testnet``.

Under ``root``: ``network.json`` (PID registry, written before any wait, never wiped before its tors are
stopped), ``member.torrc`` (lines to join, for ``%include``), ``empty`` (defaults torrc, GeoIP files) and
``net/`` (data dirs, wiped by ``down``). Every tor runs with ``-f <torrc> --defaults-torrc <empty>``,
loopback-only ports and loopback DirAuthority lines. A PID is only signalled while /proc shows it runs
one of our torrcs. ``up()`` on a running network is idempotent; on a stale registry it raises: ``down()`` first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import PasarError
from .fsutil import atomic_write

log = logging.getLogger(__name__)

VOTING_INTERVAL = 10  # seconds; the first consensus waits for the next voting boundary
FIRST_BOUNDARY = 8  # seconds from launch to that first boundary
BANDWIDTH = 1000  # measured bandwidth (KB/s) voted for every relay alike
POLL = 0.2
STOP_WAIT = 10.0
LOCAL_KEYWORDS = {"dirauthority", "fallbackdir", "bridge", "alternatedirauthority", "alternatebridgeauthority"}
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,19}")


class TestNetError(PasarError):
    """The test network could not be brought up or down; the message says what to do."""

    __test__ = False
    code = "testnet"


@dataclass
class ClientTor:
    name: str
    data_dir: Path
    socks_port: int
    control_port: int
    pid: int
    cookie_path: Path
    torrc: Path


@dataclass
class _Node:
    """An authority (``dir_port`` set) or relay of the network."""

    name: str
    data_dir: Path
    torrc: Path
    or_port: int
    dir_port: int = 0
    pid: int = 0
    fingerprint: str = ""
    v3ident: str = ""


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


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (the sockets are held open together)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def _ticks(timeout: float) -> Iterator[None]:
    """Rounds of a wait loop, bounded in count and time, POLL seconds apart."""
    deadline = time.monotonic() + timeout
    for i in range(int(timeout / POLL) + 1):
        if i:
            time.sleep(POLL)
        if time.monotonic() > deadline:
            return
        yield


def _tail(data_dir: Path, lines: int = 15) -> str:
    out = []
    for path in (data_dir / "notice.log", data_dir / "stdout.log"):
        if path.exists():
            out.append(f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(out) or f"(no log in {data_dir})"


def _is_ours(pid: int, torrc: Path) -> bool:
    """True if ``pid`` is a live (not zombie) process started with ``torrc``: PIDs get reused."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return pid > 0 and state not in ("Z", "X") and os.fsencode(str(torrc)) in args


def _paths(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: Path(v) if k in ("data_dir", "torrc", "cookie_path") else v for k, v in fields.items()}


def _run_all(jobs: list[tuple[list[str], Path | None]], timeout: float = 60.0) -> None:
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


class TestNet:
    __test__ = False

    def __init__(self, root: Path, *, authorities: int = 3, relays: int = 3, tor_binary: str = "tor") -> None:
        if authorities < 1 or relays < 1:
            raise TestNetError("a test network needs at least one authority and one relay")
        self.root = Path(root).absolute()
        self.authorities, self.relays, self.tor_binary = authorities, relays, tor_binary
        self._registry, self._empty, self._net = self.root / "network.json", self.root / "empty", self.root / "net"
        self._auths: list[_Node] = []
        self._relays: list[_Node] = []
        self._clients: dict[str, ClientTor] = {}
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ready = False

    def up(self, *, timeout: float = 90.0) -> None:
        if self._registry.exists():
            if self.is_up():
                log.info("test network under %s is already up", self.root)
                return
            raise TestNetError(f"stale test network registry {self._registry}: run `pasar testnet down` first")
        start = time.monotonic()
        self._prepare()
        try:
            self._launch_servers()
            self._wait_consensus(timeout - (time.monotonic() - start))
        except BaseException:
            self._stop_all()  # the data dirs stay for a look at the logs; the next up() wipes them
            self._registry.unlink(missing_ok=True)
            raise
        for node in self._auths + self._relays:  # they backed off while there was no consensus
            if _is_ours(node.pid, node.torrc):
                os.kill(node.pid, signal.SIGHUP)
        self._ready = True
        self._save()
        log.info("test network up under %s in %.1f s", self.root, time.monotonic() - start)

    def _prepare(self) -> None:
        for tool in (self.tor_binary, "tor-gencert"):
            if shutil.which(tool) is None:
                raise TestNetError(f"{tool} not found: apt install tor")
        shutil.rmtree(self._net, ignore_errors=True)
        self._net.mkdir(mode=0o700, parents=True)
        self._empty.write_text("")
        ports = _free_ports(2 * self.authorities + self.relays)
        self._auths = [self._node(f"auth{i}", ports.pop(), ports.pop()) for i in range(self.authorities)]
        self._relays = [self._node(f"relay{i}", ports.pop()) for i in range(self.relays)]
        self._clients, self._ready = {}, False
        self._make_keys()
        text = "# generated by node.testnet: %include this to join the test network\n"
        (self.root / "member.torrc").write_text(text + "\n".join(self.member_torrc_lines()) + "\n")

    def _node(self, name: str, or_port: int, dir_port: int = 0) -> _Node:
        (self._net / name).mkdir(mode=0o700)
        (self._net / name / "keys").mkdir(mode=0o700)
        return _Node(name, self._net / name, self._net / name / "torrc", or_port, dir_port)

    def _make_keys(self) -> None:
        """v3 identities with tor-gencert, relay identities with ``tor --list-fingerprint`` (no network)."""
        gencert = ["tor-gencert", "--create-identity-key", "-m", "12", "-i", "authority_identity_key",
                   "-s", "authority_signing_key", "-c", "authority_certificate", "--passphrase-fd", "0"]  # fmt: skip
        e = str(self._empty)
        listfp = [self.tor_binary, "--list-fingerprint", "-f", e, "--defaults-torrc", e, "--SocksPort", "0",
                  "--Address", "127.0.0.1", "--DisableNetwork", "1", "--GeoIPFile", e, "--GeoIPv6File", e]  # fmt: skip
        jobs: list[tuple[list[str], Path | None]] = [
            ([*gencert, "-a", f"127.0.0.1:{a.dir_port}"], a.data_dir / "keys") for a in self._auths
        ]
        for n in self._auths + self._relays:
            jobs.append(([*listfp, "--DataDirectory", str(n.data_dir), "--ORPort", f"127.0.0.1:{n.or_port}"], None))
        _run_all(jobs)
        for auth in self._auths:
            cert = (auth.data_dir / "keys" / "authority_certificate").read_text()
            auth.v3ident = cert.split("\nfingerprint ", 1)[1].split()[0]
        for node in self._auths + self._relays:
            node.fingerprint = (node.data_dir / "fingerprint").read_text().split()[1]

    def member_torrc_lines(self) -> list[str]:
        if not self._auths:
            self._load()
        lines = ["TestingTorNetwork 1", "UseDefaultFallbackDirs 0", "ClientUseIPv6 0", "ClientUseIPv4 1"]
        lines += [f"GeoIPFile {self._empty}", f"GeoIPv6File {self._empty}", "MaxConsensusAgeForDiffs 1 minute"]
        lines += [
            f"DirAuthority {a.name} orport={a.or_port} no-v2 v3ident={a.v3ident} 127.0.0.1:{a.dir_port} {a.fingerprint}"
            for a in self._auths
        ]
        return lines

    def _server_torrc(self, node: _Node, offset: int) -> str:
        lines = ["# generated by node.testnet", *self.member_torrc_lines(), *self._base_lines(node.data_dir)]
        lines += [f"Nickname {node.name}", "Address 127.0.0.1", f"ORPort 127.0.0.1:{node.or_port}", "SocksPort 0"]
        lines += ["ContactInfo pasar-testnet@localhost", "ExitRelay 0", "ExitPolicy reject *:*", "AssumeReachable 1"]
        if node.dir_port:
            # Guard only for authorities and HSDir only for relays: tor >= 0.4.8 may otherwise end an onion
            # circuit at its own guard, and in a network this small the middle then refuses to extend back
            guards = ",".join(f"${a.fingerprint}" for a in self._auths)
            hsdirs = ",".join(f"${r.fingerprint}" for r in self._relays)
            lines += [f"DirPort 127.0.0.1:{node.dir_port}", "AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1"]
            lines += [f"{p}VotingInterval {VOTING_INTERVAL}" for p in ("V3Auth", "TestingV3AuthInitial")]
            lines += [f"{p}{d}Delay 2" for p in ("V3Auth", "TestingV3AuthInitial") for d in ("Vote", "Dist")]
            lines += [f"TestingV3AuthVotingStartOffset {offset}", f"V3BandwidthsFile {self._net / 'bandwidth'}"]
            lines += [f"TestingDirAuthVoteGuard {guards}", "TestingDirAuthVoteGuardIsStrict 1"]
            lines += [f"TestingDirAuthVoteHSDir {hsdirs}", "TestingDirAuthVoteHSDirIsStrict 1"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _base_lines(data_dir: Path) -> list[str]:
        return [f"DataDirectory {data_dir}", "RunAsDaemon 0", f"Log notice file {data_dir / 'notice.log'}"]

    def _launch_servers(self) -> None:
        nodes = self._auths + self._relays
        bw = [str(int(time.time()))] + [f"node_id=${n.fingerprint} bw={BANDWIDTH}" for n in nodes]
        (self._net / "bandwidth").write_text("\n".join(bw) + "\n")
        offset = int(time.time() + FIRST_BOUNDARY) % VOTING_INTERVAL  # first boundary 7-8 s from now
        for node in nodes:
            node.torrc.write_text(self._server_torrc(node, offset))
        self._save()  # the registry exists before any tor runs
        for node in nodes:
            node.pid = self._launch(node.torrc, node.data_dir)
            self._save()

    def _launch(self, torrc: Path, data_dir: Path) -> int:
        if not local_only(torrc.read_text()):
            raise TestNetError(f"refusing to start {torrc}: it names a non-loopback directory")
        env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
        args = [self.tor_binary, "-f", str(torrc), "--defaults-torrc", str(self._empty)]
        with open(data_dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._procs[proc.pid] = proc
        log.debug("started tor %s (pid %d)", torrc, proc.pid)
        return proc.pid

    def _wait_consensus(self, timeout: float) -> None:
        for _ in _ticks(timeout):
            for node in self._auths + self._relays:
                proc = self._procs.get(node.pid)
                if (proc.poll() is not None) if proc else not _is_ours(node.pid, node.torrc):
                    raise TestNetError(f"tor {node.name} exited early; its log:\n{_tail(node.data_dir)}")
            if self._hsdir_count() >= self.relays:
                return
        tail = _tail(self._auths[0].data_dir)
        raise TestNetError(f"no consensus with {self.relays} HSDirs in time; is the machine overloaded?\n{tail}")

    def _hsdir_count(self) -> int:
        """Running HSDirs in the consensus of the authority that knows fewest (clients may ask any)."""
        counts = []
        for auth in self._auths:
            path = auth.data_dir / "cached-microdesc-consensus"
            text = path.read_text(errors="replace") if path.exists() else ""
            flags = [line.split() for line in text.splitlines() if line.startswith("s ")]
            counts.append(sum("HSDir" in f and "Running" in f for f in flags))
        return min(counts)

    def _save(self) -> None:
        data = {"version": 1, "ready": self._ready, "tor_binary": self.tor_binary}
        data |= {"authorities": [asdict(n) for n in self._auths], "relays": [asdict(n) for n in self._relays]}
        data |= {"clients": [asdict(c) for c in self._clients.values()]}
        atomic_write(self._registry, json.dumps(data, indent=1, default=str).encode())

    def _load(self) -> None:
        try:
            data = json.loads(self._registry.read_text())
            self._auths = [_Node(**_paths(d)) for d in data["authorities"]]
            self._relays = [_Node(**_paths(d)) for d in data["relays"]]
            self._clients = {c["name"]: ClientTor(**_paths(c)) for c in data["clients"]}
        except FileNotFoundError as e:
            raise TestNetError(f"no test network under {self.root}: run `pasar testnet up` first") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TestNetError(f"unreadable test network registry {self._registry}: {e}") from e
        self._ready, self.tor_binary = bool(data.get("ready")), str(data.get("tor_binary", self.tor_binary))
        self.authorities, self.relays = len(self._auths), len(self._relays)

    @classmethod
    def attach(cls, root: Path) -> TestNet:
        net = cls(root)
        net._load()
        return net

    def is_up(self) -> bool:
        """True if the registry says the network reached its consensus and every authority and relay runs."""
        if not self._registry.exists():
            return False
        self._load()
        return self._ready and all(_is_ours(n.pid, n.torrc) for n in self._auths + self._relays)

    def torrc_files(self) -> list[Path]:
        torrcs = [n.torrc for n in self._auths + self._relays] + [c.torrc for c in self._clients.values()]
        return [t for t in torrcs if t.exists()]

    def start_client(self, name: str, *, timeout: float = 60.0, extra: list[str] | None = None) -> ClientTor:
        if not NAME_RE.fullmatch(name):
            raise TestNetError(f"bad client name {name!r}: use 1-19 letters, digits, '_' or '-'")
        if not self.is_up():
            raise TestNetError(f"the test network under {self.root} is not up: run `pasar testnet up`")
        old = self._clients.get(name)
        if old and _is_ours(old.pid, old.torrc):
            raise TestNetError(f"client {name} is already running (pid {old.pid}): stop it first")
        data_dir = self._net / "clients" / name
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        socks, control = _free_ports(2)
        client = ClientTor(name, data_dir, socks, control, 0, data_dir / "control_auth_cookie", data_dir / "torrc")
        lines = [*self.member_torrc_lines(), *self._base_lines(data_dir), f"SocksPort 127.0.0.1:{socks}"]
        lines += [f"ControlPort 127.0.0.1:{control}", "CookieAuthentication 1", *(extra or [])]
        client.torrc.write_text("# generated by node.testnet\n" + "\n".join(lines) + "\n")
        return self._start(client, timeout)

    def _start(self, client: ClientTor, timeout: float) -> ClientTor:
        notice = client.data_dir / "notice.log"
        offset = notice.stat().st_size if notice.exists() else 0  # a restart appends to the same log
        client.pid = self._launch(client.torrc, client.data_dir)
        self._clients[client.name] = client
        self._save()
        proc = self._procs[client.pid]
        for _ in _ticks(timeout):
            if notice.exists():
                with open(notice, "rb") as fh:
                    fh.seek(offset)
                    if b"Bootstrapped 100%" in fh.read():
                        return client
            if proc.poll() is not None:
                raise TestNetError(f"client tor {client.name} exited ({proc.returncode}):\n{_tail(client.data_dir)}")
        raise TestNetError(f"client tor {client.name} did not bootstrap in {timeout:.0f} s:\n{_tail(client.data_dir)}")

    def restart_client(self, client: ClientTor, *, timeout: float = 60.0) -> ClientTor:
        self._stop_pids([(client.pid, client.torrc)])
        return self._start(client, timeout)

    def stop_client(self, client: ClientTor) -> None:
        self._stop_pids([(client.pid, client.torrc)])
        self._clients.pop(client.name, None)
        if self._registry.exists():
            self._save()

    def down(self) -> None:
        """Stop every tor in the registry (and any this object started), then wipe the data dirs."""
        if self._registry.exists():
            self._load()
        self._stop_all()
        shutil.rmtree(self._net, ignore_errors=True)
        for path in (self.root / "member.torrc", self._empty, self._registry):
            path.unlink(missing_ok=True)
        self._auths, self._relays, self._clients, self._ready = [], [], {}, False
        log.info("test network under %s is down", self.root)

    def _stop_all(self) -> None:
        clients = [(c.pid, c.torrc) for c in self._clients.values()]
        self._stop_pids(clients + [(n.pid, n.torrc) for n in self._relays + self._auths])

    def _stop_pids(self, targets: list[tuple[int, Path]]) -> None:
        """SIGTERM every target that is still ours, SIGKILL what is left after STOP_WAIT; reap our children."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            live = [(pid, torrc) for pid, torrc in targets if _is_ours(pid, torrc)]
            for pid, _ in live:
                os.kill(pid, sig)
            for _ in _ticks(STOP_WAIT):
                for pid, _ in live:
                    if pid in self._procs:
                        self._procs[pid].poll()
                live = [(pid, torrc) for pid, torrc in live if _is_ours(pid, torrc)]
                if not live:
                    break
            if not live:
                break
            log.warning("tor pids %s outlived %s", [pid for pid, _ in live], sig.name)
        for pid, _ in targets:
            proc = self._procs.pop(pid, None)
            if proc is not None:
                proc.poll()
        if any(_is_ours(pid, torrc) for pid, torrc in targets):
            raise TestNetError(f"a tor of {self.root} survived SIGKILL; find it with `ps` and kill it by hand")
