"""TrainConfig: every setting of `effteacher train`, the train command's flags included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from effteacher.config.fields import BATCH, IMGSZ, SEED, WORKERS, count, section, setting
from effteacher.config.sections import AugmentConfig, LossConfig, OptimConfig, SchedConfig, SSODConfig


def parse_burn_in(text: str) -> int | str:
    """--burn-in: 'auto' or a whole number of epochs (anything else is reported by the option checks)."""
    v = text.strip().lower()
    return int(v) if v.isdigit() else "auto" if v == "auto" else text


@dataclass(frozen=True)
class TrainConfig:
    """Everything `effteacher train` needs; written to args.yaml and stored in checkpoints."""

    data: str = setting("sample", "Dataset YAML, or 'demo' / 'sample' / 'sample-large' for a bundled generated "
                                  "dataset; its defaults: block sets this run's defaults.", flag="--data")
    model: str = setting("n", "Model: n, s, m, l, x, retina-r18 or retina-r50 (with --weights: the weights' model).",
                         flag="--model")
    labeled: str = setting("10%", "Labeled part of train: '10%', '0.1', a count '200', or a file listing the "
                                  "labeled images.", flag="--labeled")
    supervised: bool = setting(False, "Supervised baseline on the labeled split only.", flag="--supervised")
    epochs: int = setting(0, "Total epochs, burn-in included; 0 = auto: burn-in to a plateau, then ssod_factor x "
                             "as long in SSOD (supervised: to the plateau).",
                          count(0, "total epochs, 0 = auto (sized from the data)"), flag="--epochs")
    burn_in: int | str = setting("auto", "Supervised epochs before SSOD, or 'auto' (until validation plateaus).",
                                 flag="--burn-in", parse=parse_burn_in)
    imgsz: int = setting(640, "Train/val image size in pixels.", IMGSZ,
                         flag="--imgsz")
    batch: int = setting(16, "Total labeled batch size.", BATCH,
                         flag="--batch")
    device: str = setting("cpu", "cpu, 0, or 0,1,... (several GPUs run DDP).", flag="--device")
    weights: str | None = setting(None, "Initial weights: an effteacher .pt, an official YOLOv5 .pt (v4.0-v7.0) or "
                                        "a torchvision ResNet state_dict (retina).", flag="--weights")
    resume: str | None = setting(None, "Resume a run: its folder or last.pt ('last' = newest run).", flag="--resume")
    seed: int = setting(0, "Seed of the split and of training.", SEED, flag="--seed")
    project: str = setting("runs/train", "Parent folder of the run.", flag="--project")
    name: str = setting("exp", "Run name (incremented unless --exist-ok).", flag="--name")
    exist_ok: bool = setting(False, "Reuse an existing run folder.", flag="--exist-ok")
    workers: int = setting(2, "Dataloader workers.", WORKERS,
                           flag="--workers")
    amp: bool = setting(True, "Mixed precision on CUDA (always off on CPU).", flag="--amp/--no-amp")
    tensorboard: bool = setting(True, "TensorBoard event files in the run folder (view with `tensorboard --logdir "
                                      "runs/train`).", flag="--tensorboard/--no-tensorboard")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "CPU training precision: auto = bf16 autocast of the network where the CPU has native bf16 "
                "(avx512_bf16 / amx), else fp32; fp32; bf16 (falls back to fp32 with a warning on a CPU without "
                "it). Losses, validation and export stay fp32; CUDA uses amp.", flag="--precision")
    channels_last: bool = setting(False, "Channels-last memory format for the model and its inputs in training "
                                         "(faster on CPU, but its runs learned slower: see docs/benchmarks.md).")
    patience: int = setting(100, "Early-stop patience in epochs.",
                            count(1, "epochs without improvement before stopping; a large value turns it off"),
                            flag="--patience")
    cache: bool = setting(False, "RAM cache of resized images.")
    val_every: int = setting(1, "Validate every N epochs (always: SSOD epochs, the last burn-in epoch, the last "
                                "epoch).", count(1))
    verbose: bool = setting(False, "Per-class validation and threshold tables after every validation (else at the "
                                   "end only).", flag="--verbose")
    aug: AugmentConfig = section(AugmentConfig, AugmentConfig.__doc__ or "")
    loss: LossConfig = section(LossConfig, LossConfig.__doc__ or "")
    optim: OptimConfig = section(OptimConfig, OptimConfig.__doc__ or "")
    ssod: SSODConfig = section(SSODConfig, SSODConfig.__doc__ or "")
    sched: SchedConfig = section(SchedConfig, SchedConfig.__doc__ or "")
