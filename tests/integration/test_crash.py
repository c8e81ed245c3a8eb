"""kill -9 during a bulk import: the database stays readable and every acknowledged listing is there."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .conftest import cli_env

ROWS = 3000
BATCH = 10
MIN_ACKS = 8


def write_csv(path: Path, rows: int = ROWS) -> None:
    lines = ["title,price_sat,kind,description,tags"]
    lines += [
        f'Item {i},{1000 + i},digital,"Bulk item number {i}, with enough text to make each write real",bulk'
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Cut:
    acked: int  # the highest "imported N/T" the importer printed
    stderr: str  # everything it wrote to stderr
    returncode: int


def import_and_kill(
    data_dir: Path,
    csv: Path,
    store: str,
    victim: str,
    node_pid: int | None,
    *,
    batch: tuple[str, ...] = ("--batch", str(BATCH)),
    kill_at: int = MIN_ACKS * BATCH,
    rows: int = ROWS,
) -> Cut:
    """Run ``pasar listing import``; SIGKILL ``victim`` once ``kill_at`` rows are acknowledged.

    When the node is the victim the importer runs on, and what it says is returned.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "listing", "import", "--store", store, *batch, str(csv)],
        env=cli_env(data_dir),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seen, deadline = [], time.monotonic() + 120
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded: the importer ends, or we kill it
            seen.append(line)
            if line.startswith("imported ") and acked_in(line) >= kill_at:
                os.kill(node_pid if victim == "node" else proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "import too slow"
        if victim == "node":
            seen.append(proc.communicate(timeout=60)[1])  # it must give up on its own, and say why
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    text = "".join(seen)
    acked = max([acked_in(line) for line in text.splitlines() if line.startswith("imported ")], default=0)
    assert acked >= kill_at, f"only {acked} acknowledged: {text[-2000:]}"
    assert acked < rows, "import finished before the kill: nothing was tested"
    return Cut(acked, text, proc.returncode)


def acked_in(progress_line: str) -> int:
    return int(progress_line.split()[1].split("/")[0])


def stored_titles(node, store: str) -> set[str]:
    items = json.loads(node.cli("listing", "list", "--store", store, "--json").stdout)
    return {i["title"] for i in items}


def temp_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*.tmp") if "pasar-testnet" not in p.parts]


def check_database_files(data_dir: Path) -> None:
    for path in [data_dir / "node.json", *data_dir.glob("stores/*/store.json")]:
        json.loads(path.read_text())  # a complete, parseable file, never half of one
    assert len(temp_files(data_dir)) <= 1  # at most the one temp file being written at the kill


def test_kill_importer_mid_import(node_factory, tmp_path):
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    csv = tmp_path / "bulk.csv"
    write_csv(csv)
    acked = import_and_kill(node.data_dir, csv, store, victim="importer", node_pid=None).acked
    check_database_files(node.data_dir)
    titles = stored_titles(node, store)
    assert {f"Item {i}" for i in range(acked)} <= titles
    assert len(titles) % BATCH == 0  # batches are atomic: all of one or none
    assert temp_files(node.data_dir) == []  # opening the data dir again removed a leftover temp file


def test_kill_importer_with_growing_batches(node_factory, tmp_path):
    """The default batches double in size; each one is still acknowledged only once durable."""
    rows = 20_000
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    csv = tmp_path / "bulk.csv"
    write_csv(csv, rows)
    cut = import_and_kill(node.data_dir, csv, store, victim="importer", node_pid=None, batch=(), kill_at=100, rows=rows)
    check_database_files(node.data_dir)
    titles = stored_titles(node, store)
    assert {f"Item {i}" for i in range(cut.acked)} <= titles
    assert titles == {f"Item {i}" for i in range(len(titles))}  # a prefix of the file, ending at a batch end
    ends = [50 * 2**k for k in range(12)]  # 50, 100, 200, ...: rows stored after each batch
    assert len(titles) in ends, len(titles)


def test_kill_node_mid_import_through_api(node_factory, tmp_path):
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    node.start()
    csv = tmp_path / "bulk.csv"
    write_csv(csv)
    cut = import_and_kill(node.data_dir, csv, store, victim="node", node_pid=node.proc.pid)
    acked = cut.acked
    # The importer stops on its own, non-zero, saying what was stored and where to resume.
    assert cut.returncode == 1 and "Traceback" not in cut.stderr, cut.stderr
    assert f"{acked} of {ROWS} rows were acknowledged as stored (CSV lines 2-{acked + 1})" in cut.stderr
    assert f"--from-line {acked + 2}" in cut.stderr and "stopped or crashed" in cut.stderr, cut.stderr[-600:]
    node.stop()
    check_database_files(node.data_dir)
    titles = stored_titles(node, store)  # offline: opens the database directly
    assert {f"Item {i}" for i in range(acked)} <= titles
    node.start()  # and the node itself starts again on it
    assert {f"Item {i}" for i in range(acked)} <= stored_titles(node, store)


def test_resuming_after_a_node_crash_stores_every_row_exactly_once(node_factory, tmp_path):
    """The batch cut off by the crash may be stored: resuming (or importing it all again) must not duplicate it."""
    node = node_factory()
    store = node.cli("store", "create", "Bulk").stdout.strip()
    node.start()
    csv = tmp_path / "bulk.csv"
    write_csv(csv)
    cut = import_and_kill(node.data_dir, csv, store, victim="node", node_pid=node.proc.pid, batch=(), kill_at=100)
    assert cut.returncode == 1 and "rows already stored are skipped" in cut.stderr, cut.stderr[-600:]
    resume_at = re.findall(r"--from-line (\d+)", cut.stderr)[-1]
    node.stop()
    node.start()
    resumed = node.cli("listing", "import", "--store", store, "--from-line", resume_at, str(csv))
    assert "Traceback" not in resumed.stderr
    assert stored_title_counts(node, store) == {f"Item {i}": 1 for i in range(ROWS)}  # none missing, none twice
    # Not sure what was stored? The whole file again stores nothing new, through the node and offline.
    again = node.cli("listing", "import", "--store", store, str(csv))
    assert "imported 0 listings" in again.stdout and f"{ROWS} rows were already imported" in again.stdout
    node.stop()
    offline = node.cli("listing", "import", "--store", store, "--from-line", "2", str(csv))
    assert "imported 0 listings" in offline.stdout, offline.stdout
    assert stored_title_counts(node, store) == {f"Item {i}": 1 for i in range(ROWS)}


def stored_title_counts(node, store: str) -> dict[str, int]:
    items = json.loads(node.cli("listing", "list", "--store", store, "--json").stdout)
    return dict(Counter(i["title"] for i in items))


def test_temp_files_left_by_a_crash_are_removed_at_open(node_factory):
    node = node_factory()
    onion = node.cli("store", "create", "Shop").stdout.strip().removesuffix(".onion")
    store_dir = node.data_dir / "stores" / onion
    stale = [
        node.data_dir / ".node.json.4242.tmp",
        store_dir / ".store.json.999999.tmp",
        store_dir / "images" / f".{'a' * 64}.jpg.31337.tmp",
        store_dir / f".store.json.{os.getpid()}.tmp",  # a live pid: still stale, the lock says we are alone
    ]
    kept = [store_dir / "notes.tmp", store_dir / ".store.json.tmp", node.data_dir / "store.json.12.tmp"]
    for path in stale + kept:
        path.write_bytes(b"{" * 1000)
    half_made = node.data_dir / "stores" / ".new-abc"
    (half_made / "images").mkdir(parents=True)
    (half_made / "key").write_bytes(b"k" * 32)
    assert node.cli("listing", "list", "--store", "Shop").returncode == 0
    assert [p for p in stale if p.exists()] == [] and not half_made.exists()
    assert all(p.exists() for p in kept)


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
