"""Transfer learning between detectors: copy matching tensors, keep head rows of classes present in both sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def head_output_keys(model: nn.Module) -> list[str]:
    """state_dict keys of each level's last head conv (weight, bias): the tensors laid out as na x (5 + nc) rows."""
    keys = []
    for i, h in enumerate(model.head):
        last = h if isinstance(h, nn.Conv2d) else h[-1]
        prefix = f"head.{i}" if isinstance(h, nn.Conv2d) else f"head.{i}.{len(h) - 1}"
        keys += [f"{prefix}.weight"] + ([f"{prefix}.bias"] if last.bias is not None else [])
    return keys


def _key(name: str) -> str:
    return str(name).strip().casefold()


def class_map(src_names: list[str], dst_names: list[str]) -> list[int | None]:
    """For each destination class, the index of the source class with the same name (case-insensitive), or None."""
    index: dict[str, int] = {}
    for i, n in enumerate(src_names):
        index.setdefault(_key(n), i)
    return [index.get(_key(n)) for n in dst_names]


def remap_head_rows(src: torch.Tensor, dst: torch.Tensor, na: int, cmap: list[int | None]) -> torch.Tensor:
    """A copy of ``dst`` (na*(5+nc_dst), ...) with box/objectness rows and the mapped class rows from ``src``.

    ``src``: (na*(5+nc_src), ...); row ``a*(5+nc) + r`` is output r of anchor a (r < 4 box, 4 objectness,
    5 + c class c). ``cmap[j]``: source class of destination class j, or None to keep ``dst``'s row.
    """
    no_s, no_d = src.shape[0] // na, dst.shape[0] // na
    if src.shape[0] % na or dst.shape[0] % na or src.shape[1:] != dst.shape[1:] or no_d - 5 != len(cmap):
        raise ValueError(f"head tensors {tuple(src.shape)} -> {tuple(dst.shape)} do not fit {na} anchors, {len(cmap)} classes")
    out = dst.detach().clone()
    s = src.detach().to(out.dtype)
    for a in range(na):
        out[a * no_d:a * no_d + 5] = s[a * no_s:a * no_s + 5]
        for j, i in enumerate(cmap):
            if i is not None and i < no_s - 5:
                out[a * no_d + 5 + j] = s[a * no_s + 5 + i]
    return out


@dataclass
class Transfer:
    """Result of :func:`transfer_state`: the tensors to load and what was kept."""

    state: dict[str, torch.Tensor]
    n: int  # destination tensors given (fully or in part) by the source
    total: int  # destination tensors
    classes_kept: int  # destination classes whose head rows came from the source
    nc: int

    def summary(self) -> str:
        line = f"transferred {self.n}/{self.total} tensors"
        if self.classes_kept < self.nc:
            line += f"; class outputs: {self.classes_kept}/{self.nc} kept by name, the others re-initialised"
        return line


def transfer_state(src: dict[str, torch.Tensor], src_names: list[str], model: nn.Module,
                   dst_names: list[str]) -> Transfer:
    """What of ``src`` (a Detector state_dict with classes ``src_names``) to load into ``model`` (classes ``dst_names``).

    Tensors with the same key and shape are copied, except the last head convs: there box and objectness
    rows are always copied and each class row only when that class name exists in ``src_names``
    (re-ordered as needed); other class rows keep the model's fresh initialisation (with its bias prior).
    """
    dst = model.state_dict()
    na = int(getattr(model, "na", 3))
    head = set(head_output_keys(model))
    same = [_key(n) for n in src_names] == [_key(n) for n in dst_names]
    cmap: list[int | None] = list(range(len(dst_names))) if same else class_map(src_names, dst_names)
    out: dict[str, torch.Tensor] = {}
    for k, v in dst.items():
        s = src.get(k)
        if not isinstance(s, torch.Tensor):
            continue
        if k in head and not (same and s.shape == v.shape):
            try:
                out[k] = remap_head_rows(s, v, na, cmap)
            except ValueError:
                continue
        elif s.shape == v.shape:
            out[k] = s.detach().to(v.dtype)
    kept = sum(i is not None for i in cmap) if any(k in out for k in head) else 0
    return Transfer(out, len(out), len(dst), kept, len(dst_names))
