"""Imports point only downward (../shared/STYLE.md, docs/design.md), checked with ``ast``.

Every module of ``node/`` gets the rank of the longest prefix in ``RANKS``
that names it; a module no prefix names fails (add its package to
``RANKS``). An import of another ``node`` module must point to a lower rank
or stay inside its own package. ``from X import y`` counts as ``X.y`` when
``X.y`` is a module, and relative imports are resolved, so ``from .. import
adapters`` in ``node/market`` is seen as ``node.adapters``. Feature
packages reach adapters only through ``node.core.ports`` Protocols. Third-party
libraries are allow-listed per package; stdlib modules are allowed except the
blocking and network ones in ``BLOCKING_STDLIB``, which belong to adapters.
Imports under ``if TYPE_CHECKING:`` and inside functions are checked the same
way: an annotation naming an adapter class still ties the feature to it.

Each rule is shown to bite by a test that plants the violation.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"

# Low to high. "node" names node/__init__.py only (it holds __version__): Python
# runs it before any node.* module, so anything it imported every module would
# import; it ranks lowest and may import nothing of node. Packages at one rank
# (discovery, payments) do not import each other: give them two ranks if one
# comes to need the other.
RANKS: dict[str, int] = {
    "node": 0,
    "node.core": 1,
    "node.adapters": 2,
    "node.hosting": 3,
    "node.market": 4,
    "node.discovery": 5,
    "node.messaging": 5,
    "node.payments": 6,  # the vendor's side of node orders sends through node.messaging
    "node.purchases": 7,  # the buyer's node: checks escrows and payouts with node.payments' pure code
    "node.operations": 8,
    "node.web": 9,
    "node.app": 10,
    # The private Tor network tool (`pasar testnet`, integration tests and
    # benches). It imports only core and adapters (ONLY_IMPORTS) and only the
    # CLI imports it, so it ranks just below cli: nothing in the running node
    # (app, web, features) can import a test tool.
    "node.testnet": 11,
    # `pasar demo`: real `pasar` processes, a regtest bitcoind and the private Tor network on loopback,
    # driven through their admin API; like testnet, only the CLI imports it.
    "node.demo": 12,
    "node.cli": 13,
    "node.__main__": 14,
}

# Domain code receives adapters typed by node.core.ports Protocols (rule 2: it never constructs one).
FEATURES = (
    "node.hosting",
    "node.market",
    "node.discovery",
    "node.messaging",
    "node.payments",
    "node.purchases",
    "node.operations",
)
# Neither features nor web/ import adapters: only the app (which builds them) and the CLI do.
NO_ADAPTERS = (*FEATURES, "node.web")
ONLY_IMPORTS = {
    "node.testnet": ("node.core", "node.adapters"),
    "node.demo": ("node.core", "node.adapters", "node.testnet"),
}

# Exactly the third-party libraries each package uses (test_allow_lists_are_exact keeps them so).
THIRD_PARTY: dict[str, set[str]] = {
    "node": set(),
    "node.core": {"nacl"},
    "node.adapters": {"aiohttp", "aiohttp_socks", "bitcoinrpc", "psycopg", "stem", "tinydb", "yarl"},
    "node.hosting": set(),
    "node.market": {"PIL"},
    "node.discovery": set(),
    "node.messaging": {"nacl"},
    "node.payments": {"nacl"},
    "node.purchases": set(),
    "node.operations": set(),
    "node.web": {
        "aiohttp",
        "aiohttp_jinja2",
        "jinja2",
        "markdown_it",
        "markupsafe",
        "multidict",
        "prometheus_client",
        "segno",
    },
    "node.app": {"aiohttp", "prometheus_client"},
    "node.testnet": set(),
    "node.demo": {"PIL"},
    "node.cli": {"aiohttp"},
    "node.__main__": set(),
}

# Stdlib modules that block the event loop or reach outside the process; in
# domain layers they would bypass the adapters. Network I/O outside
# adapters/net.py and adapters/tor.py could leave the node without going
# through tor (a leak of the operator's address); threads and processes are
# how adapters keep blocking work off the loop (rule 3); storage engines and
# file locks belong to the storage adapters. app, cli and testnet wire
# processes and sockets together and may use them.
BLOCKING_STDLIB = {
    *("socket", "ssl", "select", "selectors", "socketserver", "asyncio.subprocess"),
    *("http.client", "http.server", "urllib.request", "ftplib", "smtplib", "imaplib", "poplib", "xmlrpc"),
    *("subprocess", "multiprocessing", "threading", "concurrent.futures", "signal", "pty"),
    *("sqlite3", "dbm", "shelve", "fcntl"),
}
DOMAIN = ("node.core", *FEATURES, "node.web")
# The same reach through asyncio needs no import of its own: ``asyncio.open_connection(...)``.
BLOCKING_CALLS = {
    *("open_connection", "open_unix_connection", "start_server", "start_unix_server", "getaddrinfo"),
    *("create_connection", "create_unix_connection", "create_server", "create_datagram_endpoint"),
    *("create_subprocess_exec", "create_subprocess_shell"),
}


@dataclass(frozen=True)
class Import:
    line: int
    name: str  # resolved, e.g. "node.adapters.store", "aiohttp", "http.client"


def rank_key(module: str) -> str | None:
    """The RANKS entry that names ``module``; "node" names only node itself."""
    if module == "node":
        return "node"
    keys = [k for k in RANKS if k != "node" and (module == k or module.startswith(k + "."))]
    return max(keys, key=len, default=None)


def is_node_module(name: str, root: Path = NODE) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _base(module: str, is_package: bool, level: int, target: str | None) -> str:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*parts, *(target.split(".") if target else [])])


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (runtime, TYPE_CHECKING or inside a function), resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node.level, node.module) if node.level else (node.module or "")
            found.append(Import(node.lineno, base))
            for alias in node.names:  # from X import y -> X.y when X.y is a module
                full = f"{base}.{alias.name}"
                if base.split(".")[0] != "node" or is_node_module(full):
                    found.append(Import(node.lineno, full))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _node_violation(key: str, target: str) -> str | None:
    target_key = rank_key(target)
    if target_key is None:
        return f"imports {target}, which has no rank"
    if key in ONLY_IMPORTS and target_key != key and target_key not in ONLY_IMPORTS[key]:
        return f"imports {target}: {key} may import only {', '.join(ONLY_IMPORTS[key])}"
    if key in NO_ADAPTERS and target_key == "node.adapters":
        return f"imports {target}: features and web/ get adapters through node.core.ports Protocols"
    if target_key != key and RANKS[target_key] >= RANKS[key]:
        return f"imports {target} ({target_key}, rank {RANKS[target_key]}), not below {key} (rank {RANKS[key]})"
    return None


def _outside_violation(key: str, name: str) -> str | None:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names:
        if key in DOMAIN and any(_within(name, b) for b in BLOCKING_STDLIB):
            return f"imports {name}: blocking or network stdlib belongs in node.adapters"
        return None
    if top not in THIRD_PARTY[key]:
        return f"imports {top}: not a third-party library allowed in {key} (THIRD_PARTY)"
    return None


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What is wrong with the imports of ``module`` (whose text is ``source``); empty when all is well."""
    key = rank_key(module)
    if key is None:
        return [f"{module} has no rank: add its package to RANKS in tests/unit/test_layers.py"]
    found = []
    for imp in imports_of(source, module, is_package=is_package):
        if _within(imp.name, "node"):
            problem = _node_violation(key, imp.name)
        else:
            problem = _outside_violation(key, imp.name)
        if problem:
            found.append(f"{module}:{imp.line} {problem}")
    return found + _call_violations(source, module, key)


def _call_violations(source: str, module: str, key: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name in ("__import__", "import_module"):  # a name computed at run time cannot be checked
            found.append(f"{module}:{node.lineno} dynamic import: the layer test cannot check it")
        elif key in DOMAIN and name in BLOCKING_CALLS:
            found.append(f"{module}:{node.lineno} calls {name}: network and processes belong in node.adapters")
    return found


def modules() -> list[tuple[Path, str]]:
    found = []
    for path in sorted(NODE.rglob("*.py")):
        name = ".".join(path.relative_to(NODE.parent).with_suffix("").parts).removesuffix(".__init__")
        found.append((path, name))
    return found


# -- the tree as it is ----------------------------------------------------------
@pytest.mark.parametrize(("path", "module"), modules(), ids=[m for _, m in modules()])
def test_module_imports_respect_layers(path, module):
    problems = violations(path.read_text(), module, is_package=path.name == "__init__.py")
    assert not problems, "\n".join(problems)


def test_every_package_has_a_rank_and_an_allow_list():
    assert set(THIRD_PARTY) == set(RANKS)
    assert all(rank_key(k) == k for k in (*FEATURES, *ONLY_IMPORTS, *DOMAIN))
    for entry in NODE.iterdir():  # each top-level folder and module of node/
        if entry.name.startswith(("_", ".")) and entry.name != "__main__.py":
            continue
        if entry.suffix == ".py" or (entry / "__init__.py").is_file():
            assert rank_key(f"node.{entry.stem}") is not None, f"node/{entry.name} has no rank"


def test_allow_lists_are_exact():
    """A library allowed to a package that none of its modules imports is stale: remove it."""
    used: dict[str, set[str]] = {k: set() for k in RANKS}
    for path, module in modules():
        key = rank_key(module)
        assert key is not None
        for imp in imports_of(path.read_text(), module, is_package=path.name == "__init__.py"):
            top = imp.name.split(".")[0]
            if top != "node" and top not in sys.stdlib_module_names:
                used[key].add(top)
    stale = {k: sorted(THIRD_PARTY[k] - used[k]) for k in RANKS if THIRD_PARTY[k] - used[k]}
    assert not stale, f"allowed but not imported: {stale}"


# -- the checker reads imports right ---------------------------------------------
def test_imports_are_resolved_to_modules():
    source = """
from __future__ import annotations
import json, os.path
from . import listings
from .catalog import browse
from .. import adapters
from ..core import errors as e
from ..core.errors import NotFound
from node import web
from PIL import Image
from http import client
def later():
    import node.app
"""
    names = {i.name for i in imports_of(source, "node.market.fake")}
    assert {
        "json",
        "os.path",
        "node.market.listings",
        "node.market.catalog",
        "node.adapters",
        "node.core.errors",
        "node.web",
        "PIL",
        "http.client",
        "node.app",
    } <= names
    assert "node.core.errors.NotFound" not in names and "node.market.catalog.browse" not in names


def test_relative_imports_in_a_package_init_resolve_from_the_package():
    names = {i.name for i in imports_of("from .main import main\nfrom .. import core", "node.cli", is_package=True)}
    assert names >= {"node.cli.main", "node.core"}


def test_rules_see_imports():
    """Was: passed if either of two names was found. Now each name must be found, resolved to its module."""
    found = {i.name for i in imports_of((NODE / "market" / "market.py").read_text(), "node.market.market")}
    assert {"node.market.catalog", "node.core.crypto", "node.core.ports", "node.hosting.client_auth"} <= found
    found = {i.name for i in imports_of((NODE / "market" / "listings.py").read_text(), "node.market.listings")}
    assert "node.core.errors" in found and "node.core.fields" in found


# -- every hole is closed: a planted violation is reported ----------------------
def planted(source: str, module: str = "node.market.fake") -> str:
    return "\n".join(violations(source, module))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from node import web\n", "imports node.web"),
        ("from .. import web\n", "imports node.web"),
        ("from .. import adapters\n", "get adapters through node.core.ports"),
        ("from ..adapters import store\n", "get adapters through node.core.ports"),
        ("import node.app\n", "imports node.app"),
        ("from ..hosting import nothing_here\n", ""),  # hosting ranks below market: allowed
        ("from ..gizmo import thing\n", "node.gizmo, which has no rank"),
        ("import aiohttp_socks\n", "aiohttp_socks: not a third-party library allowed in node.market"),
        ("from aiohttp import web\n", "aiohttp: not a third-party library allowed in node.market"),
        ("import sqlite3\n", "sqlite3: blocking or network stdlib"),
        ("import socket\n", "socket: blocking or network stdlib"),
        ("from concurrent import futures\n", "concurrent.futures: blocking or network stdlib"),
        ("from http import client\n", "http.client: blocking or network stdlib"),
        ("import importlib\nimportlib.import_module('node.web')\n", "dynamic import"),
    ],
)
def test_a_planted_violation_in_market_is_reported(source, expected):
    found = planted(source)
    if expected:
        assert expected in found
    else:
        assert found == ""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("if TYPE_CHECKING:\n    from ..web.appkeys import MARKET\n", "imports node.web.appkeys"),
        ("if TYPE_CHECKING:\n    from ..adapters.store import Storage\n", "get adapters through node.core.ports"),
        ("import typing\nif typing.TYPE_CHECKING:\n    from node.cli import main\n", "imports node.cli"),
        ("def f():\n    from ..app import serve\n", "imports node.app"),
    ],
)
def test_type_checking_and_function_imports_are_checked_the_same_way(source, expected):
    assert expected in planted(source)


def test_an_unranked_module_is_reported():
    assert "node.gizmo has no rank" in planted("import json\n", "node.gizmo")
    assert "node.gizmo.parts has no rank" in planted("import json\n", "node.gizmo.parts")


def test_the_package_root_ranks_lowest_and_imports_nothing_of_node():
    assert planted("from .core import errors\n", "node") != ""
    assert planted("from node import __version__\n", "node.core.fake") == ""


def test_sideways_and_tool_imports_are_reported():
    assert "not below node.discovery" in planted("from ..payments import escrow\n", "node.discovery.fake")
    assert "not below node.app" in planted("from .testnet import TestNet\n", "node.app")
    assert "may import only node.core, node.adapters" in planted("from ..market import market\n", "node.testnet.x")
    assert planted("from ..testnet import TestNet\n", "node.cli.fake") == ""


def test_web_gets_no_adapter_the_app_does():
    assert "get adapters through node.core.ports" in planted("from ..adapters.store import Storage\n", "node.web.fake")
    assert "get adapters through node.core.ports" in planted("from .. import adapters\n", "node.web.fake")
    assert planted("from .adapters.store import Storage\n", "node.app") == ""


def test_web_and_core_get_no_blocking_stdlib_but_adapters_and_app_do():
    assert "subprocess" in planted("import subprocess\n", "node.web.fake")
    assert "threading" in planted("import threading\n", "node.core.fake")
    assert planted("import sqlite3, socket, subprocess\n", "node.adapters.fake") == ""
    assert planted("import socket\n", "node.app") == ""
    assert "tinydb" in planted("import tinydb\n", "node.web.fake")
    assert "nacl" in planted("import nacl\n", "node.market.fake")


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\nasync def f():\n    await asyncio.open_connection('example.org', 80)\n",
        "import asyncio\nasync def f():\n    await asyncio.create_subprocess_exec('tor')\n",
        "async def f(loop):\n    await loop.create_connection(object, 'example.org', 80)\n",
    ],
)
def test_network_and_processes_through_asyncio_are_reported(source):
    assert "belong in node.adapters" in planted(source)
    assert planted(source, "node.adapters.fake") == ""
