"""The house drawn from its imports: which package of stream_processor imports which, whether
any import runs back up the layers, and whether any cycle exists.

`python -m harness.layers` prints the arrows between packages and the count of those that
run back up; tests/unit/test_layers.py holds the rule. Only imports that run when a module
is loaded count (those under `if TYPE_CHECKING:` do not).

The layers, bottom first (a package may import its own layer's leaves and any below it):
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

PACKAGE = "stream_processor"
LAYERS: dict[str, int] = {
    "redaction": 0,  # credentials out of whatever is shown: a leaf every layer may use
    "core": 0,  # pure: windows, batch policy, retries, outcomes, the owner; imports no engine or transport
    "protocol": 1,  # the vocabulary and wire format clients and server share (events are core's records)
    "engine": 2,
    "output": 2,
    "sources": 2,
    "observe": 2,
    "serving": 3,  # may read observe's histogram and page assets
    "tasks": 3,  # the public path of the Celery app and the reference task
    "run": 4,
    "cli": 5,
    "__init__": 6,  # the package's own public names
    "__main__": 6,
}
__doc__ += "\n".join(f"- {rank}: {name}" for name, rank in sorted(LAYERS.items(), key=lambda item: item[1]))


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_at_load(path: Path) -> Iterator[str]:
    """Modules `path` imports when loaded (skipping `if TYPE_CHECKING:` blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def group_of_current(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def package_arrows(root: Path, group_of: Callable[[str], str | None] = group_of_current) -> dict[tuple[str, str], int]:
    """(importer's package, imported package) -> how many module imports make that arrow."""
    known = {name for name, _ in modules(root)}
    arrows: dict[tuple[str, str], int] = defaultdict(int)
    for name, path in modules(root):
        source = group_of(name)
        targets = {target for target in imports_at_load(path) if target in known and target != name}
        for target in targets:
            destination = group_of(target)
            if source and destination and source != destination:
                arrows[source, destination] += 1
    return dict(arrows)


def upward(arrows: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """The arrows that run back up: to a package on the same layer or a higher one (or to
    one no layer names). Every other arrow runs down."""
    return {
        (source, destination): count
        for (source, destination), count in arrows.items()
        if LAYERS.get(source, -1) <= LAYERS.get(destination, 99)
    }


def cycles(arrows: dict[tuple[str, str], int]) -> list[list[str]]:
    """Every cycle among the packages (each found once, from its smallest name)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, destination in arrows:
        graph[source].add(destination)
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.append([*path, start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    arrows = package_arrows(root)
    for (source, destination), count in sorted(arrows.items()):
        print(f"{source:>10} -> {destination:<10} {count}")
    up = upward(arrows)
    print(f"arrows running back up: {sum(up.values())} imports over {len(up)} package pairs {sorted(up)}")
    print(f"cycles among packages: {cycles(arrows) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
