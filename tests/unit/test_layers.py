"""Imports point only downward (../shared/STYLE.md): checked with ast."""

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
BLOCKING = {"tinydb", "stem", "bitcoinrpc"}
RULES = {
    # module prefix: forbidden import prefixes
    "node.errors": {"node.", "aiohttp", *BLOCKING},
    "node.onion": {"node.adapters", "node.market", "node.web", "node.app", "node.cli", "aiohttp", *BLOCKING},
    "node.crypto": {"node.adapters", "node.market", "node.web", "node.app", "node.cli", "aiohttp", *BLOCKING},
    "node.envelope": {"node.adapters", "node.market", "node.web", "node.app", "node.cli", "aiohttp", *BLOCKING},
    "node.config": {"node.adapters", "node.market", "node.web", "node.app", "node.cli", "aiohttp", *BLOCKING},
    "node.fsutil": {"node.adapters", "node.market", "node.web", "node.app", "node.cli", "aiohttp", *BLOCKING},
    "node.adapters": {"node.market", "node.web", "node.app", "node.cli"},
    "node.market": {
        "aiohttp",
        "jinja2",
        "aiohttp_jinja2",
        *BLOCKING,
        "node.adapters",
        "node.web",
        "node.app",
        "node.cli",
    },
    "node.publish": {"aiohttp", "jinja2", *BLOCKING, "node.adapters", "node.web", "node.app", "node.cli"},
    "node.web": {*BLOCKING, "node.app", "node.cli", "node.adapters"},
    "node.app": {"node.cli", *BLOCKING},
}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of nodes inside ``if TYPE_CHECKING:`` (annotations, not runtime imports)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (
                    module.split(".")[: -node.level]
                    if path.name != "__init__.py"
                    else module.split(".")[: len(module.split(".")) - node.level + 1]
                )
                found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
            else:
                found.add(node.module or "")
    return found


def modules():
    for path in sorted(NODE.rglob("*.py")):
        rel = path.relative_to(NODE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield path, name


@pytest.mark.parametrize("path,module", list(modules()), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_module_imports_respect_layers(path, module):
    forbidden = next(
        (rules for prefix, rules in RULES.items() if module == prefix or module.startswith(prefix + ".")), set()
    )
    bad = sorted(
        i
        for i in imports_of(path, module)
        if any(i == f or i.startswith(f if f.endswith(".") else f + ".") or i == f.rstrip(".") for f in forbidden)
    )
    assert not bad, f"{module} imports {bad}"


def test_type_checking_imports_are_not_runtime_imports():
    found = imports_of(NODE / "market" / "service.py", "node.market.service")
    assert "node.adapters.store" not in found


def test_rules_see_imports():
    found = imports_of(NODE / "market" / "service.py", "node.market.service")
    assert "node.market.catalog" in found or "node.market" in found
    assert "node.crypto" in found
