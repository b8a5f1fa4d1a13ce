"""The house rules that keep the layers apart, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SQL_BUILDERS = {"select", "text", "insert", "update", "delete", "tuple_", "func"}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def sql_builders_used(path: Path) -> set[str]:
    """Names of SQLAlchemy's statement builders a module imports or calls through a session."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found |= {alias.name for alias in node.names} & SQL_BUILDERS
        if isinstance(node, ast.Attribute) and node.attr in ("execute", "exec_driver_sql", "get"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("session", "connection"):
                found.add(f"{owner.id}.{node.attr}")
    return found


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in python_files("datasetq", "backend")
        if not p.is_relative_to(ROOT / "datasetq" / "store")
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_sql_lives_in_the_store_layer(path):
    assert not sql_builders_used(path), f"{path.name} builds or runs SQL outside datasetq/store"


def test_the_check_above_finds_sql_where_there_is_some():
    assert {"select", "session.execute"} <= sql_builders_used(ROOT / "datasetq/store/samples.py")


def web_framework_uses(path: Path) -> set[str]:
    """Imports of fastapi or starlette, and uses of ``HTTPException``, in a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {
                a.name for a in node.names if a.name.split(".")[0] in ("fastapi", "starlette")
            }
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if (node.module or "").split(".")[0] in ("fastapi", "starlette"):
                found.add(node.module or "")
        elif isinstance(node, ast.Name) and node.id == "HTTPException":
            found.add("HTTPException")
    return found


@pytest.mark.parametrize("path", python_files("datasetq"), ids=lambda p: p.name)
def test_only_the_web_app_speaks_http(path):
    assert not web_framework_uses(path), path


def test_the_check_above_finds_http_where_there_is_some():
    assert "HTTPException" in web_framework_uses(ROOT / "backend/deps.py")


def test_importing_the_library_loads_no_web_framework():
    code = (
        "import sys, datasetq, datasetq.recorder, datasetq.store.export, datasetq.manifest\n"
        "import datasetq.integrations\n"
        "loaded = {'fastapi', 'uvicorn', 'plotly', 'starlette', 'pydantic_settings',\n"
        "          'lightning', 'transformers'} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
