"""The package's shape: no import circle, one owner of the run directory's file names, light identity modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jumplora.rundir.layout as layout

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "jumplora"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> list[str]:
    """Every module an import statement of the file names, at module level or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it makes Python execute: each one named, and the packages above
    it (their __init__ runs first), except the importer's own packages (already running)."""
    graph = {}
    for name, path in MODULES.items():
        parts = name.split(".")
        own = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        targets = set()
        for imported in _imports(path):
            pieces = imported.split(".")
            for i in range(1, len(pieces) + 1):
                candidate = ".".join(pieces[:i])
                if candidate in MODULES and candidate not in own:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_acyclic_lazy_imports_included():
    graph = import_graph()
    assert {"jumplora.rundir", "jumplora.analysis.groups"} <= graph["jumplora.analysis.report"]
    assert "jumplora.rundir" in graph["jumplora.commands.common"]  # a function-level import counts too
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _path_parts(path: Path) -> list[tuple[int, str]]:
    """The strings a module joins onto a path (`something / "tasks"`)."""
    return [(node.lineno, side.value) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            for side in (node.left, node.right) if isinstance(side, ast.Constant) and isinstance(side.value, str)]


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings (messages, paths, f-string parts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_analysis_module_names_a_run_directory_file():
    files = [layout.CONFIG, layout.ENVIRONMENT, layout.DATA, layout.STATE, layout.METRICS, layout.LOSSES,
             layout.ACCURACY, layout.ACCURACY_RANK]
    folders = [layout.TASKS, layout.UPDATES, layout.SUPPORTS, layout.METHOD_STATE]
    suffixes = (".json", ".jsonl", ".yaml", ".safetensors", ".pt")  # what only run directories hold here
    found = []
    for path in sorted((PACKAGE / "analysis").glob("*.py")):
        for line, text in _code_strings(path):
            if any(name in text for name in files) or any(f"{f}/" in text for f in folders) or text.endswith(suffixes):
                found.append(f"{path.name}:{line}: {text!r}")
        found += [f"{path.name}:{line}: / {text!r}" for line, text in _path_parts(path) if text in files + folders]
    assert not found, "\n".join(found)


def test_method_identity_and_the_configuration_need_no_torch():
    code = ("import sys, jumplora.method_names, jumplora.config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'jumplora.methods' not in sys.modules, 'the method registry imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
