"""benchmarks/gpu_check.py: the smoke mode on CPU end to end, and its AMP line on CUDA-shaped inputs."""

from __future__ import annotations

import pytest
import torch

from benchmarks import common, gpu_check

NAMES = ["cuda", "nccl", "amp train", "onnx", "tensorrt", "predict", "train speed"]


@pytest.mark.slow
def test_smoke_on_cpu_prints_one_line_per_check(tmp_path, capsys):
    before = common.RESULTS.read_text()
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    assert [line.split(":")[0] for line in out[:-1]] == NAMES
    lines = dict(line.split(": ", 1) for line in out[:-1])
    assert not any("FAILED" in v for v in lines.values()), out
    assert lines["nccl"].startswith("skipped: needs CUDA")
    assert "losses finite" in lines["amp train"] and "1 SSOD" in lines["amp train"]
    assert "not applicable on CPU" in lines["amp train"]
    assert "fp32" in lines["onnx"] and "CPUExecutionProvider" in lines["onnx"] and "parity boxes" in lines["onnx"]
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert lines["tensorrt"].startswith("skipped: not installed")
    assert "batch 1 " in lines["predict"] and "batch 4 " in lines["predict"]
    assert float(lines["predict"].split("batch 1 ")[1].split(" img/s")[0]) > 0
    assert "n fp32 " in lines["train speed"]
    assert out[-1].startswith("gpu_check (all passed")
    rows = (tmp_path / "runs/amp/results.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    assert (tmp_path / "gpu_check.log").stat().st_size > 0  # the engine's own output went there
    assert common.RESULTS.read_text() == before  # smoke runs never record


def _rows(box: str = "0.05") -> list[dict[str, str]]:
    base = {"epoch": "1", "train/iterations": "2", "train/box_loss": box, "train/obj_loss": "0.02",
            "train/cls_loss": "0.03", "unsup/obj_loss": "0.0", "unsup/box_loss": "0.0", "unsup/cls_loss": "0.0"}
    return [base, {**base, "epoch": "2", "unsup/obj_loss": "0.01"}]


def test_amp_line_reports_the_self_check():
    cuda = torch.device("cuda:0")
    line, short = gpu_check.amp_line(cuda, True, _rows(), 12.0, gpu_check.FULL)
    assert "AMP self-check passed" in line and short.endswith("self-check passed")
    line, short = gpu_check.amp_line(cuda, False, _rows(), 12.0, gpu_check.FULL)
    assert "fell back to fp32" in line and "FAILED" in short
    with pytest.raises(RuntimeError, match="non-finite"):
        gpu_check.amp_line(cuda, True, _rows("nan"), 1.0, gpu_check.FULL)
    with pytest.raises(RuntimeError, match="2 epochs"):
        gpu_check.amp_line(cuda, True, _rows()[:1], 1.0, gpu_check.FULL)
