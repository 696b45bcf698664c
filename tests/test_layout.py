"""The house rules, checked: imports point down the floors of ser_core (ser_core/__init__.py), every
package's map names each of its modules, and no source module is over 400 lines."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "ser_core"
# a package may import the ones on lower floors only (the order of ser_core/__init__.py)
FLOOR = {"errors": -1, "config": 0, "control": 0, "stats": 1, "tasks": 1, "audio": 2, "data": 3, "models": 4,
         "attacks": 5, "training": 6, "evaluation": 7, "serving": 7}
MAX_LINES = 400


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ser_core."):
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("ser_core."))


def test_every_ser_core_module_has_a_floor():
    tops = {p.stem if p.is_file() else p.name for p in CORE.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert tops == set(FLOOR)


def test_no_import_runs_up_or_across_a_floor():
    up = []
    for path in CORE.rglob("*.py"):
        me = path.relative_to(CORE).parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        for line, module in _imports(path):
            other = module.split(".")[1]
            if other != me and FLOOR[other] >= FLOOR[me]:
                up.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert up == []


@pytest.mark.parametrize("package", sorted(p.parent.relative_to(ROOT).as_posix() for p in CORE.rglob("__init__.py")
                                            if p.parent != CORE))
def test_the_package_map_names_every_module(package):
    folder = ROOT / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    modules = [p.name for p in folder.iterdir() if p.suffix == ".py" and p.stem != "__init__"]
    modules += [p.name + "/" for p in folder.iterdir() if (p / "__init__.py").is_file()]
    missing = [m for m in modules if not re.search(rf"(?<![\w/]){re.escape(m)}", doc)]
    assert missing == [], f"{package}/__init__.py does not name {missing}"


def test_the_top_package_map_names_every_stage():
    doc = ast.get_docstring(ast.parse((CORE / "__init__.py").read_text()))
    assert [f for f in FLOOR if not re.search(rf"\b{f}(/|\.py)", doc)] == []


def test_no_source_module_is_over_400_lines():
    sources = [ROOT / "app.py", *CORE.rglob("*.py"), *(ROOT / "export").glob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
