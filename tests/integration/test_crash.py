"""kill -9 during a bulk import: the database stays readable and every acknowledged listing is there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import cli_env

ROWS = 3000
BATCH = 10
MIN_ACKS = 8


def write_csv(path: Path) -> None:
    lines = ["title,price_sat,kind,description,tags"]
    lines += [
        f'Item {i},{1000 + i},digital,"Bulk item number {i}, with enough text to make each write real",bulk'
        for i in range(ROWS)
    ]
    path.write_text("\n".join(lines) + "\n")


def import_and_kill(data_dir: Path, csv: Path, store: str, victim: str, node_pid: int | None) -> int:
    """Run ``pasar listing import``; SIGKILL ``victim`` after MIN_ACKS progress lines. Returns acked count."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "listing", "import", "--store", store, "--batch", str(BATCH), str(csv)],
        env=cli_env(data_dir),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    acked, deadline = 0, time.monotonic() + 120
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded: the importer ends, or we kill it
            if line.startswith("imported "):
                acked = int(line.split()[1].split("/")[0])
                if acked >= MIN_ACKS * BATCH:
                    os.kill(node_pid if victim == "node" else proc.pid, signal.SIGKILL)
                    break
            assert time.monotonic() < deadline, "import too slow"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert acked >= MIN_ACKS * BATCH, f"only {acked} acknowledged"
    assert acked < ROWS, "import finished before the kill: nothing was tested"
    return acked


def stored_titles(node, store: str) -> set[str]:
    items = json.loads(node.cli("listing", "list", "--store", store, "--json").stdout)
    return {i["title"] for i in items}


def check_database_files(data_dir: Path) -> None:
    for path in [data_dir / "node.json", *data_dir.glob("stores/*/store.json")]:
        json.loads(path.read_text())  # a complete, parseable file, never half of one
    leftovers = [p for p in data_dir.rglob("*.tmp")]
    assert len(leftovers) <= 1  # at most the one temp file being written at the kill


def test_kill_importer_mid_import(node_factory, tmp_path):
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    csv = tmp_path / "bulk.csv"
    write_csv(csv)
    acked = import_and_kill(node.data_dir, csv, store, victim="importer", node_pid=None)
    check_database_files(node.data_dir)
    titles = stored_titles(node, store)
    assert {f"Item {i}" for i in range(acked)} <= titles
    assert len(titles) % BATCH == 0  # batches are atomic: all of one or none


def test_kill_node_mid_import_through_api(node_factory, tmp_path):
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    node.start()
    csv = tmp_path / "bulk.csv"
    write_csv(csv)
    acked = import_and_kill(node.data_dir, csv, store, victim="node", node_pid=node.proc.pid)
    node.stop()
    check_database_files(node.data_dir)
    titles = stored_titles(node, store)  # offline: opens the database directly
    assert {f"Item {i}" for i in range(acked)} <= titles
    node.start()  # and the node itself starts again on it
    assert {f"Item {i}" for i in range(acked)} <= stored_titles(node, store)


WRITER = r"""
import sys
from node.adapters.jsonstore import AtomicJSONStorage
st = AtomicJSONStorage(sys.argv[1])
blob = "x" * 400
version = 0
while True:
    version += 1
    st.write({"meta": {"1": {"version": version}}, "rows": {str(i): {"v": version, "pad": blob} for i in range(10000)}})
    print(version, flush=True)
"""


def test_kill_during_large_writes_never_leaves_a_partial_file(tmp_path):
    """SIGKILL a process rewriting a ~4 MB database at random moments, 12 times."""
    import random

    db = tmp_path / "big.json"
    rng = random.Random(1234)
    last_acked = 0
    for _round in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # at least one complete write acknowledged
        assert first.strip().isdigit(), "writer failed to start"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        acked = [int(v) for v in [first, *proc.stdout.read().split()] if str(v).strip().isdigit()]
        proc.stdout.close()
        doc = json.loads(db.read_text())  # must be one whole version
        version = doc["meta"]["1"]["version"]
        assert all(row["v"] == version for row in doc["rows"].values())
        assert version >= max(acked)  # nothing acknowledged is lost
        last_acked = version
    assert last_acked >= 1
