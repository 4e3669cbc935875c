"""Sources of the commands that read images (predict, pseudo): a file, a folder, a glob or a .txt list.

`predict` also reads video files among them (see data/video.py for the frames and for streams); `pseudo` reads
images only.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from effteacher.data.spec import IMG_FORMATS, is_image, read_list, resolve_images
from effteacher.errors import DatasetError
from effteacher.utils.console import warn

VID_FORMATS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")

_VIDEO_HINT = "videos are read by `effteacher predict`; for this command extract frames first (e.g. ffmpeg -i " \
    "VIDEO frames/%06d.jpg) and pass the folder"


def is_video(path: str | Path) -> bool:
    return str(path).lower().endswith(VID_FORMATS)


def _videos(p: Path, s: str) -> list[Path]:
    """Video files of a folder (recursive), glob, .txt list or file source."""
    if not p.exists() and any(ch in s for ch in "*?["):
        cands = [Path(f) for f in glob.glob(s, recursive=True)]
    elif p.is_dir():
        cands = [Path(r) / n for r, _, ns in os.walk(p) for n in ns]
    elif p.is_file() and p.suffix.lower() == ".txt":
        cands = read_list(p)
    else:
        cands = [p]
    return [Path(os.path.abspath(f)) for f in cands if is_video(f)]


def find_sources(source: str | Path, videos: bool = False) -> list[Path]:
    """Images named by SOURCE, and with ``videos`` its video files too (sorted together): a file, a folder
    (recursive), a glob or a .txt list. DatasetError if none.

    Paths a .txt list names that do not exist are skipped with a warning each ("not found"); without ``videos`` a
    video file gets a line saying to extract its frames.
    """
    s = str(source)
    p = Path(s).expanduser()
    if not any(ch in s for ch in "*?[") and not p.exists():
        what = "an image or video file" if videos else "an image file"
        raise DatasetError(f"source '{s}' does not exist; pass {what}, a folder, a glob or a .txt list")
    if p.is_file() and is_video(p):
        if videos:
            return [Path(os.path.abspath(p))]
        raise DatasetError(f"{s}: a video; {_VIDEO_HINT}")
    if p.is_file() and p.suffix.lower() != ".txt" and not is_image(p):
        raise DatasetError(f"{s}: not an image file (extensions: {', '.join(IMG_FORMATS)}); pass an image, a folder, "
                           "a glob or a .txt list")
    files = resolve_images([p])
    if videos:
        files = sorted(set(files) | set(_videos(p, s)))
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
        found = _videos(p, s)
        if found:  # only reached without ``videos``
            raise DatasetError(f"no images found in '{s}', only {len(found)} video files; {_VIDEO_HINT}")
        what = f"no images or videos found in '{s}' (extensions: {', '.join(IMG_FORMATS + VID_FORMATS)})" if videos \
            else f"no images found in '{s}' (extensions: {', '.join(IMG_FORMATS)})"
        raise DatasetError(what)
    return files
