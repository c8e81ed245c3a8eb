"""The CLI names every problem it found, and never ends in a Python traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import cli_env, make_node, pasar

BAD_ROWS = 14


def bad_csv(tmp_path, rows: int = BAD_ROWS):
    lines = ["title,price_sat,kind"]
    for n in range(rows):
        lines.append(f",{'x' if n % 2 else '-5'},digital")  # no title, bad price
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture(params=[False, True], ids=["data-dir", "through-node"])
def shop(request, tmp_path):
    """A node with one store "Shop": commands open the data dir, or go through the running node."""
    node = make_node(tmp_path)
    node.cli("store", "create", "Shop")
    if request.param:
        node.start()
    yield node
    node.stop()


def test_import_prints_each_bad_line_and_writes_nothing(tmp_path, shop):
    proc = shop.cli("listing", "import", "--store", "Shop", str(bad_csv(tmp_path)), check=False)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("pasar: error:") and "nothing was imported" in lines[0]
    for row in range(2, 2 + BAD_ROWS):
        assert any(f"line {row}: title: is required" in line for line in lines), (row, proc.stderr)
        assert any(line.strip().startswith(f"line {row}: price_sat:") for line in lines), (row, proc.stderr)
    # In file order: line 9 before line 10.
    titles = [line for line in lines if "title: is required" in line]
    assert titles == sorted(titles, key=lambda text: int(text.split()[1].rstrip(":")))
    assert json.loads(shop.cli("listing", "list", "--store", "Shop", "--json").stdout) == []


def test_many_problems_are_capped_with_a_count(tmp_path):
    node = make_node(tmp_path)
    node.cli("store", "create", "Shop")
    proc = node.cli("listing", "import", "--store", "Shop", str(bad_csv(tmp_path, 100)), check=False)
    lines = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert proc.returncode == 1 and len(lines) == 51
    assert lines[-1] == "... and 150 more"


def test_listing_add_prints_each_field(shop):
    proc = shop.cli("listing", "add", "--store", "Shop", "--price-sat", "1.5", "--kind", "physical", check=False)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    problems = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert "title: is required" in problems
    assert any(p.startswith("price_sat: ") for p in problems)
    assert any(p.startswith("shipping: ") for p in problems)


def test_output_cut_short_by_a_pipe_is_not_a_traceback(tmp_path):
    # `pasar config | head -1`: the reader closes the pipe after one line.
    proc = subprocess.run(
        f"{sys.executable} -m node config | head -1",
        shell=True,  # a fixed command line, to get a real pipe closed early
        env=cli_env(tmp_path / "d"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout.count("\n") == 1
    assert_no_traceback(proc)
    assert proc.stderr == ""


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path):
    for target in ("/proc/pasar-test", "/proc/self/pasar"):
        proc = pasar(tmp_path, "--data-dir", target, "init", check=False)
        assert proc.returncode == 1
        assert_no_traceback(proc)
        assert proc.stderr.startswith("pasar: error:") and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_a_damaged_schema_version_is_named(tmp_path):
    node = make_node(tmp_path)
    onion = node.cli("store", "create", "Shop").stdout.strip().removesuffix(".onion")
    path = node.data_dir / "stores" / onion / "store.json"
    doc = json.loads(path.read_text())
    doc["meta"]["1"]["schema"] = "x"
    path.write_text(json.dumps(doc))
    proc = node.cli("listing", "list", "--store", "Shop", check=False)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert "damaged" in proc.stderr and "backup" in proc.stderr
