"""The package's shape, as docs/architecture.md draws it: one subpackage per layer, imports that only point down
the layers, no import cycle inside softprompt/, no module over 300 lines and no function over 60, so each module
can be read top to bottom on its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import softprompt

PACKAGE = Path(softprompt.__file__).parent
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
# The layers, bottom up: a module imports from its own layer and the ones before it, never from one after.
LAYERS = (("utils",), ("data",), ("models",), ("engine",), ("prompts",), ("training",), ("toolbox",), ("cli", "serve"))


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (at the top, inside functions, or for
    type checking only: a cycle there still ties the two modules together)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name}
    return found


def test_no_import_cycle_inside_the_package():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    graph = {name: {d for d in deps if d != "softprompt"} for name, deps in graph.items()}  # __init__ re-exports
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path[path.index(dep) :], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def _layer(name: str) -> int:
    folder = name.split(".")[1]
    return next(rank for rank, folders in enumerate(LAYERS) if folder in folders)


def test_every_module_sits_in_a_layer_and_imports_only_down():
    modules = _modules()
    top = {name for name in modules if name.count(".") == 0 or name == "softprompt.__main__"}
    assert top == {"softprompt", "softprompt.__main__"}, f"modules outside a layer folder: {sorted(top)}"
    upward = [
        f"{name} imports {dep}"
        for name, path in modules.items()
        if name not in top
        for dep in _imports(name, path, set(modules))
        if dep not in top and _layer(dep) > _layer(name)
    ]
    assert not upward, upward


def test_the_architecture_page_lists_every_module_and_no_other():
    """docs/architecture.md's table names each module by its path under softprompt/, once."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\|[^|]*\| `([a-z0-9_]+/[a-z0-9_]+\.py)` \|", page, re.M)
    package = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE
                     and p.name != "__init__.py")  # fmt: skip
    assert sorted(listed) == package, (set(listed) ^ set(package))
    assert len(listed) == len(set(listed))


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, too_long
