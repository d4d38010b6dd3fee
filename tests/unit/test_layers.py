"""The layout's rule, from the imports themselves (harness/layers.py): no package imports one
on its own layer or above it, so there is no cycle, and the core imports nothing of an
engine, a transport, a file format or a view."""

import sys
from pathlib import Path

from harness import layers

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_runs_back_up_the_layers():
    arrows = layers.package_arrows(ROOT)
    assert arrows, "the imports were not read"
    assert layers.upward(arrows) == {}


def test_the_packages_import_each_other_without_a_cycle():
    assert layers.cycles(layers.package_arrows(ROOT)) == []


def test_the_core_imports_only_the_core_and_the_standard_library():
    outside = {
        (name, target)
        for name, path in layers.modules(ROOT)
        if name.startswith("stream_processor.core")
        for target in layers.imports_at_load(path)
        if target.split(".")[0] not in {"stream_processor", *sys.stdlib_module_names}
        or (target.startswith("stream_processor") and not target.startswith("stream_processor.core"))
    }
    assert outside == set()


def test_an_upward_import_is_seen(tmp_path):
    """The check can fail: a core module that imports the engine is an arrow back up."""
    core = tmp_path / "stream_processor" / "core"
    engine = tmp_path / "stream_processor" / "engine"
    for package in (core, engine):
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
    (engine / "executor.py").write_text("from stream_processor.core import ordering\n")
    (core / "ordering.py").write_text("from stream_processor.engine import executor\n")
    arrows = layers.package_arrows(tmp_path)
    assert layers.upward(arrows) == {("core", "engine"): 2}
    assert layers.cycles(arrows) == [["core", "engine", "core"]]
