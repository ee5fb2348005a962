"""Data flows one way: contract tables, features, models, serving. Imports must agree.

Every import statement of every module (top level or inside a function) is read with
``ast``, so a lazy import cannot slip past the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from eddy import settings

#: package -> packages of this project it must never import
FORBIDDEN = {
    "data": {"features", "runtime", "training", "monitoring", "serving"},
    "features": {"runtime", "training", "monitoring", "serving"},
    "runtime": {"training", "monitoring", "serving"},
    "training": {"monitoring", "serving"},
    "monitoring": {"serving"},
    "serving": {"training", "monitoring"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up_the_stack(package):
    offenders = {}
    for path in sorted((settings.REPO_ROOT / package).rglob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(settings.REPO_ROOT))] = sorted(bad)
    assert offenders == {}, f"{package}/ imports what sits above it: {offenders}"


def test_the_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.train import train\n    import serving.service\n")
    assert imported_packages(module) == {"training", "serving"}


def test_settings_import_nothing_of_the_project():
    # Paths and settings sit at the bottom: every stage may read them.
    assert imported_packages(settings.REPO_ROOT / "eddy" / "settings.py") <= {"os", "pathlib", "tempfile", "__future__"}
