"""The way down is one-directional: no module of dit_sparse imports from a higher floor of the architecture's map.

Every import in the package (module level and inside functions, relative or absolute) is resolved to the
top-level room it reaches (``dit_sparse.methods.radial`` -> ``methods``) and checked against the floor order
below, from the top down. Imports within one room are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dit_sparse"

# Floors of ../shared/ARCHITECTURE.md's map, top first: a room may import rooms on its floor or below.
FLOORS: list[tuple[str, ...]] = [
    ("cli",),
    ("__init__",),
    ("calibration",),
    ("bench",),
    ("generation", "pipelines"),
    ("embedded",),
    ("integration",),
    ("config",),
    ("methods",),
    ("plan",),
    ("scoring", "attention"),
    ("kernels",),
    ("levels", "visualize", "patterns", "heads", "cost"),
    ("evaluation", "utils", "mask", "layout", "_version", "assets"),
]
FLOOR = {room: len(FLOORS) - i for i, rooms in enumerate(FLOORS) for room in rooms}


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_rooms(path: Path) -> list[tuple[int, str]]:
    """(line, room) for every dit_sparse room that ``path`` imports."""
    package_parts = list(path.relative_to(PACKAGE.parent).parts[:-1])  # the package the file is in
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                module = base + (node.module.split(".") if node.module else [])
                # "from . import x" names submodules
                targets = [[*module, alias.name] for alias in node.names] if not node.module else [module]
            else:
                targets = [node.module.split(".")] if node.module else []
        for target in targets:
            if target[0] == "dit_sparse" and len(target) > 1:
                found.append((node.lineno, target[1]))
    return found


def test_every_room_has_a_floor():
    rooms = {room_of(p) for p in PACKAGE.rglob("*.py")}
    assert rooms - set(FLOOR) == set(), "new rooms: put them on a floor in tests/test_floors.py"


def test_no_import_runs_up_the_floors():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = room_of(path)
        for line, target in imported_rooms(path):
            if target != source and target in FLOOR and FLOOR[target] > FLOOR[source]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports {target}")
    assert upward == []


def test_the_walk_sees_imports():
    # the resolver reaches absolute, relative, nested and "from . import" imports
    rooms = {room for _, room in imported_rooms(PACKAGE / "cli" / "generate.py")}
    assert {"config", "generation"} <= rooms
    rooms = {room for _, room in imported_rooms(PACKAGE / "__init__.py")}
    assert {"calibration", "patterns", "attention", "mask"} <= rooms
