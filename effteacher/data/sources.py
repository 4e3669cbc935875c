"""Sources of the commands that read images (predict, pseudo): a file, a folder, a glob or a .txt list."""

from __future__ import annotations

import os
from pathlib import Path

from effteacher.data.spec import IMG_FORMATS, is_image, resolve_images
from effteacher.errors import DatasetError
from effteacher.utils.console import warn

VID_FORMATS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")

_FRAMES_HINT = "extract frames first (e.g. ffmpeg -i VIDEO frames/%06d.jpg) and pass the folder"


def find_sources(source: str | Path) -> list[Path]:
    """Images named by SOURCE: a file, a folder (recursive), a glob or a .txt list. DatasetError if none.

    Paths a .txt list names that do not exist are skipped with a warning each ("not found"); a video file gets
    a line saying videos are not supported yet.
    """
    s = str(source)
    p = Path(s).expanduser()
    if not any(ch in s for ch in "*?[") and not p.exists():
        raise DatasetError(f"source '{s}' does not exist; pass an image file, a folder, a glob or a .txt list")
    if p.is_file() and p.suffix.lower() in VID_FORMATS:
        raise DatasetError(f"{s}: video files are not supported yet; {_FRAMES_HINT}")
    if p.is_file() and p.suffix.lower() != ".txt" and not is_image(p):
        raise DatasetError(f"{s}: not an image file (extensions: {', '.join(IMG_FORMATS)}); pass an image, a folder, "
                           "a glob or a .txt list")
    files = resolve_images([p])
    if p.is_file() and p.suffix.lower() == ".txt":
        missing = [f for f in files if not f.exists()]
        for f in missing[:10]:
            warn(f"{f}: not found (listed in {s}); skipped")
        if len(missing) > 10:
            warn(f"... and {len(missing) - 10} more paths listed in {s} not found")
        files = [f for f in files if f.exists()]
        if missing and not files:
            raise DatasetError(f"none of the {len(missing)} images listed in {s} exist; fix the paths in the list")
    if not files:
        videos = [f for f in ([p] if p.is_file() else [Path(r) / n for r, _, ns in os.walk(p) for n in ns]
                              if p.is_dir() else []) if f.suffix.lower() in VID_FORMATS]
        if videos:
            raise DatasetError(f"no images found in '{s}', only {len(videos)} video files: videos are not supported "
                               f"yet; {_FRAMES_HINT}")
        raise DatasetError(f"no images found in '{s}' (extensions: {', '.join(IMG_FORMATS)})")
    return files
