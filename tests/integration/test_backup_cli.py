"""``pasar backup`` / ``pasar restore`` as an operator runs them: node stopped, node running, refusals.

Real ``pasar`` processes on loopback (``--no-tor``); the passphrase comes from ``PASAR_BACKUP_PASSPHRASE``
and the CLI's key costs are the real default (MODERATE: well under a second each here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from node.adapters import backup as files
from node.core.backupfile import BackupStatus

from .conftest import Node, pasar

PASSPHRASE = "the operator's long passphrase"


def _stores(data_dir: Path) -> list[str]:
    return [s["onion"] for s in json.loads(pasar(data_dir, "store", "list", "--json").stdout)]


def _make_store(node: Node, name: str) -> str:
    node.cli("store", "create", name)
    onion = _stores(node.data_dir)[-1]
    node.cli("listing", "add", "--store", onion, "--title", f"{name} mug", "--price-sat", "12000", "--kind", "digital")
    return onion


def _restore(backup: Path, target: Path, passphrase: str = PASSPHRASE, check: bool = True) -> str:
    proc = pasar(target, "restore", str(backup), check=check, PASAR_BACKUP_PASSPHRASE=passphrase)
    return proc.stdout + proc.stderr


def test_backup_with_the_node_stopped_then_restore(node_factory: Callable[[], Node], tmp_path: Path) -> None:
    node = node_factory()
    onion = _make_store(node, "Stopped shop")
    backup = tmp_path / "stopped.pasarbak"
    said = node.cli("backup", str(backup), PASAR_BACKUP_PASSPHRASE=PASSPHRASE).stdout
    assert f"backup written to {backup}" in said and "1 store(s)" in said
    target = tmp_path / "restored"
    said = _restore(backup, target)
    assert f"store: {onion}.onion" in said
    assert "stop the old node for good" in said
    assert _stores(target) == [onion]
    titles = [x["title"] for x in json.loads(pasar(target, "listing", "list", "--store", onion, "--json").stdout)]
    assert titles == ["Stopped shop mug"]
    assert (target / "node.key").read_bytes() == (node.data_dir / "node.key").read_bytes()


def test_backup_of_a_running_node_goes_through_its_admin_api(running_node: Node, tmp_path: Path) -> None:
    onion = _make_store(running_node, "Running shop")
    backup = tmp_path / "running.pasarbak"
    said = running_node.cli("backup", str(backup), PASAR_BACKUP_PASSPHRASE=PASSPHRASE).stdout
    assert "made by the running node" in said
    status = _last(running_node.data_dir)  # recorded by `pasar backup` once the file was saved, not before
    assert status.ok and "saved" in status.detail and ".download-" not in status.detail
    target = tmp_path / "restored"
    _restore(backup, target)
    assert _stores(target) == [onion]
    deadline = time.monotonic() + 30  # the node deletes its copy once the last byte is sent
    while [p for p in running_node.data_dir.iterdir() if p.name.startswith((".download-", ".backup-"))]:
        assert time.monotonic() < deadline, "the node kept the backup's file"
        time.sleep(0.05)


def test_refusals_write_nothing(node_factory: Callable[[], Node], tmp_path: Path) -> None:
    node = node_factory()
    _make_store(node, "Careful shop")
    backup = tmp_path / "b.pasarbak"
    proc = node.cli("backup", str(backup), check=False)  # no variable, no terminal
    assert proc.returncode == 1 and "PASAR_BACKUP_PASSPHRASE" in proc.stderr and not backup.exists()
    node.cli("backup", str(backup), PASAR_BACKUP_PASSPHRASE=PASSPHRASE)
    proc = node.cli("backup", str(backup), check=False, PASAR_BACKUP_PASSPHRASE=PASSPHRASE)
    assert proc.returncode == 1 and "exists" in proc.stderr
    target = tmp_path / "restored"
    said = _restore(backup, target, "wrong passphrase here", check=False)
    assert "wrong passphrase" in said and not target.exists()
    cut = tmp_path / "cut.pasarbak"
    cut.write_bytes(backup.read_bytes()[:-50])
    said = _restore(cut, target, check=False)
    assert "truncated" in said or "damaged" in said
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")]
    said = _restore(backup, node.data_dir, check=False)
    assert "not empty" in said


def _last(data_dir: Path) -> BackupStatus:
    status = files.read_status(data_dir)
    assert status is not None
    return status


def test_a_stopped_node_is_backed_up_without_its_directory_backend(
    node_factory: Callable[[], Node], tmp_path: Path
) -> None:
    """With directory_dsn set and PostgreSQL unreachable: the directory is not in the backup, so it is not opened."""
    node = node_factory()
    _make_store(node, "Postgres shop")
    dsn = f"host={tmp_path / 'no-postgres-here'} dbname=pasar"
    backup = tmp_path / "b.pasarbak"
    proc = node.cli(
        "backup",
        str(backup),
        "--with-directory",
        check=False,
        PASAR_BACKUP_PASSPHRASE=PASSPHRASE,
        PASAR_DIRECTORY_DSN=dsn,
    )
    assert proc.returncode == 1 and "pg_dump" in proc.stderr and not backup.exists()
    said = node.cli("backup", str(backup), PASAR_BACKUP_PASSPHRASE=PASSPHRASE, PASAR_DIRECTORY_DSN=dsn).stdout
    assert f"backup written to {backup}" in said
    status = _last(node.data_dir)
    assert status.ok and status.detail.startswith("made by pasar backup: ") and str(backup) not in status.detail


def test_a_failed_backup_of_a_stopped_node_is_recorded(node_factory: Callable[[], Node], tmp_path: Path) -> None:
    node = node_factory()
    _make_store(node, "Damaged shop")
    (node.data_dir / "gossip.sqlite").write_bytes(b"not a database, " * 256)
    backup = tmp_path / "b.pasarbak"
    proc = node.cli("backup", str(backup), check=False, PASAR_BACKUP_PASSPHRASE=PASSPHRASE)
    assert proc.returncode == 1 and "gossip.sqlite" in proc.stderr and not backup.exists()
    status = _last(node.data_dir)
    assert not status.ok and "gossip.sqlite" in status.detail
