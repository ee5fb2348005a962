"""Packaging: a Bento (BentoML's deployable folder) carrying the code and one model version.

``eddy bento`` copies the source packages, ``pyproject.toml`` (its ``[tool.bentoml.build]``
section holds the build options, its dependencies become the Bento's requirements) and
the chosen bundle to a scratch folder, the bundle as ``serving/champion/``, and runs
``bentoml build`` there. The service finds that folder at start-up, so
``bentoml serve eddy-service:latest`` serves the packaged version without MLflow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from eddy import settings

PACKAGES = ("eddy", "data", "features", "runtime", "serving")


def build_context(bundle: Path, version: str, into: Path) -> Path:
    """A folder holding what the Bento needs: code, build options and the bundle."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "champion")
    for package in PACKAGES:
        shutil.copytree(settings.REPO_ROOT / package, into / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(settings.REPO_ROOT / name, into / name)
    champion = into / "serving" / "champion"
    shutil.copytree(bundle, champion)
    meta = json.loads((champion / "meta.json").read_text())
    (champion / "meta.json").write_text(json.dumps({**meta, "registry_version": str(version)}, indent=2, default=str))
    return into


def build_bento(bundle: Path, version: str) -> str:
    """Build the Bento into the BentoML store and return its tag."""
    with tempfile.TemporaryDirectory(prefix="eddy-bento-") as tmp:
        context = build_context(Path(bundle), version, Path(tmp))
        done = subprocess.run([str(Path(sys.executable).parent / "bentoml"), "build", str(context),
                               "--label", f"model_version={version}"],
                              cwd=context, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    match = re.search(r'tag="([^"]+)"', done.stdout + done.stderr)
    if not match:
        raise RuntimeError(f"bentoml build printed no tag: {done.stdout[-500:]}")
    return match.group(1)
