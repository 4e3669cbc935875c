"""Run folders and atomic file writes."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable


def default_cache_dir() -> Path:
    """``$EFFTEACHER_CACHE`` or ``~/.cache/effteacher`` (read at call time, never at import)."""
    env = os.environ.get("EFFTEACHER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "effteacher"


def increment_path(project: str | Path, name: str, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3, ... unless exist_ok (YOLOv5 habit)."""
    base = Path(project) / name
    path = base
    if not exist_ok and path.exists():
        m = re.match(r"^(.*?)(\d+)$", name)
        stem = m.group(1) if m else name
        n = 2
        while (Path(project) / f"{stem}{n}").exists():
            n += 1
        path = Path(project) / f"{stem}{n}"
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, writer: Callable[[str], None], mode: int | None = None) -> None:
    """Call ``writer(tmp_path)`` then fsync and rename over ``path``: a kill never leaves half a file.

    The file gets ``mode``, by default the one ``open()`` would give (0666 less the umask: 0644 for the usual
    umask 022), not the 0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def unique_name(name: str, used: set[str]) -> str:
    """``name`` or ``stem_2.ext`` etc., so that files with the same name do not overwrite each other; adds it to ``used``."""
    if name not in used:
        used.add(name)
        return name
    p = Path(name)
    n = 2
    while f"{p.stem}_{n}{p.suffix}" in used:
        n += 1
    used.add(f"{p.stem}_{n}{p.suffix}")
    return f"{p.stem}_{n}{p.suffix}"
