"""Device parsing and errors, a real 2-process gloo group (collectives), and the DDP relaunch."""

import os
import textwrap

import pytest
import torch
import torch.multiprocessing as mp

from effteacher.utils import dist as D
from effteacher.errors import DeviceError


def test_parse_devices():
    assert D.parse_devices("cpu") == []
    assert D.parse_devices("") == []
    assert D.parse_devices("0") == [0]
    assert D.parse_devices("0,1") == [0, 1]
    assert D.parse_devices(" 2, 3 ") == [2, 3]
    assert D.parse_devices("cuda:1") == [1]
    assert D.parse_devices("CUDA") == [0]
    for bad in ("gpu", "0,,1", "-1", "0,0", "cuda:x"):
        with pytest.raises(DeviceError):
            D.parse_devices(bad)


def test_select_device_cpu():
    assert D.select_device("cpu") == torch.device("cpu")
    assert D.select_device("cpu", batch=8, nproc=2) == torch.device("cpu")
    with pytest.raises(DeviceError, match="not a multiple"):
        D.select_device("cpu", batch=7, nproc=2)


def test_select_device_missing_gpu_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"CUDA device 7 requested but CUDA is not available.*use --device cpu"):
        D.select_device("7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"CUDA device 7 requested but only 2 visible.*use --device cpu"):
        D.select_device("7")
    with pytest.raises(DeviceError, match="CUDA device 2 requested"):
        D.select_device("0,2")


def test_select_device_fake_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert D.select_device("1") == torch.device("cuda:1")
    assert D.select_device("0,1", batch=16) == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"--batch 15 is not a multiple.*2 GPUs.*--batch 14"):
        D.select_device("0,1", batch=15)


def test_dist_context_from_env(monkeypatch):
    ctx = D.DistContext.from_env("cpu", env={})
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.backend) == (-1, -1, 1, "gloo")
    assert ctx.is_main and not ctx.distributed
    ctx = D.DistContext.from_env("cpu", env={"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert (ctx.rank, ctx.world_size, ctx.device.type) == (1, 2, "cpu") and not ctx.is_main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    ctx = D.DistContext.from_env("2,3", env={"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert ctx.device == torch.device("cuda:3") and ctx.backend == "nccl"
    with pytest.raises(DeviceError, match="one GPU per process"):
        D.DistContext.from_env("0", env={"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})


def test_single_process_collectives_are_identity():
    ctx = D.DistContext()
    t = torch.arange(3.0)
    assert D.all_gather_tensor(t, ctx) is t
    assert torch.equal(D.reduce_mean(t, ctx), t)
    assert D.broadcast_object({"a": 1}, ctx) == {"a": 1}
    with D.torch_distributed_zero_first(ctx):
        pass


def test_seed_everything_rank_offsets():
    assert D.seed_everything(3, rank=-1) == 3
    a = torch.rand(3)
    D.seed_everything(3, rank=0)
    assert torch.equal(torch.rand(3), a)
    assert D.seed_everything(3, rank=1) == 4


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    ctx = D.DistContext.from_env("cpu")
    D.init_distributed(ctx, timeout_s=60)
    try:
        # rank 0 has 3 values, rank 1 has 1 value; 2-D too; and an empty tensor on rank 1
        t = torch.arange(3, dtype=torch.float32) + 10 if rank == 0 else torch.tensor([99.0])
        g = D.all_gather_tensor(t, ctx)
        t2 = torch.full((rank + 1, 2), rank, dtype=torch.int64)
        g2 = D.all_gather_tensor(t2, ctx)
        e = torch.ones(2) if rank == 0 else torch.zeros(0)
        g3 = D.all_gather_tensor(e, ctx)
        m = D.reduce_mean(torch.tensor([1.0, 2.0]) * (rank + 1), ctx)
        obj = D.broadcast_object({"stop": True, "r": rank} if rank == 0 else None, ctx)
        with D.torch_distributed_zero_first(ctx):  # must not deadlock
            pass
        torch.save({"g": g, "g2": g2, "g3": g3, "m": m, "obj": obj, "main": ctx.is_main},
                   os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        D.cleanup()


@pytest.mark.slow
def test_gloo_two_processes(tmp_path):
    port = D.free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "r0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "r1.pt", weights_only=True)
    for r in (r0, r1):
        assert torch.equal(r["g"], torch.tensor([10.0, 11.0, 12.0, 99.0]))
        assert torch.equal(r["g2"], torch.tensor([[0, 0], [1, 1], [1, 1]]))
        assert torch.equal(r["g3"], torch.ones(2))
        torch.testing.assert_close(r["m"], torch.tensor([1.5, 3.0]))
        assert r["obj"] == {"stop": True, "r": 0}
    assert r0["main"] and not r1["main"]


@pytest.mark.slow
def test_relaunch_ddp_runs_children_once(tmp_path):
    probe = tmp_path / "ddpprobe.py"
    probe.write_text(textwrap.dedent(
        """
        import os, sys
        out = sys.argv[1]
        with open(os.path.join(out, "rank" + os.environ["RANK"]), "w") as f:
            f.write(" ".join([os.environ["WORLD_SIZE"], os.environ.get("EFFTEACHER_DDP_CHILD", "")] + sys.argv[2:]))
        sys.exit(3 if "fail" in sys.argv else 0)
        """
    ))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS="1")
    rc = D.relaunch_ddp([str(tmp_path), "train", "--x"], 2, module="ddpprobe", env=env)
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("rank*")) == ["rank0", "rank1"]
    assert (tmp_path / "rank1").read_text() == "2 1 train --x"
    assert "EFFTEACHER_DDP_CHILD" not in os.environ  # the parent env is untouched
    assert D.relaunch_ddp([str(tmp_path), "fail"], 1, module="ddpprobe", env=env) != 0
