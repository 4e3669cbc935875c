"""CPU training precision: bf16 autocast only where the CPU has native bf16, fp32 elsewhere and on request."""

from __future__ import annotations

import pytest
import torch

from effteacher.train import precision
from effteacher.train.precision import autocast, cpu_autocast_dtype

CPU = torch.device("cpu")


@pytest.fixture
def no_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without avx512_bf16 / amx_bf16 (e.g. AVX2-only)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})


@pytest.fixture
def with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})


def test_auto_is_fp32_without_native_bf16(no_bf16: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_autocast_dtype("auto", CPU) is None
    assert "bf16" not in capsys.readouterr().err  # auto falls back silently


def test_bf16_requested_without_native_bf16_warns_and_falls_back(no_bf16: None,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_autocast_dtype("bf16", CPU) is None
    out = capsys.readouterr()
    assert "no native bf16" in out.err + out.out and "fp32" in out.err + out.out


def test_auto_and_bf16_use_bf16_where_supported(with_bf16: None) -> None:
    assert cpu_autocast_dtype("auto", CPU) is torch.bfloat16
    assert cpu_autocast_dtype("bf16", CPU) is torch.bfloat16
    assert cpu_autocast_dtype("fp32", CPU) is None


def test_precision_is_a_cpu_setting(with_bf16: None) -> None:
    assert cpu_autocast_dtype("bf16", torch.device("cuda", 0)) is None  # CUDA: the amp switch decides


def test_autocast_runs_convs_in_bf16_and_fp32_without() -> None:
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8)
    with autocast(CPU, torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    with autocast(CPU, None):
        assert conv(x).dtype == torch.float32


@pytest.mark.slow
def test_training_step_follows_precision_and_channels_last(tiny_data, tmp_path, with_bf16: None) -> None:
    """The trainer's parts: bf16 autocast and channels-last inputs when asked, fp32 contiguous when not."""
    from effteacher.config import defaults_for, replace
    from effteacher.train.trainer import Trainer
    from effteacher.utils.dist import DistContext

    for prec, cl, dtype in (("bf16", True, torch.bfloat16), ("fp32", False, None)):
        cfg = replace(defaults_for("sample"), data=str(tiny_data), imgsz=64, batch=2, workers=0, supervised=True,
                      labeled="100%", epochs=1, project=str(tmp_path), name=prec, precision=prec, channels_last=cl)
        tr = Trainer(cfg, DistContext.from_env("cpu"))
        tr.setup()
        p = tr.parts
        assert p.autocast_dtype is dtype and p.channels_last is cl
        x = p.to_input(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
        assert x.is_contiguous(memory_format=torch.channels_last) is cl
        with p.autocast():
            raw = p.train_model(x)
        assert raw[0].dtype == (dtype or torch.float32)
        loss, _ = p.loss_sup(raw, torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2]]))
        assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_losses_run_in_fp32_under_bf16(tiny_data, tmp_path, with_bf16: None) -> None:
    """bf16 is for the network only: the supervised and the SSOD step hand fp32 outputs to their losses (box
    regression in bf16 has 8 bits of mantissa: a 1-pixel step at 256 px)."""
    from effteacher.config import defaults_for, replace
    from effteacher.train.trainer import Trainer
    from effteacher.utils.dist import DistContext

    cfg = replace(defaults_for("sample"), data=str(tiny_data), imgsz=64, batch=2, workers=0, labeled="50%",
                  epochs=2, burn_in=1, project=str(tmp_path), name="bf16", precision="bf16", channels_last=True)
    tr = Trainer(cfg, DistContext.from_env("cpu"))
    tr.setup()
    seen: list[torch.dtype] = []

    def spy(loss):
        def call(preds, *a, **k):
            seen.extend(p.dtype for p in preds)
            return loss(preds, *a, **k)
        return call

    p = tr.parts
    p.loss_sup = spy(p.loss_sup)  # type: ignore[method-assign]
    sup = tr.phase_for(0)
    sup.step(next(iter(sup.loader())), 0, 0)
    assert seen and set(seen) == {torch.float32}
    seen.clear()
    ssod = tr.phase_for(1)
    ssod.state.loss_unsup = spy(ssod.state.loss_unsup)
    step = ssod.step(next(iter(ssod.loader())), 1, 0)
    assert seen and set(seen) == {torch.float32} and torch.isfinite(step.loss)
    tr.close()
