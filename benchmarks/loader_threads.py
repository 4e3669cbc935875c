"""Loader workers vs intra-op threads on a small CPU: training img/s of real `Trainer` epochs for each
(workers, torch threads) pair, supervised and SSOD, interleaved rounds, median (min-max) per pair.

On a 2-core machine the loader's worker processes (augmentation, JPEG decoding) and torch's intra-op threads
(the network) compete for the same cores; ``workers: 2`` (the default) with 2 torch threads runs four busy
threads. The record says which pair is fastest and how far the default is from it.

    python -m benchmarks.loader_threads [--sizes 128 320] [--workers 0 1 2] [--threads 1 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import record
from benchmarks.train_speed import make_trainer, timed_epoch
from effteacher.config import defaults_for
from effteacher.data.sample import SampleConfig, generate


def pair_rates(data: Path, imgsz: int, batch: int, steps: int, pairs: list[tuple[int, int]], rounds: int,
               tmp: Path) -> dict[str, dict[tuple[int, int], list[float]]]:
    """img/s of a supervised and an SSOD epoch for each (workers, threads) pair, ``rounds`` interleaved rounds."""
    out: dict[str, dict[tuple[int, int], list[float]]] = {"sup": {}, "ssod": {}}
    trainers = {}
    for w, t in pairs:
        for mode in out:
            tr = make_trainer(data, imgsz, batch, mode == "sup", tmp / f"{mode}{imgsz}w{w}t{t}", workers=w)
            torch.set_num_threads(t)
            phase = tr.burn_in if mode == "sup" else tr.phase_for(tr.parts.plan.burn)
            timed_epoch(tr, phase, 1)  # warm-up: workers started, allocator
            trainers[mode, w, t] = (tr, phase)
    for r in range(rounds):
        for (mode, w, t), (tr, phase) in trainers.items():
            torch.set_num_threads(t)
            n_img = len(phase.loader()) * batch * (1 if mode == "sup" else 2)  # SSOD: labeled + unlabeled
            out[mode].setdefault((w, t), []).append(n_img / timed_epoch(tr, phase, 2 + r))
    for tr, _ in trainers.values():
        tr.close()
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 320])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="labeled batches an epoch")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    pairs = list(itertools.product(a.workers, a.threads))
    default = (defaults_for("sample").workers, os.cpu_count() or 1)
    parts, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for imgsz in a.sizes:
            data = generate(Path(tmp) / f"d{imgsz}", SampleConfig(n_train=2 * a.batch * a.steps, n_val=4,
                                                                  imgsz=imgsz), progress=False)
            rates = pair_rates(data, imgsz, a.batch, a.steps, pairs, a.rounds, Path(tmp))
            for mode, per_pair in rates.items():
                med = {p: statistics.median(v) for p, v in per_pair.items()}
                top = max(med, key=med.get)
                ref = med.get(default)
                vs = f", default w{default[0]}/t{default[1]} {ref:.1f} = {ref / med[top]:.2f}x the best" if ref else ""
                parts.append(f"{mode}@{imgsz} best w{top[0]}/t{top[1]} {med[top]:.1f} img/s{vs}")
                details.append(f"- {mode} at {imgsz} px, batch {a.batch}" + (" + " + str(a.batch) + " unlabeled"
                               if mode == "ssod" else "") + ": " + ", ".join(
                    f"w{w}/t{t} {med[w, t]:.1f} ({min(per_pair[w, t]):.1f}-{max(per_pair[w, t]):.1f})"
                    for w, t in pairs))
    details.append(f"- img/s of one training epoch ({a.steps} labeled batches; SSOD: labeled + unlabeled images), "
                   f"median (min-max) of {a.rounds} interleaved rounds; w = loader workers, t = torch intra-op "
                   f"threads of the training process; {os.cpu_count()} CPUs")
    line = "loader_threads: " + "; ".join(parts)
    record("loader_threads", line, "\n".join(details))
    return line


if __name__ == "__main__":
    print(main())
