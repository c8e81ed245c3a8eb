"""The real ``pasar`` command: offline against the data dir, and against a running node."""

import json
import os
import stat
import urllib.error
import urllib.request

import pytest

from node.core import addresses

from .conftest import free_port, make_node, pasar


def test_help_lists_every_command(tmp_path):
    out = pasar(tmp_path, "--help").stdout
    for word in ("init", "run", "store", "listing", "config"):
        assert word in out
    assert "add" in pasar(tmp_path, "listing", "--help").stdout
    assert "--data-dir" in pasar(tmp_path, "listing", "import", "--help").stdout


def test_data_dir_flag_works_before_and_after_the_command(tmp_path):
    target = tmp_path / "flagged"
    env = {"PASAR_DATA_DIR": str(tmp_path / "not-this-one")}
    assert str(target) in pasar(tmp_path, "--data-dir", str(target), "init", **env).stdout
    pasar(tmp_path, "--data-dir", str(target), "store", "create", "A", **env)
    out = pasar(tmp_path, "listing", "list", "--store", "A", "--data-dir", str(target), **env)
    assert out.returncode == 0 and not (tmp_path / "not-this-one").exists()


def test_init_creates_private_token_and_is_idempotent(tmp_path):
    node = make_node(tmp_path)
    token = node.data_dir / "admin.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(node.token) >= 32
    before = node.token
    again = node.cli("init")
    assert "already initialised" in again.stdout and node.token == before
    node.cli("init", "--new-token")
    assert node.token != before
    assert "correct horse" not in again.stdout + again.stderr


def test_init_needs_a_password_source(tmp_path):
    proc = pasar(tmp_path / "d", "init", check=False, PASAR_ADMIN_PASSWORD="short")
    assert proc.returncode == 1 and "at least 8" in proc.stderr
    assert not (tmp_path / "d" / "node.json").exists()  # nothing half-made
    env = {"PASAR_ADMIN_PASSWORD": ""}
    proc = pasar(tmp_path / "d", "init", check=False, **env)
    assert proc.returncode == 1
    assert pasar(tmp_path / "d", "init").returncode == 0


def test_reset_password(tmp_path):
    node = make_node(tmp_path)

    def stored_hash():
        return json.loads((node.data_dir / "node.json").read_text())["admin"]["1"]["password_hash"]

    before = stored_hash()
    node.cli("init", "--reset-password", PASAR_ADMIN_PASSWORD="a new password 123")
    after = stored_hash()
    assert after != before and after.startswith("$argon2id$")
    from node.core.crypto import check_password

    assert check_password(after.encode(), "a new password 123") and not check_password(
        after.encode(), "correct horse battery"
    )


def test_store_and_listing_commands_offline(tmp_path):
    node = make_node(tmp_path)
    address = node.cli("store", "create", "Corner Shop", "--description", "hello").stdout.strip()
    assert address.endswith(".onion") and addresses.is_address(address)
    listed = json.loads(node.cli("store", "list", "--json").stdout)
    assert listed[0]["address"] == address and listed[0]["name"] == "Corner Shop"
    lid = node.cli(
        "listing",
        "add",
        "--store",
        "corner shop",
        "--title",
        "Mug",
        "--price-sat",
        "21000",
        "--shipping",
        "Post | WORLDWIDE | 1000",
        "--tags",
        "kitchen, gift",
    ).stdout.strip()
    items = json.loads(node.cli("listing", "list", "--store", address[:10], "--json").stdout)
    assert [(i["id"], i["title"], i["price_sat"], i["tags"]) for i in items] == [
        (lid, "Mug", 21000, ["gift", "kitchen"])
    ]
    assert "Mug" in node.cli("listing", "list", "--store", address).stdout
    node.cli("listing", "remove", "--store", address, lid)
    assert json.loads(node.cli("listing", "list", "--store", address, "--json").stdout) == []


def test_errors_are_one_line_without_traceback(tmp_path):
    node = make_node(tmp_path)
    node.cli("store", "create", "Shop")
    cases = [
        ("listing", "add", "--store", "Shop", "--title", "X", "--price-sat", "1.5", "--kind", "digital"),
        ("listing", "list", "--store", "nope"),
        ("listing", "remove", "--store", "Shop", "missing"),
        ("listing", "import", "--store", "Shop", str(tmp_path / "missing.csv")),
    ]
    for args in cases:
        proc = node.cli(*args, check=False)
        assert proc.returncode == 1, args
        assert proc.stderr.startswith("pasar: error: ") and "Traceback" not in proc.stderr, proc.stderr
        # One line, or for invalid input one headline and one indented line per problem.
        problems = proc.stderr.splitlines()[1:]
        assert all(line.startswith("  ") for line in problems), proc.stderr
        assert ("--price-sat" in args) == bool(problems), proc.stderr


def test_bad_config_fails_at_start_with_one_line(tmp_path):
    node = make_node(tmp_path)
    (node.data_dir / "pasar.toml").write_text("admin_port = 'eighty'\n")
    proc = node.cli("store", "list", check=False)
    assert proc.returncode == 1 and "admin_port" in proc.stderr and proc.stderr.count("\n") == 1
    (node.data_dir / "pasar.toml").write_text("")
    proc = node.cli("store", "list", check=False, PASAR_NO_SUCH="1")
    assert proc.returncode == 1 and "PASAR_NO_SUCH" in proc.stderr


def test_uninitialised_data_dir_says_run_init(tmp_path):
    proc = pasar(tmp_path / "empty", "store", "list", check=False)
    assert proc.returncode == 1 and "pasar init" in proc.stderr


def test_run_without_the_tor_program_says_how_to_install_it(tmp_path):
    node = make_node(tmp_path)
    proc = node.cli("run", "--tor-binary", str(tmp_path / "no-such-tor"), check=False)
    assert proc.returncode == 1
    assert "was not found" in proc.stderr and "apt install tor" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_against_a_closed_control_port_names_the_setting(tmp_path):
    node = make_node(tmp_path)
    port = free_port()
    proc = node.cli("run", "--tor-control", f"127.0.0.1:{port}", check=False)
    assert proc.returncode == 1
    assert f"ControlPort 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_init_changes_nothing_while_a_node_runs(running_node):
    before = running_node.token
    proc = running_node.cli("init", "--new-token", check=False)
    assert proc.returncode == 1 and "stop it first" in proc.stderr
    assert running_node.token == before


def test_commands_go_through_the_running_node(running_node):
    node = running_node
    address = node.cli("store", "create", "Live Shop").stdout.strip()
    stores = json.loads(node.cli("store", "list", "--json").stdout)
    assert stores[0]["address"] == address and stores[0]["local_url"].startswith("http://127.0.0.1:")
    assert stores[0]["status"] == "local"
    lid = node.cli(
        "listing", "add", "--store", address, "--title", "Tea", "--price-sat", "500", "--kind", "digital"
    ).stdout.strip()
    assert [i["id"] for i in json.loads(node.cli("listing", "list", "--store", address, "--json").stdout)] == [lid]
    proc = node.cli(
        "listing", "add", "--store", address, "--title", "", "--price-sat", "5", "--kind", "digital", check=False
    )
    assert proc.returncode == 1 and "title" in proc.stderr and "Traceback" not in proc.stderr


def test_testnet_status_and_down_on_an_empty_root(tmp_path):
    root = tmp_path / "net"
    proc = pasar(tmp_path / "d", "testnet", "status", "--root", str(root), check=False)
    assert proc.returncode == 3 and "down" in proc.stdout
    proc = pasar(tmp_path / "d", "testnet", "down", "--root", str(root))
    assert "stopped" in proc.stdout


# -- CSV import ----------------------------------------------------------------
def _red_png(path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(path, format="PNG")
    return path


def _noise_png(path, side=200):
    from PIL import Image

    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, format="PNG")
    return path


def _csv(tmp_path, lines):
    path = tmp_path / "shop.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_with_a_bad_image_midway_writes_nothing_and_names_file_and_line(tmp_path):
    node = make_node(tmp_path)
    node.cli("store", "create", "Shop")
    _red_png(tmp_path / "ok.png")
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    _noise_png(tmp_path / "huge.png")  # 120 KB, over the 50,000-byte limit set below
    lines = ["title,price_sat,kind,images"] + [f"Item {i},5,digital,ok.png" for i in range(130)]
    lines[101] = "Item 100,5,digital,logo.svg"
    lines[121] = "Item 120,5,digital,ok.png;huge.png"
    proc = node.cli(
        "listing", "import", "--store", "Shop", str(_csv(tmp_path, lines)), check=False, PASAR_MAX_IMAGE_BYTES="50000"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    problems = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert [p.split(": ")[0] for p in problems] == ["line 102", "line 122"], proc.stderr
    assert "logo.svg" in problems[0] and "huge.png" in problems[1] and "max_image_bytes" in problems[1]
    assert json.loads(node.cli("listing", "list", "--store", "Shop", "--json").stdout) == []
    assert list((next((node.data_dir / "stores").iterdir()) / "images").iterdir()) == []  # no image stored either


def test_import_of_a_file_that_is_not_utf8_names_line_and_byte(tmp_path):
    node = make_node(tmp_path)
    node.cli("store", "create", "Shop")
    path = tmp_path / "latin1.csv"
    path.write_bytes("title,price_sat,kind\nTea,5,digital\nCafé,6,digital\n".encode("latin-1"))
    proc = node.cli("listing", "import", "--store", "Shop", str(path), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "line 3" in proc.stderr and "byte 38 " in proc.stderr and "save the file as UTF-8" in proc.stderr


def test_import_through_the_node_uploads_each_image_once_and_resumes_from_a_line(running_node, tmp_path):
    node = running_node
    node.cli("store", "create", "Shop")
    _red_png(tmp_path / "ok.png")
    lines = ["title,price_sat,kind,images"] + [f"Item {i},{i + 1},digital,ok.png" for i in range(60)]
    csv = _csv(tmp_path, lines)
    proc = node.cli("listing", "import", "--store", "Shop", "--from-line", "32", str(csv))
    assert "imported 30 listings" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.startswith("imported ")][-1] == (
        "imported 30/30 (through line 61)"
    )
    items = json.loads(node.cli("listing", "list", "--store", "Shop", "--json").stdout)
    assert sorted(i["price_sat"] for i in items) == list(range(31, 61))
    assert len({tuple(i["images"]) for i in items}) == 1 and len(items[0]["images"]) == 1


@pytest.mark.parametrize("running", [False, True], ids=["node-stopped", "node-running"])
def test_importing_the_same_file_twice_stores_each_row_once(node_factory, tmp_path, running):
    node = node_factory()
    if running:
        node.start()
    address = node.cli("store", "create", "Shop").stdout.strip()
    _red_png(tmp_path / "ok.png")
    lines = ["title,price_sat,kind,images"] + [f"Item {i},{i + 1},digital,ok.png" for i in range(120)]
    lines.append(lines[1])  # the same row twice in one file: two listings, as the merchant wrote it
    csv = _csv(tmp_path, lines)
    first = node.cli("listing", "import", "--store", "Shop", str(csv))
    assert "imported 121 listings" in first.stdout and "skipped" not in first.stdout
    again = node.cli("listing", "import", "--store", "Shop", str(csv))
    assert "imported 0 listings" in again.stdout, again.stdout
    assert "121 rows were already imported from this file and were skipped" in again.stdout
    _csv(tmp_path, [*lines, "Item new,999,digital,ok.png"])  # the file grew: only the new row is stored
    grown = node.cli("listing", "import", "--store", "Shop", str(csv))
    assert "imported 1 listings" in grown.stdout and "121 rows were already imported" in grown.stdout
    items = json.loads(node.cli("listing", "list", "--store", "Shop", "--json").stdout)
    prices = sorted(i["price_sat"] for i in items)
    assert prices == sorted([*range(1, 121), 1, 999]), prices
    assert len({i["import_key"] for i in items}) == len(items)  # kept privately by the store...
    if running:  # ...and never in the signed public catalog
        req = urllib.request.Request(f"{node.admin_url}/api/v1/stores/{address}/catalog", headers=node.auth)
        with urllib.request.urlopen(req, timeout=30) as resp:
            catalog = resp.read().decode()
        assert "Item new" in catalog and "import_key" not in catalog and items[0]["import_key"] not in catalog


def test_the_api_validates_an_import_key_and_answers_a_repeated_one(running_node):
    node = running_node
    address = node.cli("store", "create", "Shop").stdout.strip()

    def post(body):
        req = urllib.request.Request(
            f"{node.admin_url}/api/v1/stores/{address}/listings",
            data=json.dumps(body).encode(),
            headers={**node.auth, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    tea = {"title": "Tea", "price_sat": 5, "kind": "digital", "import_key": "orders-2026:17"}
    cake = {**tea, "title": "Cake", "import_key": "orders-2026:18"}
    status, stored = post({"listings": [tea, cake]})
    assert status == 201 and [x["title"] for x in stored] == ["Tea", "Cake"]
    status, stored = post({"listings": [tea, cake, {**tea, "title": "Pie", "import_key": "x"}]})
    assert status == 201 and [x["title"] for x in stored] == ["Pie"]  # the reply: what was stored
    status, error = post(tea)  # one listing alone: refused, saying why
    assert status == 409 and "orders-2026:17" in error["error"], error
    status, error = post({"listings": [{**tea, "import_key": "k" * 81}, {**tea, "import_key": 5}]})
    assert status == 422 and set(error["fields"]) == {"[0].import_key", "[1].import_key"}, error
    titles = [i["title"] for i in json.loads(node.cli("listing", "list", "--store", address, "--json").stdout)]
    assert sorted(titles) == ["Cake", "Pie", "Tea"]
