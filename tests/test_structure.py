"""The shape of the code: layers point one way, and no function is too long to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lab"
MAX_FUNCTION_LINES = 120  # a function's code, its docstring aside


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for p in (LAB.parent / rel.with_suffix(".py"), LAB.parent / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-local imports included)."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from lab.x import y` may import module lab.x.y
    return out


def reachable(start: str) -> set[str]:
    """Modules reached from ``start`` by following imports (lab modules are followed, with their packages)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not name.startswith("lab"):
            continue
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))  # importing a.b.c runs a and a.b
        path = _module_file(name)
        if path is not None:
            todo.extend(_imports(path, name) - seen)
    return {m for m in seen if m.startswith("lab") and _module_file(m) is not None} | {
        m.split(".")[0] for m in seen if not m.startswith("lab")}


def test_the_trainer_reaches_neither_the_fits_nor_pandas():
    mods = reachable("lab.train")
    bad = sorted(m for m in mods if m.startswith(("lab.fit", "lab.results", "lab.recipe.build", "lab.demo")))
    assert not bad, f"lab.train reaches {bad}"
    assert "pandas" not in mods
    assert {"lab.recipe.format", "lab.backtest"} <= mods  # what it does need: the format and the back-test


def test_the_recipe_format_reaches_neither_the_fits_nor_pandas():
    mods = reachable("lab.recipe.format")
    assert not [m for m in mods if m.startswith(("lab.fit", "lab.results", "lab.recipe.build"))]
    assert "pandas" not in mods


def test_the_walk_sees_function_local_imports():
    assert "lab.fit" in reachable("lab.recipe.build") and "pandas" in reachable("lab.recipe.build")


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(LAB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                doc = body[0] if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str) else None
                lines = node.end_lineno - node.lineno + 1 - ((doc.end_lineno - doc.lineno + 1) if doc else 0)
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(LAB.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
