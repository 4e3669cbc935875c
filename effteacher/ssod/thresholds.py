"""Per-class pseudo-label thresholds tau1/tau2: fixed, Epoch Adaptor (distribution adaptation) and GMM."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import Tensor

from effteacher.errors import CheckpointError, ConfigError

GatherFn = Callable[[Tensor], Tensor]

# Epoch Adaptor bounds (documented choice): tau1 in [0.05, 0.5]; tau2 in [max(tau1 + 0.05, 0.25), 0.9].
# The floor keeps a minimum of pseudo boxes from being background-level noise and the ceiling
# stops a confident teacher from turning every detection into an uncertain one.
TAU1_BOUNDS = (0.05, 0.5)
TAU2_BOUNDS = (0.25, 0.9)
TAU_GAP = 0.05


def adaptor_thresholds(
    sorted_scores: Sequence[Tensor], n_c: Sequence[float], n_l: int, n_u: int, alpha: float = 0.6
) -> tuple[list[float | None], list[float | None]]:
    """The Epoch Adaptor formula (docs/method.md section 4), unbounded.

    sorted_scores: per class a 1-D tensor of the epoch's teacher scores sorted DESCENDING.
    n_c: labeled ground-truth boxes per class; n_l, n_u: labeled / unlabeled image counts.
    With k_c = n_c * n_u / n_l (the class-c boxes expected on the unlabeled images):
    ``tau1_c = P_c[floor(k_c)]`` and ``tau2_c = P_c[floor(alpha * k_c)]`` (0-based indices,
    clamped into [0, len - 1]). Returns (tau1, tau2) lists with None where a class has no scores
    or n_c == 0 (the caller keeps its previous value).
    """
    tau1: list[float | None] = []
    tau2: list[float | None] = []
    for scores, count in zip(sorted_scores, n_c):
        if scores.numel() == 0 or count <= 0 or n_l <= 0:
            tau1.append(None)
            tau2.append(None)
            continue
        k = count * n_u / n_l
        last = scores.numel() - 1
        tau1.append(float(scores[min(int(math.floor(k)), last)]))
        tau2.append(float(scores[min(int(math.floor(alpha * k)), last)]))
    return tau1, tau2


def gmm_threshold(scores: Tensor | np.ndarray, min_scores: int = 4) -> float | None:
    """Consistent-Teacher threshold from a 2-component 1-D Gaussian mixture, or None (use fallback).

    scores: (n,) teacher scores of one class. Fit ``GaussianMixture(2)`` with means initialised at
    min and max, equal weights and the data's variance; among the samples assigned to the
    high-mean component take the most likely one
    (highest mixture log-density); the threshold is the smallest high-component score that is >=
    that sample's score. None when fewer than ``min_scores`` scores or no spread.
    """
    x = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64).reshape(-1, 1)
    if x.shape[0] < min_scores or float(x.max() - x.min()) < 1e-6:
        return None
    gmm = GaussianMixture(
        n_components=2,
        weights_init=[0.5, 0.5],
        means_init=[[float(x.min())], [float(x.max())]],
        # both components start as wide as the data; a unit precision (variance 1, far wider than
        # scores in [0, 1]) leaves EM stuck with two overlapping components
        precisions_init=[[[1.0 / float(x.var())]], [[1.0 / float(x.var())]]],
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    high = int(np.argmax(gmm.means_[:, 0]))
    is_high = gmm.predict(x) == high
    if not is_high.any():
        return None
    dens = np.where(is_high, gmm.score_samples(x), -np.inf)
    best = x[int(np.argmax(dens)), 0]
    return float(x[is_high & (x[:, 0] >= best), 0].min())


class ThresholdStrategy:
    """Base: holds per-class tau1/tau2 and the current epoch's score buffer.

    The trainer calls ``observe`` with the teacher's post-NMS scores/classes of every batch and
    ``end_epoch`` once per SSOD epoch (on every rank: the buffers are gathered with ``all_gather``
    before recomputing, so all ranks end with identical thresholds).
    """

    kind = "base"

    def __init__(self, nc: int, tau1: float = 0.1, tau2: float = 0.6, all_gather: GatherFn | None = None) -> None:
        self.nc = int(nc)
        self.tau1 = torch.full((nc,), float(tau1))
        self.tau2 = torch.full((nc,), float(tau2))
        self.all_gather = all_gather
        self._scores: list[Tensor] = []
        self._classes: list[Tensor] = []
        self._n_images = 0

    @property
    def conf_floor(self) -> float:
        """Lowest score any class may need: use it as the NMS conf floor of the teacher."""
        return float(self.tau1.min())

    def observe(self, scores: Tensor, classes: Tensor, n_images: int = 0) -> None:
        """Accumulate (K,) scores and (K,) classes of one batch (plus its image count, optional).

        They stay on their device until the epoch ends (no host sync per batch on an accelerator).
        """
        self._scores.append(scores.detach().float().reshape(-1))
        self._classes.append(classes.detach().long().reshape(-1))
        self._n_images += int(n_images)

    def _buffers(self) -> tuple[Tensor, Tensor]:
        """The unfinished epoch's (scores, classes) on the CPU."""
        s = torch.cat([t.cpu() for t in self._scores]) if self._scores else torch.zeros(0)
        c = torch.cat([t.cpu() for t in self._classes]) if self._classes else torch.zeros(0, dtype=torch.long)
        return s, c

    def _epoch_buffers(self, all_gather: GatherFn | None) -> tuple[Tensor, Tensor, int]:
        s, c = self._buffers()
        n = torch.tensor([float(self._n_images)])
        if all_gather is not None:
            s, c, n = all_gather(s), all_gather(c), all_gather(n)
        self._scores, self._classes, self._n_images = [], [], 0
        return s.float().cpu(), c.long().cpu(), int(n.sum())

    def _recompute(self, scores: Tensor, classes: Tensor, n_images: int) -> None:
        """Strategy-specific update of ``tau1``/``tau2``."""

    def end_epoch(self, all_gather: GatherFn | None = None) -> dict[str, Any]:
        """Gather the epoch's scores, recompute thresholds, clear the buffer; returns a summary.

        all_gather: concatenates a 1-D tensor across DDP ranks (e.g. ``effteacher.utils.dist.all_gather_tensor``
        bound to the context); overrides the one given at construction; None = single process.
        """
        scores, classes, n_images = self._epoch_buffers(all_gather or self.all_gather)
        self._recompute(scores, classes, n_images)
        return {
            "tau1": self.tau1.tolist(),
            "tau2": self.tau2.tolist(),
            "tau1_mean": float(self.tau1.mean()),
            "tau2_mean": float(self.tau2.mean()),
            "n_scores": int(scores.numel()),
            "per_class_scores": torch.bincount(classes.clamp(0, self.nc - 1), minlength=self.nc).tolist()
            if classes.numel()
            else [0] * self.nc,
        }

    def state_dict(self) -> dict[str, Any]:
        """Thresholds and the unfinished epoch's buffer (plain tensors) for exact resume."""
        scores, classes = self._buffers()
        return {
            "kind": self.kind,
            "tau1": self.tau1.clone(),
            "tau2": self.tau2.clone(),
            "scores": scores,
            "classes": classes,
            "n_images": int(self._n_images),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved; the strategy kind and class count must match."""
        if state.get("kind") != self.kind or len(state["tau1"]) != self.nc:
            raise CheckpointError(
                f"threshold state is for '{state.get('kind')}' with {len(state['tau1'])} classes, not "
                f"'{self.kind}' with {self.nc}: resume with the same --thresholds and dataset"
            )
        self.tau1 = torch.as_tensor(state["tau1"], dtype=torch.float32).clone()
        self.tau2 = torch.as_tensor(state["tau2"], dtype=torch.float32).clone()
        self._scores = [torch.as_tensor(state["scores"], dtype=torch.float32)]
        self._classes = [torch.as_tensor(state["classes"], dtype=torch.long)]
        self._n_images = int(state["n_images"])


class FixedThresholds(ThresholdStrategy):
    """Constant tau1/tau2 for every class (defaults 0.1 / 0.6)."""

    kind = "fixed"


class EpochAdaptorThresholds(ThresholdStrategy):
    """Efficient Teacher's distribution adaptation: per-class tau1/tau2 from last epoch's scores.

    n_c: labeled GT boxes per class; n_labeled_images / n_unlabeled_images: N_l and N_u. If
    ``observe`` is given image counts, the observed count replaces N_u (partial epochs, DDP).
    Results are bounded: tau1 in ``tau1_bounds``, tau2 in [max(tau1 + gap, tau2_bounds[0]),
    tau2_bounds[1]]. Classes without scores keep their previous values, classes with n_c = 0
    keep the initial ones. ``conf_floor`` is tau1's lower bound, so that NMS keeps enough low
    scores for tau1 to move down again.
    """

    kind = "adaptor"

    def __init__(
        self,
        nc: int,
        n_c: Sequence[float] | Tensor,
        n_labeled_images: int,
        n_unlabeled_images: int,
        alpha: float = 0.6,
        tau1_init: float = 0.1,
        tau2_init: float = 0.6,
        tau1_bounds: tuple[float, float] = TAU1_BOUNDS,
        tau2_bounds: tuple[float, float] = TAU2_BOUNDS,
        gap: float = TAU_GAP,
        all_gather: GatherFn | None = None,
    ) -> None:
        super().__init__(nc, tau1_init, tau2_init, all_gather)
        self.n_c = [float(v) for v in (n_c.tolist() if isinstance(n_c, Tensor) else n_c)]
        if len(self.n_c) != nc:
            raise ConfigError(f"Epoch Adaptor: {len(self.n_c)} class counts for {nc} classes")
        self.n_l, self.n_u, self.alpha = int(n_labeled_images), int(n_unlabeled_images), float(alpha)
        self.tau1_bounds, self.tau2_bounds, self.gap = tau1_bounds, tau2_bounds, float(gap)

    @property
    def conf_floor(self) -> float:
        return float(self.tau1_bounds[0])

    def _recompute(self, scores: Tensor, classes: Tensor, n_images: int) -> None:
        per_class = [scores[classes == c].sort(descending=True).values for c in range(self.nc)]
        n_u = n_images if n_images > 0 else self.n_u
        t1, t2 = adaptor_thresholds(per_class, self.n_c, self.n_l, n_u, self.alpha)
        lo1, hi1 = self.tau1_bounds
        for c in range(self.nc):
            if t1[c] is None:
                continue
            a = min(max(t1[c], lo1), hi1)
            b = min(max(t2[c], a + self.gap, self.tau2_bounds[0]), self.tau2_bounds[1])
            self.tau1[c], self.tau2[c] = a, b


class GMMThresholds(ThresholdStrategy):
    """Consistent-Teacher: tau2_c from a GMM on the last ``window`` scores of class c; tau1 fixed.

    The per-class windows persist across epochs (they are part of ``state_dict``). Classes with
    fewer than 4 scores use ``tau_fallback``. tau2 is kept >= tau1.
    """

    kind = "gmm"

    def __init__(
        self,
        nc: int,
        tau_fallback: float = 0.6,
        window: int = 100,
        tau1: float = 0.1,
        all_gather: GatherFn | None = None,
    ) -> None:
        super().__init__(nc, tau1, tau_fallback, all_gather)
        self.tau_fallback, self.window = float(tau_fallback), int(window)
        self.queues: list[Tensor] = [torch.zeros(0) for _ in range(nc)]

    def _recompute(self, scores: Tensor, classes: Tensor, n_images: int) -> None:
        for c in range(self.nc):
            self.queues[c] = torch.cat([self.queues[c], scores[classes == c]])[-self.window :]
            t = gmm_threshold(self.queues[c])
            self.tau2[c] = max(self.tau_fallback if t is None else t, float(self.tau1[c]))

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"queues": [q.clone() for q in self.queues]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queues = [torch.as_tensor(q, dtype=torch.float32).clone() for q in state["queues"]]


def build_thresholds(
    kind: str,
    nc: int,
    *,
    tau1: float = 0.1,
    tau2: float = 0.6,
    alpha: float = 0.6,
    n_c: Sequence[float] | Tensor | None = None,
    n_labeled: int = 0,
    n_unlabeled: int = 0,
    window: int = 100,
    all_gather: GatherFn | None = None,
) -> ThresholdStrategy:
    """Build the strategy named by ``--thresholds`` (``fixed``, ``adaptor`` or ``gmm``).

    n_c: labeled GT boxes per class (adaptor); n_labeled / n_unlabeled: image counts (adaptor);
    tau2 is the GMM fallback; window: GMM scores kept per class.
    """
    if kind == "fixed":
        return FixedThresholds(nc, tau1, tau2, all_gather=all_gather)
    if kind == "adaptor":
        if n_c is None or n_labeled <= 0:
            raise ConfigError("--thresholds adaptor needs labeled class counts and a non-empty labeled split")
        return EpochAdaptorThresholds(
            nc, n_c, n_labeled, n_unlabeled, alpha, tau1, tau2, all_gather=all_gather
        )
    if kind == "gmm":
        return GMMThresholds(nc, tau_fallback=tau2, window=window, tau1=tau1, all_gather=all_gather)
    raise ConfigError(f"unknown --thresholds '{kind}': use fixed, adaptor or gmm")
