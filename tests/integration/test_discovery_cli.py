"""``pasar peers``, ``search``, ``block``, ``reports``, ``crawl`` and the store ``announce`` option, for real.

Peers run on a stopped node's data directory and through a running node
(``--no-tor``); the other verbs through one running node (test_operations.py
compares every operation on both backends). The end-to-end discovery over tor
is in test_discovery_e2e.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from .conftest import Node, make_node

PEER = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"


@pytest.fixture
def node(tmp_path):
    made = make_node(tmp_path)
    yield made
    made.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One running node shared by the tests that do not need a stopped one (each starts a node otherwise)."""
    made = make_node(tmp_path_factory.mktemp("cli-running"))
    made.start()
    yield made
    made.stop()


def _both(node: Node) -> list[str]:
    """Run the checks on the data directory first, then through the running node."""
    return ["stopped", "running"]


def test_peers_add_list_remove_on_the_data_dir_and_through_the_node(node):
    for phase in _both(node):
        if phase == "running":
            node.start()
        added = node.cli("peers", "add", f"{PEER}.onion")
        assert added.stdout == f"added peer {PEER}.onion\n"
        listed = json.loads(node.cli("peers", "list", "--json").stdout)
        assert [(p["onion"], p["source"], p["failures"], p["banned"]) for p in listed] == [(PEER, "manual", 0, False)]
        assert f"{PEER}.onion  manual" in node.cli("peers", "list").stdout
        node.cli("peers", "ban", PEER)
        assert json.loads(node.cli("peers", "list", "--json").stdout)[0]["banned"] is True
        assert "banned" in node.cli("peers", "list").stdout
        assert node.cli("peers", "remove", PEER).stdout == f"removed peer {PEER}\n"
        assert "no peers yet" in node.cli("peers", "list").stdout


def test_bad_peers_are_refused_with_the_reason(running):
    node = running
    bad = node.cli("peers", "add", "not-an-onion", check=False)
    assert bad.returncode == 1 and "onion" in bad.stderr and "Traceback" not in bad.stderr
    own = json.loads(node.cli("node", "--json").stdout)["onion"]
    mine = node.cli("peers", "add", own, check=False)  # a node is not its own peer
    assert mine.returncode == 1 and "Traceback" not in mine.stderr, mine.stderr
    missing = node.cli("peers", "remove", PEER, check=False)
    assert missing.returncode == 1 and "error" in missing.stderr


def test_block_list_and_unblock_a_store_and_a_tag(running):
    node = running
    out = node.cli("block", "add", "store", f"{PEER}.onion", "--reason", "fraud").stdout
    assert "never crawled, listed, mirrored or relayed" in out
    node.cli("block", "add", "tag", "counterfeit")
    listed = node.cli("block", "list").stdout
    assert f"store  {PEER}" in listed and "tag    counterfeit" in listed and "fraud" in listed
    node.cli("block", "remove", "store", PEER)
    node.cli("block", "remove", "tag", "counterfeit")
    assert node.cli("block", "list").stdout == "nothing is blocked\n"
    wrong = node.cli("block", "add", "store", "nonsense", check=False)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr


def test_search_of_an_empty_directory_and_hostile_queries(running):
    node = running
    for query in ('"', "NEAR(", "a*", "-x", 'tea "unbalanced', "OR AND NOT", "title:x"):
        result = node.cli("search", "--", query)  # "--": a query may start with "-"
        assert result.stdout == "0 results\n", (query, result.stdout)
    page = json.loads(node.cli("search", "--json", "tea").stdout)
    assert page == {"total": 0, "results": []}
    bad = node.cli("search", "tea", "--ships-to", "Germany", check=False)
    assert bad.returncode == 1 and "ships_to" in bad.stderr


def test_crawl_needs_the_running_node_with_tor(node):
    stopped = node.cli("crawl", check=False)
    assert stopped.returncode == 1 and "start it with `pasar run`" in stopped.stderr
    node.start()
    no_tor = node.cli("crawl", check=False)
    assert no_tor.returncode == 1 and "without tor" in no_tor.stderr
    assert "ERROR" not in node.read_log()  # a part that is off is not an error of the node


def test_reports_start_empty(running):
    assert running.cli("reports").stdout == "no reports\n"
    assert json.loads(running.cli("reports", "--json").stdout) == []


def test_a_store_can_be_kept_out_of_gossip(running):
    node = running
    onion = node.cli("store", "create", "Quiet").stdout.strip().removesuffix(".onion")
    listed = json.loads(node.cli("store", "list", "--json").stdout)
    assert [s["announce"] for s in listed] == [True]

    req = urllib.request.Request(
        f"{node.admin_url}/api/v1/stores/{onion}",
        data=json.dumps({"announce": False, "description": "by invitation"}).encode(),
        method="PATCH",
        headers={**node.auth, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        store = json.loads(resp.read())
    assert store["announce"] is False and store["profile"]["description"] == "by invitation"
    assert store["onion_service"]["announce"] is False
    bad = urllib.request.Request(
        f"{node.admin_url}/api/v1/stores/{onion}",
        data=json.dumps({"announce": "maybe", "description": "changed"}).encode(),
        method="PATCH",
        headers={**node.auth, "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(bad, timeout=10)
    with exc.value:  # its body holds the connection
        assert exc.value.code == 422
    again = next(s for s in json.loads(node.cli("store", "list", "--json").stdout) if s["onion"] == onion)
    assert again["announce"] is False  # nothing of the refused request was written
    get = urllib.request.Request(f"{node.admin_url}/api/v1/stores/{onion}", headers=node.auth)
    with urllib.request.urlopen(get, timeout=10) as resp:
        assert json.loads(resp.read())["profile"]["description"] == "by invitation"
