"""TensorBoard event files in the run folder (``tensorboard --logdir runs/train``): rank 0's results.csv columns,
per-class thresholds, the hand-over and the batch pictures, all against optimizer steps (train/steps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from torch.utils.tensorboard import SummaryWriter

# the pictures a run writes while training (train_batch0-2.jpg in its first epoch, pseudo_batch0-2.jpg at the
# hand-over); each new or rewritten one is logged at the end of the epoch that wrote it
PICTURES = ("train_batch*.jpg", "pseudo_batch*.jpg")
STEP_COLUMN = "train/steps"  # the x axis: epochs differ in length, optimizer steps do not


class TensorBoardLogger:
    """One run's event writer; a resumed run appends to the same folder.

    ``steps_done`` is the optimizer step the run starts from (0 for a new run). Epoch-end events are logged at
    the step reached by that epoch, so events past ``steps_done`` come from epochs after last.pt (a killed run):
    the writer's ``purge_step`` hides them, and the resumed run logs those steps again once.
    """

    def __init__(self, run_dir: Path, steps_done: int) -> None:
        self.run_dir = run_dir
        self.writer = SummaryWriter(str(run_dir), purge_step=steps_done + 1)
        self.seen = self._pictures()  # pictures already there (a resumed run's) were logged by their own run

    def _pictures(self) -> dict[Path, float]:
        return {p: p.stat().st_mtime for pattern in PICTURES for p in sorted(self.run_dir.glob(pattern))}

    def epoch(self, row: Mapping[str, Any], thresholds: tuple[torch.Tensor, torch.Tensor] | None,
              names: Sequence[str]) -> None:
        """One epoch: every measured results.csv cell as a scalar, per-class tau1/tau2 (SSOD epochs, the values
        the next epoch uses) and the pictures written during the epoch; then flush, so a kill loses nothing."""
        step = int(row[STEP_COLUMN])
        for tag, value in row.items():
            if tag != STEP_COLUMN and value is not None:
                self.writer.add_scalar(tag, float(value), step)
        if thresholds is not None:
            for which, tau in zip(("tau1", "tau2"), thresholds):
                for c, v in enumerate(tau.tolist()):
                    self.writer.add_scalar(f"thresholds/{which}/{names[c]}", float(v), step)
        for path, mtime in self._pictures().items():
            if self.seen.get(path) != mtime:
                self.seen[path] = mtime
                self._image(path, step)
        self.writer.flush()

    def _image(self, path: Path, step: int) -> None:
        img = cv2.imread(str(path))
        if img is not None:  # a picture being rewritten right now is caught at the next epoch end
            self.writer.add_image(f"images/{path.stem}", img[..., ::-1].copy(), step, dataformats="HWC")

    def hand_over(self, step: int, burn_epochs: int, text: str) -> None:
        """The end of burn-in: a text event, and a scalar (the burn-in epochs) marking its step."""
        self.writer.add_text("train/hand_over", text, step)
        self.writer.add_scalar("train/hand_over", float(burn_epochs), step)

    def close(self) -> None:
        self.writer.close()
