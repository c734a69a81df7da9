"""The arrows of docs/architecture.md, read from the import graph (every import, at the top of a module or inside a
function): the face reads the services, a service never imports the face, the engine never imports a service, and
net imports nothing of sockhop but its errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

SRC = ROOT / "src" / "sockhop"
FACE = ("sockhop.cli", "sockhop.up", "sockhop.config", "sockhop.serving", "sockhop.services", "sockhop.process")
SERVICES = ("sockhop.echo", "sockhop.web", "sockhop.dns", "sockhop.mail", "sockhop.dashboard")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every sockhop module ``path`` imports, wherever the import stands."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(text: str, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "sockhop" or name.startswith("sockhop.")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


GRAPH = {module_name(path): imports(path) for path in sorted(SRC.rglob("*.py"))}


def offending(sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if within(module, sources)
        for name in names
        if within(name, targets)
    )


def test_the_graph_is_read():
    assert "sockhop.web.service" in GRAPH and "sockhop.service" in GRAPH["sockhop.web.service"]
    assert "sockhop.service" in GRAPH["sockhop.services"]


def test_no_service_imports_the_face():
    assert offending(SERVICES, FACE) == []


def test_the_engine_imports_no_service_and_not_the_face():
    assert offending(("sockhop.engine",), SERVICES + FACE) == []


def test_net_imports_only_net_and_errors():
    assert offending(("sockhop.net",), ("sockhop.engine", "sockhop.service", *SERVICES, *FACE)) == []


@pytest.mark.parametrize("module", ["sockhop.service", "sockhop.options", "sockhop.errors", "sockhop.console"])
def test_what_services_share_with_the_face_imports_no_face(module):
    assert not [name for name in GRAPH[module] if within(name, FACE + SERVICES)]


def test_the_check_would_catch_a_service_importing_the_face():
    """The test can fail: a service module with an import of the command line, even inside a function, is named."""
    GRAPH["sockhop.web.example"] = imports_in("def f():\n    from ..cli import main\n", "sockhop.web")
    try:
        assert offending(SERVICES, FACE) == ["sockhop.web.example imports sockhop.cli", "sockhop.web.example imports "
                                             "sockhop.cli.main"]  # fmt: skip
    finally:
        del GRAPH["sockhop.web.example"]
