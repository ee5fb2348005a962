"""Crash-safe writes: a file or a set of files is the old one or the new one, never a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from eddy.files import atomic_folder


def fill_with(files: dict[str, str]):
    def fill(folder):
        for name, text in files.items():
            (folder / name).write_text(text)
    return fill


def test_a_folder_is_switched_whole_and_earlier_sets_are_pruned(tmp_path):
    target = tmp_path / "_quarantine"
    atomic_folder(target, fill_with({"report.json": "1", "scans.csv": "a"}))
    atomic_folder(target, fill_with({"report.json": "2"}))
    assert sorted(p.name for p in target.iterdir()) == ["report.json"] and (target / "report.json").read_text() == "2"
    assert len(list((tmp_path / "._quarantine.versions").iterdir())) == 1


def test_a_failed_fill_leaves_the_old_set(tmp_path):
    target = tmp_path / "out"
    atomic_folder(target, fill_with({"a.csv": "old", "report.json": "old"}))

    def half(folder):
        (folder / "a.csv").write_text("new")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        atomic_folder(target, half)
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.csv": "old", "report.json": "old"}


def test_a_plain_folder_from_before_is_replaced(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.csv").write_text("x")
    atomic_folder(target, fill_with({"report.json": "new"}))
    assert target.is_symlink() and [p.name for p in target.iterdir()] == ["report.json"]


def test_sigkill_during_the_fill_leaves_the_old_set_whole(tmp_path):
    target = tmp_path / "out"
    atomic_folder(target, fill_with({f"{i}.csv": "old" for i in range(3)}))
    code = (f"import time; from pathlib import Path; from eddy.files import atomic_folder\n"
            f"def fill(f):\n    (f / '0.csv').write_text('new'); Path({str(tmp_path / 'started')!r}).touch(); time.sleep(60)\n"
            f"atomic_folder(Path({str(target)!r}), fill)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_text() for p in target.iterdir()} == {f"{i}.csv": "old" for i in range(3)}
    atomic_folder(target, fill_with({"report.json": "next"}))  # the next run clears what the killed one left
    assert len(list((tmp_path / ".out.versions").iterdir())) == 1
