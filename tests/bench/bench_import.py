"""CSV import benchmark: ``pasar listing import`` of a 100,000-row file, both ways.

Run from the repository root::

    .venv/bin/python tests/bench/bench_import.py                   # about 3 minutes
    .venv/bin/python tests/bench/bench_import.py --rows 20000 --anchor-rows ""   # quick look

It generates a CSV (title, price, kind, category, tags and a description of
about 200 characters per row) and times, each on a fresh data directory:

- ``local``: the node stopped, the CLI writes the data directory itself;
- ``remote``: a running ``pasar run --no-tor`` node, the CLI posts the batches
  to its admin API;
- ``anchor``: the old behaviour, fixed batches of 50 (``--batch 50``), node
  stopped, at the ``--anchor-rows`` sizes (default 10,000 and 20,000). Its
  time grows with the square of the rows: the figure to compare against.

For each run it prints the wall time, rows per second, how many durable
batches were acknowledged (progress lines), the bytes written to disk by the
process that owns the database and its peak memory. Target: 100,000 rows in
<= 60 s both ways on a 2-core machine.

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke (then non-zero with a one-line reason). Every process it
starts is stopped by PID, every wait is bounded, all traffic goes to 127.0.0.1,
and each data directory is a temporary one removed afterwards. pytest does not
collect this file (norecursedirs in pyproject.toml; no test_ prefix).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from procs import BenchError, free_port, node_env, stop_process
from procs import pasar as run_pasar

START_TIMEOUT = 30.0
IMPORT_TIMEOUT = 900.0
TARGET_SECONDS = 60.0
REPO = Path(__file__).resolve().parents[2]
WORDS = "wool linen oak brass clay honey tea cedar salt amber slate moss copper felt birch".split()


@dataclass
class Result:
    label: str
    rows: int
    seconds: float
    batches: int
    written_mb: float | None
    peak_mb: float


# -- input ---------------------------------------------------------------------
def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("title,price_sat,kind,category,tags,description\n")
        for i in range(rows):
            words = " ".join(rng.choice(WORDS) for _ in range(32))
            tags = f'"{rng.choice(WORDS)}, {rng.choice(WORDS)}"'
            fh.write(f"Item {i} {rng.choice(WORDS)},{rng.randint(1000, 10**7)},digital,{rng.choice(WORDS)},")
            fh.write(f'{tags},"Bulk item {i}: {words}"\n')


# -- processes -----------------------------------------------------------------


def pasar(data_dir: Path, *args: str) -> str:
    return run_pasar(data_dir, *args, PASAR_STORE_PORT_BASE="0", PASAR_LOG_LEVEL="warning")


def proc_io_written(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def running_node(data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    with open(data_dir / "node.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--no-tor", "--admin-port", str(port)],
            env=node_env(data_dir, PASAR_STORE_PORT_BASE="0", PASAR_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            wait_started(proc, data_dir, port)
            yield proc
        finally:
            stop_process(proc)


def wait_started(proc: subprocess.Popen[bytes], data_dir: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for _ in range(1000):
        if proc.poll() is not None:
            raise BenchError(f"node exited with {proc.returncode} while starting (see {data_dir / 'node.log'})")
        try:
            pid = json.loads((data_dir / "node.lock").read_text() or "{}").get("pid")
        except (OSError, ValueError):
            pid = None
        with socket.socket() as s:
            s.settimeout(0.5)
            if pid == proc.pid and s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise BenchError(f"node did not start within {START_TIMEOUT:.0f}s")


def run_import(data_dir: Path, csv: Path, extra: list[str]) -> tuple[float, int, resource.struct_rusage]:
    """Time one ``pasar listing import``; returns (seconds, progress lines, the importer's own rusage)."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "listing", "import", "--store", "Bench", *extra, str(csv)],
            env=node_env(data_dir, PASAR_STORE_PORT_BASE="0", PASAR_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        deadline = started + IMPORT_TIMEOUT
        while True:  # wait4 rather than wait: it gives this child's own peak memory and blocks written
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                stop_process(proc)
                raise BenchError(f"import did not finish within {IMPORT_TIMEOUT:.0f}s")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        raise BenchError(f"import failed ({proc.returncode}): {text.strip()[-500:]}")
    return seconds, sum(1 for line in text.splitlines() if line.startswith("imported ")), usage


# -- one measurement -------------------------------------------------------------
def measure(label: str, csv: Path, rows: int, *, remote: bool, extra: list[str]) -> Result:
    root = Path(tempfile.mkdtemp(prefix="pasar-bench-import-"))
    data_dir = root / "data"
    try:
        pasar(data_dir, "init")
        pasar(data_dir, "store", "create", "Bench")
        if remote:
            with running_node(data_dir) as node:
                before = proc_io_written(node.pid)
                seconds, acks, _usage = run_import(data_dir, csv, extra)
                after = proc_io_written(node.pid)
                written = None if before is None or after is None else (after - before) / 1e6
                peak = proc_peak_kb(node.pid) / 1024
        else:
            seconds, acks, usage = run_import(data_dir, csv, extra)
            written = usage.ru_oublock * 512 / 1e6 if usage.ru_oublock else None
            peak = usage.ru_maxrss / 1024  # KB on Linux
        stored = json.loads((next((data_dir / "stores").iterdir()) / "store.json").read_bytes())
        if len(stored["listings"]) != rows:
            raise BenchError(f"{label}: {len(stored['listings'])} listings stored, expected {rows}")
        return Result(label, rows, seconds, acks, written, peak)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: list[Result], rows: int) -> list[str]:
    lines = [
        f"{'run':<28} {'rows':>7} {'seconds':>8} {'rows/s':>8} {'batches':>8} {'written MB':>11} {'peak MB':>8}",
    ]
    for r in results:
        written = f"{r.written_mb:.0f}" if r.written_mb is not None else "n/a"
        lines.append(
            f"{r.label:<28} {r.rows:>7} {r.seconds:>8.1f} {r.rows / r.seconds:>8.0f} {r.batches:>8} "
            f"{written:>11} {r.peak_mb:>8.0f}"
        )
    anchors = [r for r in results if r.label.startswith("anchor")]
    if anchors:
        a = max(anchors, key=lambda r: r.rows)
        scaled = a.seconds * (rows / a.rows) ** 2
        lines.append(
            f"old behaviour (--batch 50) extrapolated to {rows} rows from {a.rows}: about {scaled:.0f} s (quadratic)"
        )
    lines.append("issue 7 reported for the old behaviour: 10,000 rows 12 s, 20,000 rows 45 s, 44,950 rows 240 s")
    for r in results:
        if not r.label.startswith("anchor") and r.rows == rows:
            verdict = "meets" if r.seconds <= TARGET_SECONDS else "MISSES"
            lines.append(f"{r.label}: {r.seconds:.1f} s {verdict} the target of <= {TARGET_SECONDS:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the measured file (at most 100,000)")
    parser.add_argument("--anchor-rows", default="10000,20000", help="sizes for the --batch 50 anchor ('' for none)")
    parser.add_argument("--only", choices=("local", "remote"), help="measure one way only")
    args = parser.parse_args(argv)
    if not 1 <= args.rows <= 100_000:
        parser.error("--rows must be from 1 to 100000")
    anchors = [int(n) for n in args.anchor_rows.split(",") if n.strip()]
    work = Path(tempfile.mkdtemp(prefix="pasar-bench-csv-"))
    try:
        results = []
        for n in anchors:
            write_csv(work / f"rows{n}.csv", n)
            results.append(measure("anchor --batch 50, local", work / f"rows{n}.csv", n, remote=False,
                                   extra=["--batch", "50"]))  # fmt: skip
            print(f"  measured {results[-1].label} ({n} rows): {results[-1].seconds:.1f} s", flush=True)
        csv = work / "rows.csv"
        write_csv(csv, args.rows)
        print(f"  {csv.stat().st_size / 1e6:.1f} MB CSV with {args.rows} rows", flush=True)
        for remote in (False, True):
            if args.only and args.only != ("remote" if remote else "local"):
                continue
            label = "remote (node running, API)" if remote else "local (node stopped)"
            results.append(measure(label, csv, args.rows, remote=remote, extra=[]))
            print(f"  measured {label}: {results[-1].seconds:.1f} s", flush=True)
    except BenchError as exc:
        print(f"bench_import: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(report(results, args.rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
