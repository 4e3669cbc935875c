"""In-graph NMS for export: decoded predictions -> a fixed, zero-padded (B, max_det, 6) detection tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn


class _NonMaxSuppression(torch.autograd.Function):
    """Per-image, per-class greedy NMS with ONNX ``NonMaxSuppression`` semantics.

    Eager: torchvision's ``batched_nms`` per image. Export: one ONNX ``NonMaxSuppression`` node
    (opset >= 11), which onnxruntime and TensorRT (>= 8.5) both run natively, so no per-class
    coordinate offsets are needed and float32 precision is not lost on large batches.
    """

    @staticmethod
    def forward(  # noqa: ANN001 - ctx is autograd's
        ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, conf: float
    ) -> Tensor:
        """boxes (B, A, 4) xyxy, scores (B, C, A) -> selected (K, 3) int64 [batch, class, box].

        Boxes with score <= conf are dropped (as ONNX's score_threshold). The per-class cap
        ``max_per_class`` is not applied here: the caller keeps only the global top ``max_det``
        per image, which no box beyond its class's first ``max_det`` can enter, so the result is
        the same.
        """
        out = []
        for b in range(boxes.shape[0]):
            c, a = (scores[b] > conf).nonzero(as_tuple=True)
            keep = torchvision.ops.batched_nms(boxes[b, a].float(), scores[b, c, a].float(), c, iou)
            out.append(torch.stack([torch.full_like(keep, b), c[keep], a[keep]], 1))
        return torch.cat(out, 0) if out else boxes.new_zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, conf: float):  # noqa: ANN001, ANN205
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([conf], dtype=torch.float32)),
            center_point_box_i=0,
        )


class NMSHead(nn.Module):
    """Decoded predictions (B, A, 5+nc) -> detections (B, max_det, 6) ``x1 y1 x2 y2 score cls``.

    score = obj * best class probability, one class per box (as ``non_max_suppression`` with
    ``multi_label=False``); per-class NMS at ``iou``; boxes with score <= ``conf`` dropped. Rows are
    sorted by score, unused rows are all zeros (a zero score marks padding). Everything after the
    NMS node is fixed-size tensor maths (scatter into a dense score map, then top-k), so the graph
    has a static output shape for onnxruntime and TensorRT.
    """

    def __init__(self, max_det: int = 100, iou: float = 0.45, conf: float = 0.25) -> None:
        super().__init__()
        if max_det < 1:
            raise ValueError(f"max_det must be >= 1, got {max_det}")
        self.max_det, self.iou, self.conf = int(max_det), float(iou), float(conf)

    def forward(self, pred: Tensor) -> Tensor:
        """pred (B, A, 5+nc) cx cy w h obj cls... in pixels -> (B, max_det, 6)."""
        xy, wh = pred[..., 0:2], pred[..., 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)  # (B, A, 4) xyxy
        cls_scores = pred[..., 5:] * pred[..., 4:5]  # (B, A, nc)
        score, cls = cls_scores.max(-1)  # (B, A)
        # only the best class of each box competes in NMS: the other classes get score 0 (< conf)
        one_class = torch.zeros_like(cls_scores).scatter(-1, cls.unsqueeze(-1), score.unsqueeze(-1))
        # ONNX NonMaxSuppression takes float32 only (an fp16 graph casts here)
        selected = _NonMaxSuppression.apply(
            boxes.float(), one_class.transpose(1, 2).float(), self.max_det, self.iou, self.conf
        )
        flat = selected[:, 0] * score.shape[1] + selected[:, 2]  # (K,) index into the flattened (B*A)
        kept = torch.zeros_like(score).flatten().scatter(0, flat, score.flatten().gather(0, flat))
        # pad with max_det zero columns so top-k is valid even when A < max_det
        kept = F.pad(kept.view_as(score), (0, self.max_det))  # (B, A + max_det)
        top_score, top_idx = kept.topk(self.max_det, dim=1)  # (B, max_det)
        boxes = F.pad(boxes, (0, 0, 0, self.max_det)).gather(1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        cls = F.pad(cls.to(pred.dtype), (0, self.max_det)).gather(1, top_idx)
        valid = (top_score > 0).to(pred.dtype).unsqueeze(-1)
        return torch.cat([boxes, top_score.unsqueeze(-1), cls.unsqueeze(-1)], -1) * valid


class DeployWithNMS(nn.Module):
    """A deploy model (x -> (B, A, 5+nc) decoded) followed by ``NMSHead``: x -> (B, max_det, 6)."""

    def __init__(self, model: nn.Module, max_det: int = 100, iou: float = 0.45, conf: float = 0.25) -> None:
        super().__init__()
        self.model = model
        self.nms = NMSHead(max_det, iou, conf)

    def forward(self, x: Tensor) -> Tensor:
        return self.nms(self.model(x))
