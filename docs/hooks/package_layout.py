"""MkDocs hook: the module layout, generated from each module's own docstring at build time.

`docs/architecture.md` holds the placeholder `<!-- package-layout -->`. Modules are read
with `ast`, not imported, so the table follows every move and rename and costs nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PLACEHOLDER = "<!-- package-layout -->"
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "stream_processor"
# Bottom layer first; a package not listed here still appears, after these.
ORDER = ["core", "protocol", "engine", "output", "sources", "observe", "serving", "run", "cli"]

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_SPECIAL = re.compile(r"([\\*_\[\]|])")


def _text(value: str) -> str:
    """Docstring text as one Markdown table cell: `code spans` kept, the rest literal."""
    parts = _CODE_SPAN.split(" ".join(value.split()))
    out = []
    for part in parts:
        if part.startswith("`"):
            out.append(part.replace("|", "\\|"))
        else:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(_SPECIAL.sub(r"\\\1", part))
    return "".join(out)


def summary(path: Path) -> str:
    """The first paragraph of a module's docstring, or a plain note that it has none."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    if not docstring:
        return "(no docstring)"
    return docstring.strip().split("\n\n", 1)[0]


def _rows(directory: Path) -> list[str]:
    rows = []
    for path in sorted(directory.glob("*.py")):
        if path.name != "__init__.py":
            rows.append(f"| `{path.name}` | {_text(summary(path))} |")
    for sub in sorted(p for p in directory.iterdir() if (p / "__init__.py").is_file()):
        rows.append(f"| `{sub.name}/` | {_text(summary(sub / '__init__.py'))} |")
    return rows


def _section(title: str, directory: Path) -> list[str]:
    lines = [f"### `{title}`", ""]
    init = directory / "__init__.py"
    if init.is_file():
        lines += [_text(summary(init)), ""]
    return [*lines, "| module | holds |", "| --- | --- |", *_rows(directory), ""]


def render_layout() -> str:
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    ordered = [name for name in ORDER if name in packages] + [name for name in packages if name not in ORDER]
    lines: list[str] = []
    for name in ordered:
        lines += _section(f"stream_processor/{name}/", PACKAGE / name)
    top = [p for p in sorted(PACKAGE.glob("*.py")) if p.name not in ("__init__.py", "__main__.py")]
    lines += ["### `stream_processor/` (top level)", "", _text(summary(PACKAGE / "__init__.py")), ""]
    lines += ["| module | holds |", "| --- | --- |"]
    lines += [f"| `{p.name}` | {_text(summary(p))} |" for p in top] + [""]
    for name in ("harness", "benchmarks"):
        lines += _section(f"{name}/", ROOT / name)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render_layout())
