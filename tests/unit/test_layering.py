"""DESIGN §4 layering, checked: syncthing/ and folders/ import nothing of ours above them,
and no headless module loads Textual."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"syncthing": {"syncthing"}, "folders": {"folders"},
           "orchestrator": {"orchestrator", "folders", "syncthing"},
           "tui": {"tui", "orchestrator", "folders", "syncthing"}}
OURS = set(ALLOWED)
#: The one way up: `twinsync tui` starts the TUI, importing Textual only when run.
EXCEPTIONS = {"orchestrator/cli/tui.py": {"tui"}, "orchestrator/cli/demo.py": {"tui"}}


def _our_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = _our_imports(path) - ALLOWED[package] - EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), set())
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_headless_modules_do_not_load_textual():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for pkg in ("syncthing", "folders", "orchestrator") for p in (ROOT / pkg).rglob("*.py")
               if p.name != "__main__.py"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('textual' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
