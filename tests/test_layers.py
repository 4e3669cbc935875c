"""The package's layers (docs/architecture.md): imports only point down, and every package says what it holds."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "effteacher"

# Top to bottom; a room may import only rooms on a lower row (or its own).
LAYERS = [
    {"__main__"},
    {"cli"},
    {"train"},
    {"val", "predict", "labeling"},
    {"export"},
    {"options"},
    {"ssod", "losses"},
    {"models", "data"},
    {"config"},
    {"utils", "errors", "version"},
]


def _room(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imports() -> dict[tuple[str, str], str]:
    """(from room, to room) -> the first place it happens."""
    edges: dict[tuple[str, str], str] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).parts
        src = "__init__" if rel == ("__init__.py",) else _room(rel)
        for node in ast.walk(ast.parse(f.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods = [node.module] if node.module != "effteacher" else [f"effteacher.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                parts = m.split(".")
                if parts[0] == "effteacher":
                    dst = parts[1] if len(parts) > 1 else "__init__"
                    if dst != src:
                        edges.setdefault((src, dst), f"{f.relative_to(PKG.parent)}:{node.lineno}")
    return edges


def test_imports_only_point_down_the_layers():
    level = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
    rooms = {_room((p.name,)) for p in PKG.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert rooms - {"__init__"} <= set(level), f"rooms missing from LAYERS: {sorted(rooms - set(level) - {'__init__'})}"
    edges = _imports()
    bad = []
    for (a, b), where in edges.items():
        if a == "__init__":  # the package's lazy `Detector` attribute
            continue
        if b == "__init__" or level[b] < level[a] or (level[b] == level[a] and (b, a) in edges):
            bad.append(f"{a} -> {b} ({where})")
    assert not bad, "imports that run back up a layer (or loop within one):\n" + "\n".join(sorted(bad))


def test_every_package_and_module_says_what_it_holds():
    missing = [str(f.relative_to(PKG.parent)) for f in PKG.rglob("*.py")
               if not (ast.get_docstring(ast.parse(f.read_text())) or "").strip()]
    assert not missing, f"modules without a docstring: {missing}"
