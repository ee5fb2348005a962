"""Writing files so that a crash never leaves half of one.

Every file the project writes goes to a temporary name beside its target and is then
renamed over it (``os.replace`` is atomic on one file system): a reader, or the next
run after a kill, sees the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(target: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then move the result to ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        write(temp)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
    return target


def atomic_text(target: Path, text: str) -> Path:
    return atomic_write(target, lambda p: p.write_text(text))


def atomic_folder(target: Path, fill: Callable[[Path], object]) -> Path:
    """Call ``fill(new_folder)``, then switch ``target`` to it at once.

    ``target`` becomes a symbolic link to a folder under ``.<name>.versions`` beside it;
    replacing the link is one rename, so a reader (or the next run after a kill) finds
    every file of the old set or every file of the new one, never a mix. Folders that
    earlier or killed runs left there are removed once the switch is done. A ``target``
    that is a plain folder (written before this) is moved aside the first time.
    """
    import shutil
    import tempfile
    import time

    target = Path(target)
    versions = target.parent / f".{target.name}.versions"
    versions.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f"{time.time_ns()}-", dir=versions))
    link = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        fill(fresh)
        for path in fresh.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        if link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(fresh, target.parent), link)
        if target.is_dir() and not target.is_symlink():
            os.rename(target, versions / f"plain-{time.time_ns()}")
        os.replace(link, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        if link.is_symlink():
            link.unlink()
        raise
    for old in versions.iterdir():
        if old != fresh:
            shutil.rmtree(old, ignore_errors=True)
    return target
