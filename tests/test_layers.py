"""The apps form layers that point one way (README, Development): each imports only the apps below it,
and never from inside a function (a deferred import that hides a cycle)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. `config` (settings, URLs, ASGI) sits above them all.
LAYERS = ["core", "tenants", "agents", "conversations", "files", "dataframes", "turns"]


def imports_of(app: str):
    """(module path, line, imported app, inside a function) for every import of a Parley app in `app`."""
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        deferred = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                imported = name.split(".")[0]
                if imported in LAYERS and imported != app:
                    yield path.relative_to(ROOT), node.lineno, imported, id(node) in deferred


@pytest.mark.parametrize("app", LAYERS)
def test_an_app_imports_only_the_apps_below_it(app):
    below = set(LAYERS[: LAYERS.index(app)])
    upward = [
        f"{path}:{line} imports {imported}" for path, line, imported, _ in imports_of(app) if imported not in below
    ]
    assert not upward


@pytest.mark.parametrize("app", LAYERS)
def test_no_app_imports_another_from_inside_a_function(app):
    deferred = [f"{path}:{line} imports {imported}" for path, line, imported, inside in imports_of(app) if inside]
    assert not deferred


def test_every_app_has_its_layer():
    apps = {path.parent.name for path in ROOT.glob("*/apps.py")}
    assert apps == set(LAYERS)
