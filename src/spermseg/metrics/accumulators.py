"""Streaming evaluation of soft masks: every measure of the paper for full / head / tail in one pass.

:class:`SegmentationAccumulator` is the object the training engine, the reproduce pipeline and
``spermseg evaluate`` share (contract in docs/dev/CONVENTIONS.md)::

    acc = SegmentationAccumulator(mode="fast", kernels=(3, 5), parts=True)
    for prob, ref in pairs:          # prob (H, W) float in [0, 1]; ref bool (H, W) or {"full", "head", "tail"}
        acc.update(prob, ref)
    acc.result()  # {"n_images", "mode", "full": M, "head": M | None, "tail": M | None}

with ``M = {"ap", "iou_0.5", "iou_opt", "t_opt", "brier", "brier_pos", "brier_neg", "iou_prime_opt",
"iou_prime_0.5"}`` and each ``iou_prime_*`` ``{"3": {"r", "p", "iou"}, "5": {...}}`` (IoU' of the prediction
binarized at t_opt and at 0.5).

* ``mode="fast"``: constant memory, histograms of 2**16 bins (exact for 8/16-bit soft masks, AP within ~1e-4 of
  exact for float scores); IoU' at every threshold through grey morphology (see :mod:`spermseg.metrics.overlap`).
* ``mode="exact"``: keeps the masks, sorts every score (AP equals scikit-learn), binarizes at t_opt and 0.5 and
  computes IoU' literally. Memory grows with the set (about 6 bytes per pixel).
* ``kernels=()`` skips IoU' (cheap validation during training).
* ``per_image=True``: every image is scored alone; ``result()`` gives the mean over images in the usual
  places, the standard deviation under ``"std"`` and every image's result under ``"images"``.

Head and tail use the region rule of :mod:`spermseg.metrics.parts`: the prediction is restricted to the part's
region (pixel measures count region pixels only; for IoU' no pixel outside the region is ever predicted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spermseg.metrics.calibration import BrierAccumulator
from spermseg.metrics.overlap import IoUPrimeCounts, IoUPrimeHistogram, check_kernel, iou_prime_counts, skeleton
from spermseg.metrics.parts import part_regions, restrict
from spermseg.metrics.ranking import (
    DEFAULT_BINS,
    ScoreHistogram,
    average_precision_from_counts,
    iou_from_counts,
    iou_opt_from_counts,
    quantize,
    rank_counts,
    safe_ratio,
)

__all__ = ["PARTS", "SegmentationAccumulator", "metric_keys"]

PARTS = ("full", "head", "tail")
_SCALAR_KEYS = ("ap", "iou_0.5", "iou_opt", "t_opt", "brier", "brier_pos", "brier_neg")


def metric_keys() -> tuple[str, ...]:
    """The keys of one part's result M (scalars, then the two IoU' entries)."""
    return (*_SCALAR_KEYS, "iou_prime_opt", "iou_prime_0.5")


def _as_refs(ref: np.ndarray | dict[str, Any], shape: tuple[int, ...]) -> dict[str, np.ndarray | None]:
    """Normalize ``ref`` to ``{"full", "head", "tail"}`` bool arrays (None when a part is missing)."""
    if isinstance(ref, dict):
        unknown = set(ref) - set(PARTS)
        if unknown:
            raise ValueError(f"reference keys must be among {PARTS}, got {sorted(unknown)}")
        out: dict[str, np.ndarray | None] = {
            p: None if ref.get(p) is None else np.asarray(ref[p], dtype=bool) for p in PARTS
        }
        if out["full"] is None:
            if out["head"] is None or out["tail"] is None:
                raise ValueError("a reference dict needs 'full' or both 'head' and 'tail'")
            out["full"] = out["head"] | out["tail"]
    else:
        out = {"full": np.asarray(ref, dtype=bool), "head": None, "tail": None}
    for part, m in out.items():
        if m is not None and m.shape != shape:
            raise ValueError(f"reference {part} mask has shape {m.shape}, prediction has {shape}")
    return out


def _check_prob(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim != 2:
        raise ValueError(f"soft mask must be 2-D (H, W), got shape {p.shape}")
    p = p.astype(np.float32, copy=False)
    lo, hi = float(p.min(initial=0.0)), float(p.max(initial=0.0))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"soft mask values must be finite and in [0, 1], got range [{lo}, {hi}]")
    return p


class _FastPart:
    """Fast-mode state of one part: score histogram, Brier sums and IoU' histograms per kernel."""

    def __init__(self, kernels: tuple[int, ...], n_bins: int) -> None:
        self.hist = ScoreHistogram(n_bins)
        self.brier = BrierAccumulator()
        self.iou_prime = {k: IoUPrimeHistogram(k, n_bins) for k in kernels}

    def update(self, prob: np.ndarray, idx: np.ndarray, ref: np.ndarray, region: np.ndarray | None) -> None:
        if region is None:
            self.hist.update_indices(idx.ravel(), ref.ravel())
            self.brier.update(prob, ref)
            scored = prob
        else:
            self.hist.update_indices(idx[region], ref[region])
            self.brier.update(prob[region], ref[region])
            scored = restrict(prob, region)
        if self.iou_prime:
            skel = skeleton(ref)
            for h in self.iou_prime.values():
                h.update(scored, ref, skel)

    def result(self) -> dict[str, Any]:
        c = self.hist.counts()
        nb = self.hist.n_bins
        iou_opt, t_opt = iou_opt_from_counts(c)
        half = nb // 2  # the threshold 0.5 is the bin edge n_bins / 2 exactly
        tp5, pp5 = int(self.hist.pos[half:].sum()), int(self.hist.tot[half:].sum())
        n_pos = c.n_pos
        out: dict[str, Any] = {
            "ap": average_precision_from_counts(c),
            "iou_0.5": float(iou_from_counts(np.array([tp5]), np.array([pp5]), n_pos)[0]),
            "iou_opt": iou_opt,
            "t_opt": t_opt,
            **self.brier.result(),
        }
        i_opt = round(t_opt * nb) if math.isfinite(t_opt) else nb + 1
        for name, i in (("iou_prime_opt", i_opt), ("iou_prime_0.5", half)):
            out[name] = {
                str(k): h.counts_at(i, n_pos, int(self.hist.tot[i:].sum())).result() for k, h in self.iou_prime.items()
            }
        return out

    def curves(self) -> dict[str, Any]:
        c = self.hist.counts()
        out: dict[str, Any] = {
            "thresholds": c.thresholds,
            "iou": iou_from_counts(c.tp, c.pp, c.n_pos),
            "precision": c.tp / np.maximum(c.pp, 1),
            "recall": c.tp / c.n_pos if c.n_pos else np.full(c.tp.shape, np.nan),
        }
        # IoU' curves at the same thresholds (bin edges of non-empty bins).
        idx = np.rint(c.thresholds * self.hist.n_bins).astype(np.int64)
        pred_px = np.cumsum(self.hist.tot[::-1])[::-1]
        for k, h in self.iou_prime.items():
            cur = h.curve(c.n_pos, pred_px)
            out[f"iou_prime_{k}"] = {key: v[idx] for key, v in cur.items()}
        return out


class SegmentationAccumulator:
    """Accumulate soft masks and references; see the module docstring for the result format.

    Args:
        mode: ``"fast"`` (histograms, constant memory) or ``"exact"`` (sort-based, keeps the masks).
        kernels: odd IoU' kernel sizes; ``()`` skips IoU'.
        parts: score head and tail when the references have them.
        n_bins: histogram resolution of fast mode.
        per_image: score every image alone and report mean / std over images.
    """

    def __init__(
        self,
        mode: str = "fast",
        kernels: tuple[int, ...] | list[int] = (3, 5),
        parts: bool = True,
        *,
        n_bins: int = DEFAULT_BINS,
        per_image: bool = False,
    ) -> None:
        if mode not in ("fast", "exact"):
            raise ValueError(f"mode must be 'fast' or 'exact', got {mode!r}")
        self.mode = mode
        self.kernels = tuple(check_kernel(k) for k in kernels)
        self.parts = bool(parts)
        self.n_bins = int(n_bins)
        self.per_image = bool(per_image)
        self.n_images = 0
        self._has_parts: bool | None = None
        self._fast: dict[str, _FastPart] = {}
        self._stored: list[tuple[np.ndarray, dict[str, np.ndarray | None]]] = []
        self._images: list[dict[str, Any]] = []
        self._names: list[str | None] = []

    # ------------------------------------------------------------------ update
    def update(self, prob: np.ndarray, ref: np.ndarray | dict[str, Any], name: str | None = None) -> None:
        """Add one image.

        Args:
            prob: (H, W) soft mask, float in [0, 1].
            ref: bool (H, W) full reference, or ``{"full": ..., "head": ..., "tail": ...}`` (parts may be None).
            name: optional image name (kept in per-image results).
        """
        p = _check_prob(prob)
        refs = _as_refs(ref, p.shape)
        has_parts = self.parts and refs["head"] is not None and refs["tail"] is not None
        if self._has_parts is None:
            self._has_parts = has_parts
        elif has_parts != self._has_parts:
            raise ValueError("some images have head/tail references and others do not; score parts consistently")
        if not has_parts:
            refs["head"] = refs["tail"] = None
        self.n_images += 1
        if self.per_image:
            single = SegmentationAccumulator(self.mode, self.kernels, self.parts, n_bins=self.n_bins)
            single.update(p, refs)
            res = single.result()
            self._images.append({"name": name, **{k: res[k] for k in PARTS}})
            return
        if self.mode == "exact":
            self._stored.append((p, refs))
            return
        idx = quantize(p, self.n_bins)
        regions = self._regions(refs)
        for part, region in regions.items():
            if part not in self._fast:
                self._fast[part] = _FastPart(self.kernels, self.n_bins)
            ref_part = refs[part]
            assert ref_part is not None
            self._fast[part].update(p, idx, ref_part, region)

    @staticmethod
    def _regions(refs: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        """Scoring region per part (None = the whole image)."""
        out: dict[str, np.ndarray | None] = {"full": None}
        if refs["head"] is not None and refs["tail"] is not None:
            out["head"], out["tail"] = part_regions(refs["head"], refs["tail"])
        return out

    # ------------------------------------------------------------------ results
    def result(self) -> dict[str, Any]:
        """The evaluation result (JSON-ready; NaN stands for an undefined value)."""
        out: dict[str, Any] = {"n_images": self.n_images, "mode": self.mode}
        if self.per_image:
            out.update(self._per_image_summary())
            return out
        for part in PARTS:
            out[part] = None
        if self.n_images == 0:
            return out
        if self.mode == "fast":
            for part, state in self._fast.items():
                out[part] = state.result()
        else:
            for part in self._exact_parts():
                out[part] = self._exact_result(part)
        return out

    def curves(self, part: str = "full") -> dict[str, Any]:
        """Threshold curves of one part (fast mode): thresholds (decreasing), iou, precision, recall and, per
        kernel, ``iou_prime_K = {"r", "p", "iou"}`` at the same thresholds (paper Fig. 7)."""
        if self.mode != "fast" or self.per_image:
            raise ValueError("curves() needs mode='fast' without per_image")
        if part not in self._fast:
            raise ValueError(f"no data for part {part!r}")
        return self._fast[part].curves()

    def _exact_parts(self) -> tuple[str, ...]:
        return PARTS if self._has_parts else ("full",)

    def _exact_result(self, part: str) -> dict[str, Any]:
        scores, labels, brier = [], [], BrierAccumulator()
        scored: list[tuple[np.ndarray, np.ndarray]] = []
        for prob, refs in self._stored:
            ref = refs[part]
            assert ref is not None
            region = self._regions(refs)[part]
            if region is None:
                s, y, sp = prob.ravel(), ref.ravel(), prob
            else:
                s, y, sp = prob[region], ref[region], restrict(prob, region)
            scores.append(s)
            labels.append(y)
            brier.update(s, y)
            scored.append((sp, ref))
        s_all = np.concatenate(scores)
        y_all = np.concatenate(labels)
        c = rank_counts(s_all, y_all, "exact")
        iou_opt, t_opt = iou_opt_from_counts(c)
        pred5 = s_all >= 0.5
        tp5, pp5 = int(np.count_nonzero(pred5 & y_all)), int(np.count_nonzero(pred5))
        out: dict[str, Any] = {
            "ap": average_precision_from_counts(c),
            "iou_0.5": float(safe_ratio(tp5, pp5 + c.n_pos - tp5, pp5 == 0 and c.n_pos == 0)),
            "iou_opt": iou_opt,
            "t_opt": t_opt,
            **brier.result(),
        }
        del s_all, y_all, scores, labels
        thresholds = {"iou_prime_opt": t_opt, "iou_prime_0.5": 0.5}
        totals = {name: {k: IoUPrimeCounts() for k in self.kernels} for name in thresholds}
        if self.kernels:
            for sp, ref in scored:
                skel = skeleton(ref)
                for name, t in thresholds.items():
                    pred = sp >= t
                    for k in self.kernels:
                        totals[name][k] += iou_prime_counts(pred, ref, k, skel)
        for name in thresholds:
            out[name] = {str(k): totals[name][k].result() for k in self.kernels}
        return out

    def _per_image_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_image": True, "images": self._images, "std": {}}
        for part in PARTS:
            rows = [img[part] for img in self._images if img[part] is not None]
            if not rows:
                out[part] = None
                out["std"][part] = None
                continue
            mean, std = _mean_std(rows)
            out[part] = mean
            out["std"][part] = std
        return out


def _mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and (population) std over images of nested metric dicts, skipping NaN (undefined) values."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key, first in rows[0].items():
        if isinstance(first, dict):
            mean[key], std[key] = _mean_std([r[key] for r in rows])
            continue
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        mean[key] = float(vals.mean()) if vals.size else float("nan")
        std[key] = float(vals.std()) if vals.size else float("nan")
    return mean, std
