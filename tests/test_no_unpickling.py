"""No code that a request or a weights file reaches can unpickle or evaluate: a scan of the
library's and the HTTP function's sources."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT


UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
              ("marshal", "load"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
              ("cloudpickle", "loads"), ("shelve", "open"), ("joblib", "load"), ("yaml", "load"),
              ("yaml", "unsafe_load")}


def calls(tree):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            yield node.func.value.id, node.func.attr, node


def keyword(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return "missing"


SOURCES = sorted((REPO_ROOT / "nst_jax").glob("*.py")) + sorted((REPO_ROOT / "functions").glob("*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_unpickling_where_requests_or_weights_reach(source: Path):
    tree = ast.parse(source.read_text(), str(source))
    problems = []
    for module, attr, node in calls(tree):
        where = f"{source.name}:{node.lineno}"
        if (module, attr) in UNPICKLERS:
            problems.append(f"{where}: {module}.{attr}")
        if module in ("np", "numpy") and attr == "load" and keyword(node, "allow_pickle") is not False:
            problems.append(f"{where}: np.load without allow_pickle=False")
        if module == "torch" and attr == "load" and keyword(node, "weights_only") is not True:
            problems.append(f"{where}: torch.load without weights_only=True")
        if attr in ("eval", "exec") or (module == "builtins" and attr in ("eval", "exec")):
            problems.append(f"{where}: {module}.{attr}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            problems.append(f"{source.name}:{node.lineno}: {node.func.id}")
    assert not problems
