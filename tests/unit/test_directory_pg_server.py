"""tests/pg.py, the throwaway PostgreSQL: a failed start leaves nothing behind; stop() signals only our postmaster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import PostgresError, ThrowawayPostgres, _alive, find_pg_bin

pytestmark = pytest.mark.skipif(find_pg_bin() is None, reason="no PostgreSQL binaries")


def _pasar_pg_dirs() -> set[Path]:
    return set(Path("/tmp").glob("pasar-pg-*"))


def test_a_failed_start_removes_its_temp_dir_and_leaves_no_server():
    before = _pasar_pg_dirs()
    server = ThrowawayPostgres(settings={"shared_buffers": "not-a-size"})
    with pytest.raises(PostgresError, match="pg_ctl start failed"):
        server.start()
    assert server.root is None and server.pid is None
    assert not (_pasar_pg_dirs() - before)


def test_stop_does_not_signal_a_pid_that_is_no_longer_our_postmaster():
    server = ThrowawayPostgres().start()
    real, root = server.pid, server.root
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.pid = stranger.pid  # as if our postmaster had died and its PID gone to another process
        server.stop()
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()
        server.pid, server.root = real, root  # then stop our real postmaster
        server.stop()
    assert real is not None and not _alive(real)


def test_stop_waits_for_the_postmaster_to_exit_before_removing_its_files():
    server = ThrowawayPostgres().start()
    pid, root = server.pid, server.root
    assert pid is not None and root is not None
    server.stop()
    assert not _alive(pid)
    assert not root.exists()
