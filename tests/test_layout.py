"""The package's imports point one way (README, "How the code is organised").

Read with `ast` from the source files, imports inside functions included, so a cycle dodged by a
late import still counts.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "extralt_dagster"
#: Plain layers: no Dagster in them.
PLAIN = ("extralt_dagster.api", "extralt_dagster.warehouse")
#: The only modules that may import the emulator, besides the emulator itself and the tests.
EMULATOR_USERS = ("extralt_dagster.demo", "extralt_dagster.cli")
EMULATOR = "extralt_dagster.emulator"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute, at any depth of the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            # `from . import x` and `from .pkg import mod` name modules too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imported in MODULES.items():
        targets = {m for m in imported if m in MODULES and m != module}
        # A package's __init__ re-exporting its own modules is not a dependency of theirs.
        edges[module] = {t for t in targets if not _within(t, module)}
    return edges


def test_no_module_imports_one_that_imports_it_back():
    edges = _internal_edges()
    cycles = []
    for start in edges:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    # A package __init__ that imports its modules and a module that imports a sibling through
    # the package would both show here: neither is allowed.
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


@pytest.mark.parametrize("layer", PLAIN)
def test_the_plain_layers_import_no_dagster(layer: str):
    assert any(_within(m, layer) for m in MODULES), f"{layer} does not exist"
    offenders = {
        module: sorted(m for m in imported if m.split(".")[0].startswith("dagster"))
        for module, imported in MODULES.items()
        if _within(module, layer)
    }
    assert not {m: i for m, i in offenders.items() if i}


@pytest.mark.parametrize("layer", PLAIN)
def test_the_plain_layers_import_nothing_above_them(layer: str):
    allowed = (*PLAIN, "extralt_dagster.naming")
    offenders = {
        module: sorted(
            m
            for m in imported
            if _within(m, "extralt_dagster") and m != "extralt_dagster"
            if not any(_within(m, a) for a in allowed)
        )
        for module, imported in MODULES.items()
        if _within(module, layer)
    }
    assert not {m: i for m, i in offenders.items() if i}


def test_only_the_demo_and_the_cli_import_the_emulator():
    offenders = sorted(
        module
        for module, imported in MODULES.items()
        if not _within(module, EMULATOR) and module not in EMULATOR_USERS
        if any(_within(m, EMULATOR) for m in imported)
    )
    assert offenders == []
