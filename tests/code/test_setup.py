"""The set-up the README's two commands rely on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from eddy import settings


def test_without_chromium_and_without_root_make_test_stops_with_the_command_to_run(tmp_path: Path):
    """On a machine without Chromium, where apt cannot be run, the set-up fails at once
    and says what to install (instead of the review tests failing later)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root, and no sudo on this PATH
    (bin_dir / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin/env-less"}
    bash = "/bin/bash"
    r = subprocess.run([bash, str(settings.REPO_ROOT / "scripts" / "system-deps")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "missing system packages: chromium" in r.stderr
    assert "sudo apt-get install -y --no-install-recommends chromium" in r.stderr


def test_make_test_runs_the_system_set_up_first():
    plan = subprocess.run(["make", "-n", "test"], cwd=settings.REPO_ROOT, capture_output=True, text=True).stdout
    assert plan.index("scripts/system-deps") < plan.index("pytest")
