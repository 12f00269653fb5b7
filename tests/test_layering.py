"""The layering of the code: a module imports only its own layer and those below it, and no
modules import each other in a circle. Imports are read with ast, so an import inside a function
counts as much as one at the top of the file."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# From the bottom up. A package is in the layer of its longest listed prefix; the scripts (the
# top-level .py files, cli.py among them, and the demo run as `python -m demo`) are "scripts".
LAYERS = [
    ("config",),
    ("common",),
    ("data.datasets",),
    ("data.text", "data.neighbors", "data.images"),
    ("losses",),
    ("models",),
    ("evaluation",),
    ("training",),
    ("tuning",),
    ("scripts", "demo"),
    ("benchmarks",),
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}
SKIP = (".venv", "tests", "docs", "runs")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or rel.parts[0].startswith("."):
            continue
        found[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LEVEL:
            return ".".join(parts[:n])
    return "scripts" if len(parts) == 1 else parts[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `module` imports (a `from package import module` names the module)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            # The longest prefix that is a project module: `import data.text.corpus` is that file.
            hit = next((".".join(parts[:n]) for n in range(len(parts), 0, -1)
                        if ".".join(parts[:n]) in known), None)
            if hit is not None and hit != module:
                out.add(hit)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_package_has_a_layer():
    unplaced = sorted({layer(m) for m in modules()} - set(LEVEL))
    assert not unplaced, f"packages without a layer in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} ({layer(m)}) imports {t} ({layer(t)})"
              for m, targets in graph().items() for t in sorted(targets)
              if LEVEL.get(layer(t), -1) > LEVEL.get(layer(m), -1)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "\n".join(circles)


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The walk itself: a planted upward import and a planted circle are both found."""
    for rel, text in {"common/__init__.py": "", "common/a.py": "from models import b\n",
                      "models/__init__.py": "", "models/b.py": "from . import c\n",
                      "models/c.py": "import models.b\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    edges = graph()
    assert edges["common.a"] == {"models.b"} and edges["models.b"] == {"models.c"}
    assert edges["models.c"] == {"models.b"}
    for check in (test_no_module_imports_a_higher_layer, test_no_import_circle):
        try:
            check()
        except AssertionError as e:
            assert "models" in str(e)
        else:
            raise AssertionError(f"{check.__name__} missed the planted problem")
