"""`effteacher rank`: score every unlabeled image of a dataset and choose the ``budget`` most worth labeling next.

Scores (``ssod.active``): teacher uncertainty, weak-vs-flip disagreement and class rarity against the
labeled counts, mixed by rank; then a diversity step (score-weighted greedy k-center on pooled neck
features, starting from the labeled images) so the picks are not near-duplicates of each other or of
what is already labeled. Writes ``to_label.txt`` (the picks, best first) and ``rank.csv`` (every image).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.markup import escape
from rich.table import Table

from effteacher.config.commands import RankOptions, with_overrides
from effteacher.data.dataset import scan_labeled, scan_unlabeled
from effteacher.data.records import ImageRecord
from effteacher.data.spec import load_spec
from effteacher.data.split import read_labeled_list
from effteacher.errors import ConfigError, DatasetError
from effteacher.labeling.pseudo_export import RELIABLE, UNCERTAIN, box_status, rule_from_checkpoint
from effteacher.labeling.scores import (
    class_rarity,
    class_rarity_weights,
    combine_scores,
    flip_disagreement,
    image_uncertainty,
    k_center_greedy,
    nearest_neighbour_scale,
    pairwise_dist,
    standardize_features,
)
from effteacher.labeling.teacher_pass import CLS, OBJ, PROBS, SCORE, PassConfig, load_model, teacher_pass
from effteacher.utils import dist
from effteacher.utils.console import console, info, warn
from effteacher.utils.files import atomic_write_text, run_folder

SCORE_WEIGHTS = {"uncertainty": 1.0, "disagreement": 1.0, "rarity": 1.0}
RANK_COLUMNS = ["pick", "image", "score", "uncertainty", "entropy", "margin", "objectness", "disagreement", "rarity",
                "novelty", "n_reliable", "n_uncertain", "source"]


@dataclass
class Candidates:
    """Images to rank and what is labeled: paths, where each comes from, labeled records (class counts)."""

    paths: list[str]
    sources: list[str]  # "train" (labels hidden by the run's split) or "unlabeled"
    labeled: list[ImageRecord]
    labeled_from: str
    notes: list[str] = field(default_factory=list)


def find_labeled(weights: str | Path, labeled: str | None) -> Path | None:
    """The labeled list: ``--labeled`` (a list file or a run/split folder), else the split beside the weights' run."""
    if labeled:
        p = Path(labeled).expanduser()
        for cand in (p, p / "labeled.txt", p / "split" / "labeled.txt"):
            if cand.is_file():
                return cand
        raise DatasetError(f"--labeled {labeled}: no such list file (or folder with labeled.txt / split/labeled.txt)")
    cand = Path(weights).resolve().parent.parent / "split" / "labeled.txt"
    return cand if cand.is_file() else None


def gather_candidates(data: str, weights: str | Path, labeled: str | None) -> tuple[Any, Candidates]:
    """(dataset spec, Candidates): train images outside the labeled list, plus the YAML's ``unlabeled`` images."""
    spec = load_spec(data)
    records = scan_labeled(spec.train, spec.names).records
    lst = find_labeled(weights, labeled)
    notes = []
    if lst is not None:
        idx = set(read_labeled_list(lst, records, spec.root))
        lab = [r for i, r in enumerate(records) if i in idx]
        rest = [r.path for i, r in enumerate(records) if i not in idx]
        labeled_from = str(lst)
    else:
        lab, rest, labeled_from = records, [], f"all of train ({spec.yaml_path})"
        notes.append("no labeled list found beside the weights (run/split/labeled.txt) and no --labeled: every train "
                     "image counts as labeled, only the YAML's 'unlabeled' images are ranked")
    extra = [r.path for r in scan_unlabeled(spec.unlabeled).records] if spec.unlabeled else []
    seen = set(rest) | {r.path for r in lab}
    extra = [p for p in extra if p not in seen]
    paths = rest + extra
    if not paths:
        raise DatasetError(f"{spec.yaml_path}: nothing to rank: every train image is labeled and there is no "
                           "'unlabeled' entry; add unlabeled: [folder/] to the YAML or pass --labeled with a smaller list")
    return spec, Candidates(paths, ["train"] * len(rest) + ["unlabeled"] * len(extra), lab, labeled_from, notes)


def score_images(preds: Sequence[Any], labeled_counts: np.ndarray, rule: Any, features: np.ndarray,
                 labeled_features: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-image score columns of ImagePredictions (with views).

    Uncertainty, disagreement and rarity read every box above the pass's NMS floor (a weak teacher's
    near-misses are information too); n_reliable / n_uncertain count boxes by the training thresholds.
    novelty: distance of the (standardised) features to the nearest labeled image.
    """
    rarity_w = class_rarity_weights(labeled_counts)
    cols: dict[str, list[float]] = {k: [] for k in ("uncertainty", "entropy", "margin", "objectness", "disagreement",
                                                    "rarity", "n_reliable", "n_uncertain")}
    for p in preds:
        d, (a, b) = p.dets, p.views
        st = box_status(d, rule)
        u = image_uncertainty(d[:, PROBS:], d[:, OBJ])
        for k in ("uncertainty", "entropy", "margin", "objectness"):
            cols[k].append(u[k])
        cols["disagreement"].append(flip_disagreement(a[:, :4], a[:, CLS], b[:, :4], b[:, CLS]))
        cols["rarity"].append(class_rarity(d[:, PROBS:], d[:, SCORE], rarity_w))
        cols["n_reliable"].append(float((st == RELIABLE).sum()))
        cols["n_uncertain"].append(float((st == UNCERTAIN).sum()))
    out = {k: np.asarray(v, np.float64) for k, v in cols.items()}
    if labeled_features is not None and len(labeled_features):
        out["novelty"] = np.concatenate([pairwise_dist(features[i:i + 1024], labeled_features).min(1)
                                         for i in range(0, len(features), 1024)])
    else:
        out["novelty"] = np.zeros(len(preds))
    return out


def select(scores: np.ndarray, features: np.ndarray, budget: int, labeled_features: np.ndarray | None) -> list[int]:
    """The ``budget`` picks: score-weighted greedy k-center whose distance saturates at the near-duplicate scale.

    An image counts as fully new when it is at least the median nearest-neighbour distance of the
    candidates away from every labeled image and every earlier pick; closer ones have their score
    scaled down in proportion, so near-duplicates wait until nothing better is left.
    """
    radius = nearest_neighbour_scale(features)
    radius = radius if np.isfinite(radius) and radius > 0 else np.inf
    return k_center_greedy(features, budget, centers=labeled_features, weights=scores + 1e-6, radius=radius)


def run_rank(weights: str | Path, *, options: RankOptions | None = None, **overrides: Any) -> Path:
    """`effteacher rank`: write to_label.txt and rank.csv for the unlabeled images of ``data``; returns the folder."""
    o = with_overrides(RankOptions, options, overrides)
    if o.budget < 1:
        raise ConfigError(f"--budget {o.budget}: rank at least 1 image")
    model, ckpt = load_model(weights, dist.select_device(o.device, None))
    spec, cand = gather_candidates(o.data, weights, o.labeled)
    names = [str(n) for n in ckpt["model"]["names"]]
    if len(names) != len(spec.names):
        raise DatasetError(f"{weights} predicts {len(names)} classes ({names}) but {spec.yaml_path} has "
                           f"{len(spec.names)}; use weights trained on this dataset")
    for n in cand.notes:
        warn(n)
    rule = rule_from_checkpoint(ckpt)
    ssod = dict((ckpt.get("args") or {}).get("ssod") or {})
    cfg = PassConfig(imgsz=int(o.imgsz or ckpt["model"]["imgsz"]), conf=float(min(0.05, rule.tau1.min())),
                     iou=float(ssod.get("nms_iou", 0.65)), agnostic=bool(ssod.get("agnostic_nms", False)),
                     flip=o.flip, views=True, batch=o.batch, workers=o.workers)
    info(escape(f"ranking {len(cand.paths)} unlabeled images against {len(cand.labeled)} labeled "
                f"({cand.labeled_from}) for a budget of {o.budget}"))
    feat_cfg = dataclasses.replace(cfg, flip=False, views=False)  # labeled images: features only
    lab_feats = np.stack([p.feature for p in teacher_pass(model, [r.path for r in cand.labeled], feat_cfg)]) \
        if cand.labeled else None
    preds = list(teacher_pass(model, cand.paths, cfg))
    if not preds:
        raise DatasetError(f"none of the {len(cand.paths)} unlabeled images could be read")
    nc = len(names)
    counts = np.bincount(np.concatenate([r.cls for r in cand.labeled] + [np.zeros(0, np.int64)]), minlength=nc)[:nc]
    feats = np.stack([p.feature for p in preds])
    if lab_feats is not None:
        feats, lab_feats = standardize_features(feats, lab_feats)
    else:
        (feats,) = standardize_features(feats)
    cols = score_images(preds, counts, rule, feats, lab_feats)
    cols["score"] = combine_scores(cols, SCORE_WEIGHTS)
    if o.budget > len(preds):
        warn(f"--budget {o.budget} is more than the {len(preds)} unlabeled images: all of them are listed")
    picks = select(cols["score"], feats, o.budget, lab_feats)
    with run_folder(o.project, o.name, o.exist_ok) as out:
        atomic_write_text(out / "to_label.txt", "".join(preds[i].path + "\n" for i in picks))
        pick_of = {i: n for n, i in enumerate(picks, 1)}
        source = dict(zip(cand.paths, cand.sources))
        order = picks + sorted((i for i in range(len(preds)) if i not in pick_of), key=lambda i: -cols["score"][i])
        with open(out / "rank.csv", "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(RANK_COLUMNS)
            for i in order:
                wr.writerow([pick_of.get(i, ""), preds[i].path, *(f"{cols[k][i]:.5f}" for k in RANK_COLUMNS[2:10]),
                             int(cols["n_reliable"][i]), int(cols["n_uncertain"][i]), source[preds[i].path]])
        t = Table(title=f"Top {min(len(picks), 10)} of {len(picks)} to label next")
        for col in ("#", "image", "score", "uncertainty", "disagreement", "rarity", "novelty"):
            t.add_column(col, justify="left" if col == "image" else "right")
        for n, i in enumerate(picks[:10], 1):
            t.add_row(str(n), escape(Path(preds[i].path).name), *(f"{cols[k][i]:.3f}" for k in
                                                                 ("score", "uncertainty", "disagreement", "rarity", "novelty")))
        console().print(t)
        info(escape(f"Results saved to {out}: to_label.txt ({len(picks)} images, best first), rank.csv (every image "
                    "with its scores). Label them, add them to your labeled list (--labeled FILE) and train again."))
        return out
