"""deploy/: the hardened systemd unit, the Dockerfile and compose file, checked with the tools this machine has.

``systemd-analyze`` (Debian's systemd package) verifies the unit and rates its exposure offline; the
figure must stay at or below the one docs/deploy.md states. No Docker engine runs here: the Docker
files are checked as text (Debian packages only, every copied path exists), and ``docker compose
config`` runs when the client has the compose plugin.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "pasar.service"
DOCS = ROOT / "docs" / "deploy.md"
EXPOSURE = re.compile(r"Overall exposure level for pasar\.service: (\d+\.\d)")

# What the issue asks of the unit, and the rest of its hardening: directive -> required value.
HARDENING = {
    "DynamicUser": "yes",
    "StateDirectory": "pasar pasar-backup",  # the data dir, and the folder scheduled backups may write
    "StateDirectoryMode": "0700",
    "UMask": "0077",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
    "IPAddressDeny": "any",
    "IPAddressAllow": "localhost",
    "SupplementaryGroups": "debian-tor",
}


def directives(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (comments and sections left out), each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def documented_exposure() -> float:
    match = EXPOSURE.search(DOCS.read_text())
    assert match, "docs/deploy.md must quote `systemd-analyze security --offline=yes`'s overall exposure line"
    return float(match.group(1))


def test_unit_has_the_hardening_the_issue_lists() -> None:
    found = directives(UNIT)
    for key, value in HARDENING.items():
        assert value in found.get(key, []), f"{key}={value} missing from deploy/pasar.service"
    assert found["ExecStart"] == ["/opt/pasar/.venv/bin/pasar run"]
    assert "PASAR_DATA_DIR=%S/pasar" in found["Environment"]  # the data dir is the StateDirectory


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        assert not os.environ.get("CI"), "CI must check the unit: deploy/install.sh --test installs systemd"
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return tool


def test_unit_verifies_with_this_checkout_as_executable(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    pasar = Path(sys.executable).parent / "pasar"  # the venv's console script stands in for /opt/pasar's
    assert pasar.exists(), f"{pasar} missing: run deploy/install.sh"
    unit = tmp_path / "pasar.service"
    unit.write_text(UNIT.read_text().replace("/opt/pasar/.venv/bin/pasar", str(pasar)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in done.stderr.splitlines() if "pasar.service" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_unit_exposure_is_at_most_the_documented_figure() -> None:
    tool = _systemd_analyze()
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = EXPOSURE.search(done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= documented_exposure(), done.stdout


def test_dockerfile_builds_from_debian_packages_only() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages: list[str] = []
    for base, _, name in re.findall(r"^FROM\s+(\S+)(\s+AS\s+(\S+))?", text, flags=re.M):
        assert base == "debian:bookworm-slim" or base in stages, f"FROM {base}: only Debian's image"
        if name:
            stages.append(name)
    installs = re.findall(r"apt-get install[^\n]*\\\n\s*([^\n]+)", text)
    assert installs and {"python3-venv", "tor"} <= set(installs[0].split())
    assert not re.search(r"\b(curl|wget|ADD\s+https?:)", text), "nothing is downloaded but Debian packages"
    for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: no such file in the checkout"


def test_entrypoint_and_compose_torrc_parse(tmp_path: Path) -> None:
    entry = DEPLOY / "docker-entrypoint.sh"
    assert entry.stat().st_mode & 0o111, "the entrypoint must be executable"
    subprocess.run(["sh", "-n", str(entry)], check=True, timeout=30)
    tor = shutil.which("tor") or ("/usr/sbin/tor" if Path("/usr/sbin/tor").exists() else None)
    assert tor is not None, "tor is not installed: deploy/install.sh installs it"
    torrc = (DEPLOY / "compose-torrc").read_text()
    local = torrc.replace("/var/lib/tor", str(tmp_path / "tor")).replace("/run/tor-cookie", str(tmp_path))
    (tmp_path / "torrc").write_text(local)
    done = subprocess.run(
        [tor, "--verify-config", "-f", str(tmp_path / "torrc"), "--defaults-torrc", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_share_one_image_and_loopback() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert re.findall(r"^\s+image:\s*(\S+)", text, flags=re.M) == ["pasar:local"], "one image, built here"
    assert "dockerfile: deploy/Dockerfile" in text
    assert text.count('network_mode: "service:tor"') == 2  # pasar and bitcoind on tor's loopback
    assert not re.search(r"^\s+ports:", text, flags=re.M), "nothing is published on the host"


def _compose_command() -> list[str]:
    """``docker compose`` (the plugin) when the client has it, else Debian's ``docker-compose`` (install.sh --test)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy is not None, "no compose client: deploy/install.sh --test installs Debian's docker-compose"
    return [legacy]


def test_compose_config_with_a_compose_client(tmp_path: Path) -> None:
    """The compose client parses and resolves the file (no engine needed): services, profiles, variables."""
    done = subprocess.run(
        [*_compose_command(), "-f", str(DEPLOY / "compose.yaml"), "--profile", "bitcoind", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path), "BITCOIN_BIN_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert {"tor:", "pasar:", "bitcoind:"} <= set(done.stdout.split()), done.stdout


def test_the_settings_the_files_give_are_valid(tmp_path: Path) -> None:
    """Every PASAR_* variable of the unit and the compose file is a setting with a valid value."""
    from node.core import config as cfg

    unit_env = dict(v.split("=", 1) for v in directives(UNIT)["Environment"])
    assert unit_env.pop("PASAR_DATA_DIR") == "%S/pasar"
    loaded = cfg.load(tmp_path, env=unit_env)
    assert (loaded.tor_control, loaded.tor_socks) == ("/run/tor/control", "127.0.0.1:9050")

    compose = (DEPLOY / "compose.yaml").read_text()
    pairs = re.findall(r"^\s+(PASAR_[A-Z_]+): (\S+)", compose, flags=re.M)
    defaults = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in pairs}
    assert "PASAR_ADMIN_PASSWORD" not in defaults, "the password is for `pasar init` only, never the node's environment"
    loaded = cfg.load(tmp_path, env=defaults)
    assert loaded.bitcoin_rpc_cookie == "/run/bitcoin-cookie/.cookie" and loaded.tor_control == "127.0.0.1:9051"


def _pasar_as() -> list[str]:
    """The words of docs/deploy.md's ``pasar-as`` function (its systemd-run command line)."""
    text = DOCS.read_text()
    match = re.search(r"pasar-as\(\) \{[^\n]*\n(.*?)\n\}", text, flags=re.S)
    assert match, "docs/deploy.md must define pasar-as()"
    return shlex.split(match.group(1).replace("\\\n", " "))


def test_pasar_as_runs_with_the_units_user_directories_and_modes() -> None:
    """systemd chmods a StateDirectory on every start: pasar-as must give the unit's mode (0700), not 0755."""
    words = _pasar_as()
    props = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-p")
    env = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-E")
    unit = directives(UNIT)
    for key in ("User", "DynamicUser", "StateDirectory", "StateDirectoryMode", "UMask", "SupplementaryGroups"):
        assert props.get(key) == unit[key][0], f"pasar-as: -p {key}={unit[key][0]} (as in the unit)"
    unit_env = dict(v.split("=", 1) for v in unit["Environment"])
    assert env == {k: v.replace("%S", "/var/lib") for k, v in unit_env.items()}


def test_scheduled_backups_go_where_the_unit_may_write() -> None:
    text = DOCS.read_text()
    dirs = directives(UNIT)["StateDirectory"][0].split()
    assert "Environment=PASAR_BACKUP_DIR=/var/lib/pasar-backup" in text and "pasar-backup" in dirs
    assert "pasar-as backup /var/lib/pasar-backup/" in text  # the upgrade's backup of the service's own data
    assert "/var/backups/pasar" not in text  # read-only under ProtectSystem=strict


# Dependencies bookworm packages at a version pyproject accepts (apt-cache policy, bookworm 12):
# jinja2 3.1.2, pynacl 1.5.0, psycopg 3.1.7. The rest are older there (or missing): pip.
DEBIAN_PYTHON = {"jinja2": "python3-jinja2", "pynacl": "python3-nacl", "psycopg": "python3-psycopg"}


def test_dockerfile_takes_each_dependency_from_debian_or_pip_with_its_range() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    apt = set(re.findall(r"apt-get install[^\n]*\\\n\s*([^\n]+)", text)[0].split())
    pip_install = text.split("--no-deps /src", 1)[1].split("/bin/python -c", 1)[0]
    pip_args = re.findall(r'"([^"]+)"', pip_install)
    assert "--system-site-packages" in text and "pip install --no-cache-dir --no-deps /src" in text
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower()
        if name in DEBIAN_PYTHON:
            assert DEBIAN_PYTHON[name] in apt, f"{name}: apt-get install {DEBIAN_PYTHON[name]}"
            assert not any(a.lower().startswith(name) for a in pip_args), f"{name} comes from Debian, not pip"
        else:
            assert dep in pip_args, f"{dep}: in the Dockerfile's pip install, with pyproject's range"
    assert len(pip_args) == len(deps) - len(DEBIAN_PYTHON), "a pip requirement pyproject does not list"
    assert "--create-home" not in text, "no home skeleton (.bashrc, .profile) in the volumes"


def _entrypoint(tmp_path: Path, *cmd: str, **env: str) -> subprocess.CompletedProcess[str]:
    """deploy/docker-entrypoint.sh with a stand-in ``pasar`` that records its arguments and password."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "pasar"
    stub.write_text(
        '#!/bin/sh\necho "pasar $* password=${PASAR_ADMIN_PASSWORD:-}" >> "$LOG"\n'
        '[ "$1" = init ] && touch "$PASAR_DATA_DIR/node.json"\nexit 0\n'
    )
    stub.chmod(0o755)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PASAR_DATA_DIR": str(tmp_path), "LOG": str(tmp_path / "log")}
    return subprocess.run(
        ["sh", str(DEPLOY / "docker-entrypoint.sh"), *cmd],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=base | env,
    )


def test_entrypoint_needs_the_password_for_init_only(tmp_path: Path) -> None:
    log = tmp_path / "log"
    done = _entrypoint(tmp_path, "pasar", "run")
    assert done.returncode == 1 and "docker compose run --rm pasar pasar init" in done.stderr
    assert not log.exists()
    done = _entrypoint(tmp_path, "pasar", "init", PASAR_ADMIN_PASSWORD="a long password")
    assert done.returncode == 0 and log.read_text() == "pasar init password=a long password\n"
    log.unlink()
    done = _entrypoint(tmp_path, "pasar", "run", PASAR_ADMIN_PASSWORD="a long password")
    assert done.returncode == 0 and log.read_text() == "pasar run password=\n"  # the node never sees it
    log.unlink()
    done = _entrypoint(tmp_path, "sh", "-c", "echo tor")  # other services: their own command, untouched
    assert done.returncode == 0 and done.stdout == "tor\n" and not log.exists()
