"""Multi-node training under torchrun: two agents on localhost (gloo), and rank 0 deciding for every rank."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

import pytest
from effteacher.config import TrainConfig, replace, to_dict
from effteacher.utils import dist as D
from effteacher.train import run_folder as S
from effteacher.train import train_data as TD
from effteacher.errors import CheckpointError, DatasetError, DeviceError
from effteacher.ssod.thresholds import EpochAdaptorThresholds

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]



def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ rank 0 decides, every rank agrees
def _scores() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(400, generator=g), torch.randint(0, 3, (400,), generator=g)


def _adaptor() -> EpochAdaptorThresholds:
    return EpochAdaptorThresholds(3, n_c=[10, 5, 2], n_labeled_images=6, n_unlabeled_images=18)


def _fake_last(run: Path, cfg: TrainConfig) -> Path:
    from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
    from effteacher.models.build import build_model

    ckpt = make_checkpoint(build_model("n", 10), [str(i) for i in range(10)], 96, "ema", 2, {}, to_dict(cfg),
                           extra={"train_state": {"epoch": 2}})
    return save_checkpoint(run / "weights" / "last.pt", ckpt)


def _rank_worker(rank: int, world: int, port: int, data: str, project: str, last: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    ctx = D.DistContext.from_env("cpu")
    D.init_distributed(ctx, timeout_s=60)
    out: dict = {"torchrun": D.launched_by_torchrun()}
    try:
        cfg = replace(TrainConfig(), data=data, project=project, name="exp", labeled="25%", batch=4)
        run = S.resolve_run(cfg, ctx)
        out["new_run"] = str(run.run_dir)
        if rank == 1:  # this "node" cannot see rank 0's disk: last.pt must come from rank 0
            S._readable = lambda p: False
        resumed = S.resolve_run(replace(cfg, resume=last, epochs=0), ctx)
        out["resume_dir"] = str(resumed.run_dir)
        out["resume_epoch"] = resumed.resume_ckpt["train_state"]["epoch"]
        out["resume_name"] = resumed.cfg.name
        for bad in (replace(cfg, resume=str(Path(project) / "missing")), replace(cfg, batch=5)):
            try:
                S.resolve_run(bad, ctx)
            except (CheckpointError, DeviceError) as e:
                out.setdefault("errors", []).append(type(e).__name__)
        try:  # fails on rank 0 inside "rank 0 first": the others must not wait for it forever
            TD.load_train_data(replace(cfg, data=str(Path(project) / "missing.yaml")), run.run_dir, False, ctx)
        except DatasetError as e:
            out["errors"].append(type(e).__name__)
        data_ = TD.load_train_data(cfg, run.run_dir, False, ctx)
        out["labeled"] = sorted(r.path for r in data_.labeled)
        ea = _adaptor()
        scores, classes = _scores()
        ea.observe(scores[rank::world], classes[rank::world], n_images=9)
        ea.end_epoch(all_gather=lambda t: D.all_gather_tensor(t, ctx))
        out["tau1"], out["tau2"] = ea.tau1.tolist(), ea.tau2.tolist()
        out["means"] = D.mean_over_ranks({"loss": 1.0, "only0": 5.0} if rank == 0 else {"loss": 3.0}, ctx)
        out["gathered"] = D.gather_objects(rank * 10, ctx)
    finally:
        D.cleanup()
    Path(out_dir, f"r{rank}.json").write_text(json.dumps(out))


@pytest.mark.slow
def test_rank0_decides_for_every_rank(tiny_data, tmp_path):
    """Run folder, resumed last.pt (also without a shared disk), errors, split and Epoch Adaptor update
    agree on 2 ranks, and the split and thresholds equal a single process's."""
    project = tmp_path / "runs"
    (project / "exp").mkdir(parents=True)  # the 2 ranks must both move on to exp2, and make nothing else
    old = TrainConfig(data=str(tiny_data), name="old", epochs=2)
    last = _fake_last(project / "old", old)
    mp.spawn(_rank_worker, args=(2, D.free_port(), str(tiny_data), str(project), str(last),
                                 str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1))
    assert r0["torchrun"] and r1["torchrun"]
    assert r0["new_run"] == r1["new_run"] == str(project / "exp2")
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2", "old"]
    assert r0["resume_dir"] == r1["resume_dir"] == str(project / "old")
    assert r0["resume_epoch"] == r1["resume_epoch"] == 2 and r0["resume_name"] == r1["resume_name"] == "old"
    assert r0["errors"] == r1["errors"] == ["CheckpointError", "DeviceError", "DatasetError"]
    # one process: the same split and the same threshold update from the same (all) scores
    cfg = replace(TrainConfig(), data=str(tiny_data), labeled="25%")
    single = TD.load_train_data(cfg, tmp_path / "single", False, D.DistContext())
    assert r0["labeled"] == r1["labeled"] == sorted(r.path for r in single.labeled)
    assert (project / "exp2/split/labeled.txt").read_text() == (tmp_path / "single/split/labeled.txt").read_text()
    ea = _adaptor()
    ea.observe(*_scores(), n_images=18)
    ea.end_epoch()
    assert r0["tau1"] == r1["tau1"] == ea.tau1.tolist()
    assert r0["tau2"] == r1["tau2"] == ea.tau2.tolist()
    assert ea.tau2.tolist() != [0.6, 0.6, 0.6]  # the update did move the thresholds
    assert r0["means"] == r1["means"] == {"loss": 2.0, "only0": 5.0}
    assert r0["gathered"] == r1["gathered"] == [0, 10]


def test_torchrun_environment_detection(monkeypatch):
    full = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert D.launched_by_torchrun(full)
    assert not D.launched_by_torchrun({k: v for k, v in full.items() if k != "MASTER_ADDR"})
    assert not D.launched_by_torchrun({})
    assert D.launched_by_torchrun({D.DDP_CHILD_ENV: "1"})
    ctx = D.DistContext.from_env("cpu", env=full)
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (3, 1, 4, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    ctx = D.DistContext.from_env("cuda", env=full)  # 'cuda' under torchrun: LOCAL_RANK picks the GPU
    assert ctx.device == torch.device("cuda:1") and ctx.backend == "nccl"
    assert D.DistContext.from_env("cuda", env={}).device == torch.device("cuda:0")


def test_mean_dicts():
    assert D.mean_dicts([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}
    assert D.mean_dicts([]) == {}


# ------------------------------------------------------------------ two torchrun agents, end to end
def _two_nodes(args: list[str], logs: Path, tag: str, timeout: float = 420) -> list[str]:
    """Run ``effteacher train ARGS`` as 2 nodes x 1 process (two torchrun agents, c10d rendezvous).

    The timeout is generous: the suite may share its 2 cores with a running benchmark (240 s was hit that way)."""
    port = D.free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", f"{tag}{port}",
           "--max-restarts", "0", "--local-addr", "127.0.0.1", "-m", "effteacher", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400",  # no wrapped lines in the logs
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    files = [open(logs / f"{tag}-node{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env) for f in files]
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.time(), 1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    outs = [(logs / f"{tag}-node{i}.log").read_text() for i in range(2)]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


@pytest.mark.slow
def test_two_torchrun_nodes_train_once_and_resume(tiny_data, tmp_path):
    project = tmp_path / "runs"
    logs = tmp_path / "logs"
    logs.mkdir()
    outs = _two_nodes(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1",
                       *TINY, "--project", str(project), "--name", "mn"], logs, "train")
    run = project / "mn"
    assert [p.name for p in project.iterdir()] == ["mn"]  # one run folder, made by global rank 0
    assert sum(o.count("Results saved to") for o in outs) == 1
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "burn_in.pt", "last.pt"]
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2]  # written once per epoch, not once per rank
    assert float(_rows(run)[1]["unsup/obj_loss"]) > 0.0  # the SSOD epoch ran
    last = torch.load(run / "weights/last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 2 and last["which"] == "teacher"
    # the split is the one a single process makes (`effteacher split` with the same seed)
    from effteacher.data.split import run_split

    single = run_split(data=str(tiny_data), labeled="25%", seed=0, project=tmp_path / "split", name="one")
    assert (run / "split/labeled.txt").read_text() == (single / "labeled.txt").read_text()
    # --resume under torchrun: every rank loads last.pt and the run goes on in the same folder
    outs = _two_nodes(["--resume", str(run), "--epochs", "3", "--workers", "0"], logs, "resume")
    assert sum(o.count(f"resuming {run} from epoch 3") for o in outs) == 1
    assert [p.name for p in project.iterdir()] == ["mn"]
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3]
    last = torch.load(run / "weights/last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 3 and last["args"]["epochs"] == 3
