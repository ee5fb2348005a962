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
