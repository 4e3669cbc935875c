"""Run folders (created, locked, removed when a failed command leaves them empty) and atomic file writes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from effteacher.errors import RunFolderBusyError

try:
    import fcntl
except ImportError:  # not a POSIX system: run folders are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"  # RUN/.lock: the PID of the run writing into RUN, flock-ed while it runs


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


def make_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> tuple[Path, bool]:
    """Create the folder of a new run (runs/x/exp, exp2, ...) and say whether this call created it.

    Without ``exist_ok`` the folder is always a new one, even when other processes pick a name at the same
    time; with ``exist_ok`` an existing folder is reused and reported as not created.
    """
    while True:
        path = increment_path(project, name, exist_ok, mkdir=False)
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            if exist_ok:
                return path, False
            # another process took this name first: take the next one


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; waits while another process holds
    it. Where the platform or file system has no locks the block runs unlocked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError:
                pass
        yield
    finally:
        if locked:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class RunLock:
    """An exclusive lock on a run folder: ``flock`` on RUN/.lock, which holds the owner's PID.

    The kernel drops the lock when its process dies, so a folder left by a killed run is free again (its
    stale .lock file is locked anew). Released cleanly, the lock file is removed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Lock the folder, or raise RunFolderBusyError naming the PID of the process holding it."""
        if fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusyError(
                    f"{self.folder} is in use by another run (PID {self._holder()}); wait for it to finish, "
                    "or choose another folder") from None
            except OSError:  # a file system without locks: go on unlocked
                os.close(fd)
                return self
            try:
                here = os.stat(self.path)
                mine = os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed this file as it let go: lock the file that is there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        """The PID in the lock file (its owner may be writing it right now: wait a little for it)."""
        for _ in range(20):
            with contextlib.suppress(OSError):
                pid = self.path.read_text().strip()
                if pid:
                    return pid
            time.sleep(0.05)
        return "unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked, so that no other process locks the old file
        os.close(self._fd)
        self._fd = None


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds any file besides its lock file (empty subfolders do not count)."""
    return any(p.name != LOCK_NAME for p in folder.rglob("*") if not p.is_dir())


@contextlib.contextmanager
def discard_if_failed(created: Callable[[], Path | None], keep: Callable[[Path], bool] = holds_files
                      ) -> Iterator[None]:
    """Remove the run folder this command created (``created()``, None when it made none) if the body fails
    while ``keep(folder)`` is False (by default: while it holds no file): a failed command leaves no empty
    expN behind. Folders the command did not create (--exist-ok, --resume) are never touched.
    """
    try:
        yield
    except BaseException:
        path = created()
        if path is not None and path.is_dir() and not keep(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


@contextlib.contextmanager
def run_folder(project: str | Path, name: str, exist_ok: bool = False,
               keep: Callable[[Path], bool] = holds_files) -> Iterator[Path]:
    """The run folder of a command (val, predict, pseudo, rank, split), locked while the body runs.

    Another process asking for the same folder (--exist-ok) is refused with RunFolderBusyError. If the body
    fails, the folder is removed when this call created it and ``keep`` says it holds no result.
    """
    path, created = make_run_dir(project, name, exist_ok)
    lock = RunLock(path)
    try:
        with discard_if_failed(lambda: path if created else None, keep):  # removed while still locked
            lock.acquire()
            yield path
    finally:
        lock.release()


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
