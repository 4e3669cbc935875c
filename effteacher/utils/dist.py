"""Devices and distributed training: device parsing, torchrun detection, DDP relaunch, collectives, seeds."""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from effteacher.errors import DeviceError

T = TypeVar("T")

DDP_CHILD_ENV = "EFFTEACHER_DDP_CHILD"  # set to "1" in processes started by relaunch_ddp
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun gives a worker


def parse_devices(device: str) -> list[int]:
    """CUDA indices named by a device string: ``'cpu'``/``''`` -> [], ``'0'`` -> [0],
    ``'0,1'`` -> [0, 1], ``'cuda:1'`` -> [1], ``'cuda'`` -> [0]. Raises DeviceError otherwise."""
    s = str(device).strip().lower().replace(" ", "")
    if s in ("", "cpu"):
        return []
    if s == "cuda":
        return [0]
    if s.startswith("cuda:"):
        s = s[len("cuda:"):]
    parts = s.split(",")
    if not all(p.isdigit() for p in parts):
        raise DeviceError(f"invalid --device '{device}'; use cpu, 0, 0,1 or cuda:0")
    ids = [int(p) for p in parts]
    if len(set(ids)) != len(ids):
        raise DeviceError(f"--device '{device}' names a GPU twice")
    return ids


def select_device(device: str, batch: int | None = None, nproc: int = 1) -> torch.device:
    """Validate ``device`` and return this process's main device (``cpu`` or ``cuda:<first id>``).

    Raises DeviceError when a named GPU is not visible (or CUDA is unavailable), or when
    ``batch`` is not divisible by the number of processes (GPUs named, or ``nproc`` on CPU).
    """
    ids = parse_devices(device)
    if not ids:
        check_batch(batch, nproc, f"--nproc {nproc}")
        return torch.device("cpu")
    n_visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in ids if i >= n_visible]
    if missing:
        what = "CUDA is not available" if n_visible == 0 else f"only {n_visible} visible"
        raise DeviceError(
            f"CUDA device {','.join(map(str, missing))} requested but {what} "
            f"({n_visible} GPU{'s' if n_visible != 1 else ''}); use --device cpu"
            + (f" or an index below {n_visible}" if n_visible else "")
        )
    check_batch(batch, len(ids), f"{len(ids)} GPUs")
    return torch.device(f"cuda:{ids[0]}")


def check_batch(batch: int | None, n: int, what: str = "") -> None:
    """DeviceError unless the total ``batch`` splits evenly over ``n`` processes."""
    what = what or f"{n} processes"
    if batch is not None and n > 1 and batch % n != 0:
        raise DeviceError(
            f"--batch {batch} is not a multiple of the process count ({what}); "
            f"use e.g. --batch {n * max(batch // n, 1)}"
        )


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank -1 and world_size 1 when not distributed (the loaders' convention)."""

    rank: int = -1
    local_rank: int = -1
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0, or the only process)."""
        return self.rank in (-1, 0)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "cpu", env: Mapping[str, str] | None = None) -> "DistContext":
        """Read RANK / LOCAL_RANK / WORLD_SIZE (set by torchrun / torch.distributed.run) for ``--device``.

        RANK is global (across nodes), LOCAL_RANK this node's process index, which picks the GPU:
        a process on GPUs ``'0,1'`` with LOCAL_RANK 1 gets ``cuda:1``; ``'cuda'`` under torchrun
        means every visible GPU of the node. Backend NCCL on CUDA, gloo on CPU. Raises DeviceError
        if more processes than named GPUs share this node.
        """
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "-1")) if world > 1 else -1
        local = int(env.get("LOCAL_RANK", "-1")) if world > 1 else -1
        ids = parse_devices(device)
        if not ids:
            return cls(rank, local, world, torch.device("cpu"), "gloo")
        if world > 1 and str(device).strip().lower() == "cuda":  # one GPU per local process, LOCAL_RANK picks
            ids = list(range(torch.cuda.device_count() if torch.cuda.is_available() else 0)) or [0]
            device = ",".join(map(str, ids))
        select_device(device)
        if world > 1 and local >= len(ids):
            raise DeviceError(
                f"{world} processes but --device '{device}' names {len(ids)} GPU(s); name one GPU per process"
            )
        return cls(rank, local, world, torch.device(f"cuda:{ids[max(local, 0)]}"), "nccl")


def init_distributed(ctx: DistContext, timeout_s: float = 1800.0) -> None:
    """Join the process group (env:// rendezvous) when ``ctx.distributed``; no-op otherwise."""
    if not ctx.distributed or dist.is_initialized():
        return

    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    dist.init_process_group(
        backend=ctx.backend, rank=ctx.rank, world_size=ctx.world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active(ctx: DistContext) -> bool:
    return ctx.distributed and dist.is_available() and dist.is_initialized()


def barrier(ctx: DistContext) -> None:
    if _active(ctx):
        dist.barrier(device_ids=[ctx.device.index] if ctx.backend == "nccl" else None)


@contextlib.contextmanager
def torch_distributed_zero_first(ctx: DistContext) -> Iterator[None]:
    """Let the main process run the block first (e.g. dataset caching); the others wait, then run it."""
    if not ctx.is_main:
        barrier(ctx)
    try:
        yield
    finally:  # also when the block raises on rank 0: the others then run it and raise the same error
        if ctx.is_main:
            barrier(ctx)


def is_ddp_child(env: Mapping[str, str] | None = None) -> bool:
    """True in a process started by ``relaunch_ddp`` (it must not relaunch again)."""
    env = os.environ if env is None else env
    return env.get(DDP_CHILD_ENV) == "1"


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """True in a worker started by torchrun / torch.distributed.run (ours from ``relaunch_ddp`` included).

    Such a process already has its rank and rendezvous (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), so it trains in place and must never relaunch itself.
    """
    env = os.environ if env is None else env
    return is_ddp_child(env) or all(k in env for k in TORCHRUN_ENV)


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relaunch_ddp(
    argv: list[str], nproc: int, module: str = "effteacher", env: Mapping[str, str] | None = None
) -> int:
    """Run ``python -m torch.distributed.run --nproc_per_node N --master_port P -m <module> <argv>``.

    ``argv`` is the CLI command without the program name (``sys.argv[1:]``). The children get
    ``EFFTEACHER_DDP_CHILD=1`` so they train instead of relaunching. Returns the launcher's exit code.
    """
    child_env = dict(os.environ if env is None else env)
    child_env[DDP_CHILD_ENV] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(int(nproc)),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", module, *argv,
    ]
    return subprocess.run(cmd, env=child_env, check=False).returncode


def all_gather_tensor(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``t`` (n_r, ...) from every rank in rank order -> (sum n_r, ...).

    Lengths may differ per rank (padded to the longest, gathered, trimmed). Trailing dims and
    dtype must agree. Returns ``t`` itself when not distributed; the result is on ``t.device``.
    """
    if not _active(ctx):
        return t
    x = t.to(ctx.device)
    n = torch.tensor([x.shape[0]], device=ctx.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(out, padded)
    return torch.cat([o[:k] for o, k in zip(out, lengths)]).to(t.device)


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled); ``obj`` unchanged when not distributed."""
    if not _active(ctx):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise mean of ``t`` over ranks (a new tensor; ``t`` itself is not modified)."""
    if not _active(ctx):
        return t.clone()
    x = t.detach().to(ctx.device, dtype=torch.float64 if not t.is_floating_point() else t.dtype).clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return (x / ctx.world_size).to(t.device)


def seed_everything(seed: int, rank: int = -1) -> int:
    """Seed python, numpy and torch (all devices) with ``seed + max(rank, 0)``; returns that seed."""
    s = int(seed) + max(int(rank), 0)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when not distributed."""
    if not _active(ctx):
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_dicts(dicts: list[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise mean of numeric dicts (a key missing from some dicts is averaged over those that have it)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def mean_over_ranks(stats: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """Key-wise mean of each rank's ``stats`` (e.g. epoch loss means), identical on every rank."""
    return mean_dicts(gather_objects(dict(stats), ctx))


def run_on_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """Call ``fn`` on global rank 0 only and return its result on every rank.

    For decisions one process must make for all (the run folder, which last.pt to resume) and for
    the file writes that go with them. If ``fn`` raises on rank 0, every rank raises the same
    exception, so no rank is left waiting in a collective.
    """
    if not _active(ctx):
        return fn()
    result: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            result = (True, fn())
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            result = (False, e)
    ok, value = broadcast_object(result, ctx)
    if not ok:
        raise value
    return value
