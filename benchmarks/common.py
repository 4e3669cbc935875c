"""Shared by the benchmarks: describe the machine and record a benchmark's last result in RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line naming the machine: CPU model, cores, torch version, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        tv = torch.__version__
        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        tv = "n/a"
    return f"{cpu}, {os.cpu_count()} cores, torch {tv}{gpu}"


def record(name: str, line: str, details: str = "") -> None:
    """Print ``line`` and replace this benchmark's section of RESULTS.md with it (other sections kept)."""
    print(line, flush=True)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEach section is the last run of one benchmark.\n"
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"## {name}\n\n`{line}`\n\n- machine: {machine()}\n- date: {stamp}\n"
    if details:
        body += "\n" + details.rstrip() + "\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + body
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)


def sync(dev: Any) -> None:
    """Wait for a CUDA device's queued work (no-op on CPU), so a timer reads finished work."""
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def step_rate(step: Callable[[], None], steps: int, images: int, dev: Any, warmup: int = 1) -> float:
    """Images per second of ``steps`` calls of ``step`` (``images`` per call), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return images * steps / (time.perf_counter() - t0)


def parse_arms(text: str, allowed: Any) -> list[str]:
    """``--arms a,b`` as a list, or exit with one line naming the unknown arms and the allowed ones."""
    arms = [a for a in text.split(",") if a]
    if unknown := set(arms) - set(allowed):
        raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(allowed)}")
    return arms
