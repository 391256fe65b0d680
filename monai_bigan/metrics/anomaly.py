# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Evaluation metrics of unsupervised anomaly detection, at the image level (one score per scan) and at the voxel level
(a heatmap per scan against a ground-truth lesion mask).

The positive class is always the anomaly: label 1 (or a nonzero mask voxel) means anomalous, and a scan or voxel is
flagged when its score is strictly greater than the threshold. The curve metrics (AUROC, average precision, ROC and
precision-recall curves) come from scikit-learn, imported on first use (like SciPy, for the connected lesions), so
that importing this module stays cheap. Like :py:mod:`monai.metrics`, the functions here are framework-free: they take
numpy arrays, torch tensors or sequences and return plain Python numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_numpy, optional_import

__all__ = [
    "check_scores_labels",
    "image_level_metrics",
    "dice_at_threshold",
    "best_dice_threshold",
    "lesion_detection",
    "VoxelMetricAccumulator",
]

ArrayLike = Union[NdarrayOrTensor, Sequence[float]]


def _as_1d(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, torch tensor or sequence) as a flat numpy array of ``dtype``."""
    try:
        arr = np.asarray(convert_to_numpy(x), dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {e}") from e
    return arr.reshape(-1)


def _sklearn_metrics() -> Any:
    """:py:mod:`sklearn.metrics`, imported on first use: scikit-learn takes seconds to import."""
    sk_metrics, _ = optional_import("sklearn.metrics")
    return sk_metrics


def check_scores_labels(scores: Any, labels: Any, require_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """
    Validate one score and one binary label per scan; return them as float64 and int64 arrays.

    Args:
        scores: one anomaly score per scan (numpy array, torch tensor or sequence; flattened).
        labels: one label per scan, 1 anomalous and 0 healthy.
        require_both: whether both classes must be present (the curve metrics need them).

    Returns:
        ``(scores, labels)`` as flat float64 and int64 arrays.

    Raises:
        ValueError: on empty inputs, different lengths, NaN scores, labels other than 0/1, or (``require_both``) a
            single class.
    """
    s = _as_1d(scores, "scores")
    y = _as_1d(labels, "labels")
    if s.size == 0:
        raise ValueError("scores is empty.")
    if s.size != y.size:
        raise ValueError(f"scores and labels must have the same length, got {s.size} and {y.size}.")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} NaN or infinite value(s).")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]
        raise ValueError(f"labels must be 0 (healthy) or 1 (anomalous), got {bad.tolist()}.")
    y = y.astype(np.int64)
    if require_both and np.unique(y).size < 2:
        only = "healthy (0)" if y[0] == 0 else "anomalous (1)"
        raise ValueError(
            f"labels hold a single class, all {only}: AUROC and AUPRC are undefined; "
            "the evaluation set needs both healthy and anomalous scans."
        )
    return s, y


def image_level_metrics(scores: ArrayLike, labels: ArrayLike, threshold: float | None = None) -> dict[str, float]:
    """
    Image-level (one score per scan) anomaly detection metrics.

    Always reported:

        - ``auroc``: area under the ROC curve (:py:func:`sklearn.metrics.roc_auc_score`);
        - ``auprc``: average precision (:py:func:`sklearn.metrics.average_precision_score`), the step-wise area under
          the precision-recall curve used by the MOOD challenge;
        - ``auprc_trapezoid``: trapezoidal area under the precision-recall curve, ``auc(recall, precision)`` from
          :py:func:`sklearn.metrics.precision_recall_curve`, the convention of EGBAD (usually slightly optimistic);
        - ``sensitivity_at_95_specificity``: the largest true-positive rate among the ROC operating points with a
          false-positive rate <= 0.05 (no interpolation between points). This is an oracle operating point chosen on
          the evaluated data, for comparison with the literature only;
        - ``num_anomalous`` and ``num_healthy``.

    When ``threshold`` is given, scans with ``score > threshold`` are flagged and the confusion counts ``tp``, ``fp``,
    ``tn``, ``fn`` are reported with ``sensitivity`` (recall), ``specificity``, ``precision`` (0.0 when nothing is
    flagged), ``f1`` and the ``threshold`` itself. The threshold must be fitted on validation data (e.g.
    :py:attr:`monai_bigan.utils.ScoreCalibration.threshold`), never on the data evaluated here.

    Args:
        scores: one anomaly score per scan (higher = more anomalous), numpy array, torch tensor or sequence.
        labels: one label per scan, 0 healthy and 1 anomalous (bool accepted).
        threshold: optional decision threshold fitted on validation data.

    Returns:
        a dict of Python floats (the counts are ints).

    Raises:
        ValueError: when the inputs are empty or of different lengths, a score is NaN or infinite, a label is not 0/1, the labels
            hold a single class (AUROC undefined) or ``threshold`` is NaN.

    Example::

        m = image_level_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], threshold=0.5)
        m["auroc"]  # 0.75
        m["sensitivity"], m["specificity"]  # 0.5, 1.0
    """
    s, y = check_scores_labels(scores, labels)
    num_anomalous = int(y.sum())
    sk_metrics = _sklearn_metrics()
    fpr, tpr, _ = sk_metrics.roc_curve(y, s, drop_intermediate=False)
    precision_curve, recall_curve, _ = sk_metrics.precision_recall_curve(y, s)
    out: dict[str, float] = {
        "auroc": float(sk_metrics.roc_auc_score(y, s)),
        "auprc": float(sk_metrics.average_precision_score(y, s)),
        "auprc_trapezoid": float(sk_metrics.auc(recall_curve, precision_curve)),
        # the curve always starts at (0, 0), so the selection is never empty
        "sensitivity_at_95_specificity": float(tpr[fpr <= 0.05 + 1e-12].max()),
        "num_anomalous": num_anomalous,
        "num_healthy": int(y.size - num_anomalous),
    }
    if threshold is not None:
        threshold = float(threshold)
        if math.isnan(threshold):
            raise ValueError("threshold is NaN.")
        flagged = s > threshold
        positive = y == 1
        tp = int(np.sum(flagged & positive))
        fp = int(np.sum(flagged & ~positive))
        fn = int(np.sum(~flagged & positive))
        tn = int(np.sum(~flagged & ~positive))
        out.update(
            threshold=threshold,
            tp=tp,
            fp=fp,
            tn=tn,
            fn=fn,
            sensitivity=tp / (tp + fn),
            specificity=tn / (tn + fp),
            precision=tp / (tp + fp) if tp + fp else 0.0,
            f1=2 * tp / (2 * tp + fp + fn),
        )
    return out


def _spatial(x: Any, name: str, dtype: Any) -> np.ndarray:
    """``x`` as a numpy array of ``dtype`` with leading singleton (channel/batch) axes removed."""
    arr = np.asarray(convert_to_numpy(x), dtype=dtype)
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.size == 0:
        raise ValueError(f"{name} is empty.")
    return arr


def _prepare(heatmap: Any, mask: Any, region: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """
    Heatmap (float32), ground truth (bool) and optional region (bool) of one volume, with equal shapes.

    Leading singleton axes (channel, batch) are dropped from each array, so ``(1, H, W, D)`` and ``(H, W, D)`` match.
    """
    hm = _spatial(heatmap, "heatmap", np.float32)
    gt = _spatial(mask, "mask", np.float32) != 0
    reg = None if region is None else _spatial(region, "region", np.float32) != 0
    shapes = [hm.shape, gt.shape] + ([] if reg is None else [reg.shape])
    if len(set(shapes)) != 1:
        names = ["heatmap", "mask"] + ([] if reg is None else ["region"])
        raise ValueError(
            "heatmap, mask and region must have the same spatial shape (a leading channel axis is optional), got "
            + ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
            + "."
        )
    return hm, gt, reg


def dice_at_threshold(heatmap: ArrayLike, mask: ArrayLike, threshold: float, region: ArrayLike | None = None) -> float:
    """
    Dice overlap of the voxels with ``heatmap > threshold`` and the ground-truth lesion mask.

    Args:
        heatmap: voxel anomaly scores, (H, W[, D]) with an optional leading channel axis; numpy array or tensor.
        mask: ground-truth lesion mask of the same shape; nonzero voxels are lesion (resample masks with
            nearest-neighbor interpolation).
        threshold: voxels strictly above it are predicted anomalous.
        region: optional brain/body mask of the same shape; only its nonzero voxels are evaluated.

    Returns:
        ``2 |P ∩ G| / (|P| + |G|)``; 1.0 when both the prediction and the mask are empty.

    Raises:
        ValueError: when the shapes differ.

    Example::

        dice_at_threshold([0.1, 0.9, 0.8, 0.2], [0, 1, 0, 0], 0.5)  # 2 * 1 / (2 + 1) = 0.667
    """
    hm, gt, reg = _prepare(heatmap, mask, region)
    pred = hm > threshold
    if reg is not None:
        pred, gt = pred[reg], gt[reg]
    denom = int(pred.sum()) + int(gt.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.sum(pred & gt)) / denom


def best_dice_threshold(scores: ArrayLike, mask: ArrayLike) -> tuple[float, float]:
    """
    Best achievable Dice of pooled voxels over all thresholds, and the threshold reaching it.

    The scores are sorted once (O(n log n)) and every distinct score level is tried as a cut: flagging all voxels with
    a score at least ``s`` gives, with ``TP(s)`` lesion voxels among ``k(s)`` flagged voxels and ``G`` lesion voxels,
    ``Dice(s) = 2 TP(s) / (k(s) + G)``. The returned threshold ``t`` reproduces the cut with the usual convention
    ``score > t``: it is the next lower distinct score (a value that occurs in the data, hence exact in any dtype), or
    the largest float32 below the minimum when every voxel is flagged. Ties are resolved toward the highest threshold.

    Args:
        scores: voxel scores (any shape, flattened).
        mask: ground truth of the same size, nonzero = lesion.

    Returns:
        ``(dice, threshold)``.

    Raises:
        ValueError: when the sizes differ, the input is empty, a score is not finite, or the mask has no lesion voxel.

    Example::

        best_dice_threshold([0.1, 0.9, 0.8, 0.2], [0, 1, 1, 0])  # (1.0, 0.2 rounded to float32)
    """
    s = _as_1d(scores, "scores", np.float32)
    g = _as_1d(mask, "mask", np.float32) != 0
    if s.size != g.size:
        raise ValueError(f"scores and mask must have the same size, got {s.size} and {g.size}.")
    if s.size == 0:
        raise ValueError("scores is empty.")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values.")
    num_lesion = int(g.sum())
    if num_lesion == 0:
        raise ValueError("mask has no lesion voxel: the best Dice is undefined.")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(g[order], dtype=np.int64)
    del order
    # last index of each group of equal scores: a cut that flags the whole group
    ends = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])
    ends = np.append(ends, s_sorted.size - 1)
    dice = 2.0 * tp[ends] / (ends + 1 + num_lesion)
    best = int(np.argmax(dice))
    end = int(ends[best])
    if end + 1 < s_sorted.size:
        threshold = float(s_sorted[end + 1])
    else:
        threshold = float(np.nextafter(s_sorted[-1], np.float32(-np.inf)))
    return float(dice[best]), threshold


def _lesion_peaks(hm: np.ndarray, gt: np.ndarray, reg: np.ndarray | None, min_overlap_voxels: int) -> np.ndarray:
    """
    For each connected lesion of ``gt``, the ``min_overlap_voxels``-th largest heatmap value among its voxels inside
    ``reg``: the lesion is detected at threshold ``t`` exactly when this value is > ``t``. Lesions with fewer voxels
    inside the region get ``-inf`` (never detected); lesions with no voxel inside the region are left out.
    """
    if not gt.any():
        return np.zeros(0, dtype=np.float32)
    ndimage, _ = optional_import("scipy.ndimage")
    structure = ndimage.generate_binary_structure(gt.ndim, gt.ndim)  # full connectivity
    labels, num = ndimage.label(gt, structure=structure)
    inside = labels > 0 if reg is None else (labels > 0) & reg
    lab = labels[inside]
    val = hm[inside].astype(np.float32)
    peaks = np.full(num, -np.inf, dtype=np.float32)
    counts = np.bincount(lab, minlength=num + 1)[1:]
    if lab.size:
        # sort by lesion, then by decreasing score; take the k-th entry of each lesion
        order = np.lexsort((-val, lab))
        lab, val = lab[order], val[order]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ok = counts >= min_overlap_voxels
        peaks[ok] = val[starts[ok] + min_overlap_voxels - 1]
    return peaks[counts > 0]


def lesion_detection(
    heatmap: ArrayLike,
    mask: ArrayLike,
    threshold: float,
    region: ArrayLike | None = None,
    min_overlap_voxels: int = 1,
) -> tuple[int, int]:
    """
    Count the ground-truth lesions that the thresholded heatmap hits.

    Lesions are the connected components of the ground-truth mask with full connectivity (26-connected in 3D,
    8-connected in 2D, :py:func:`scipy.ndimage.label`). A lesion is detected when at least ``min_overlap_voxels`` of
    its voxels have ``heatmap > threshold``. With ``region``, lesions are still labelled on the whole mask, but only
    their voxels inside the region count, and lesions entirely outside the region are not counted at all.

    Args:
        heatmap: voxel anomaly scores, (H, W[, D]) with an optional leading channel axis; numpy array or tensor.
        mask: ground-truth lesion mask of the same shape, nonzero = lesion.
        threshold: voxels strictly above it are flagged.
        region: optional brain/body mask of the same shape.
        min_overlap_voxels: flagged voxels a lesion needs to count as detected, >= 1.

    Returns:
        ``(detected, total)`` numbers of lesions.

    Raises:
        ValueError: when the shapes differ or ``min_overlap_voxels`` < 1.

    Example::

        mask = np.zeros((8, 8)); mask[1:3, 1:3] = 1; mask[5:7, 5:7] = 1  # two lesions
        heatmap = np.zeros((8, 8)); heatmap[2, 2] = 1.0  # one hot voxel in the first
        lesion_detection(heatmap, mask, threshold=0.5)  # (1, 2)
    """
    if min_overlap_voxels < 1:
        raise ValueError(f"min_overlap_voxels must be at least 1, got {min_overlap_voxels}.")
    hm, gt, reg = _prepare(heatmap, mask, region)
    peaks = _lesion_peaks(hm, gt, reg, int(min_overlap_voxels))
    return int(np.sum(peaks > threshold)), int(peaks.size)


class VoxelMetricAccumulator:
    """
    Pool the voxels of many volumes for voxel-level metrics: AUROC, average precision, best Dice and lesion detection.

    Each :py:meth:`add` keeps the voxels of one volume (only those inside ``region`` when given, e.g. the brain mask,
    so that the trivially healthy background does not inflate the metrics) as float32 scores and uint8 ground truth,
    5 bytes a voxel: about 5.5 MB for a whole 100x117x95 volume, less inside a brain mask. :py:meth:`compute` pools
    them all, as the MOOD and BraTS-style voxel metrics do (not a mean of per-volume values); it needs about 40 bytes
    per pooled voxel transiently (sorting in scikit-learn).

    When memory is an issue, ``max_voxels`` bounds what is kept: once the pool would exceed it, every voxel kept so
    far is retained independently with the probability that brings the pool back to about ``max_voxels``, and the
    voxels of later volumes are kept with the same (decreasing) probability. Every voxel added thus ends up in the
    pool with the same probability (a uniform Bernoulli sample, drawn from ``numpy.random.default_rng(seed)``), so
    AUROC, average precision and the best Dice are estimated without bias, with a sampling error that shrinks as
    ``max_voxels`` grows (1e7 keeps it well below 0.01). Lesion detection is always computed on the full volumes.

    Lesion detection: each :py:meth:`add` labels the lesions of the volume (see :py:func:`lesion_detection`) and keeps
    one number per lesion, the ``min_overlap_voxels``-th largest score inside it, which tells whether the lesion is
    detected at any threshold. The threshold can therefore be chosen at :py:meth:`compute` time
    (``compute(lesion_threshold=t)``, e.g. the voxel threshold fitted on validation data); a ``lesion_threshold``
    given to :py:meth:`add` is used for that volume when ``compute`` gets none.

    Args:
        max_voxels: optional bound on the number of pooled voxels; None keeps all of them.
        seed: seed of the subsampling random generator.
        min_overlap_voxels: flagged voxels a lesion needs to count as detected.

    Example::

        acc = VoxelMetricAccumulator()
        for heatmap, mask, brain in cases:  # (H, W, D) or (1, H, W, D) arrays or tensors
            acc.add(heatmap, mask, region=brain)
        metrics = acc.compute(lesion_threshold=calibration.voxel_threshold)
        metrics["voxel_auroc"], metrics["dice_best"], metrics["lesion_detection_rate"]
    """

    def __init__(self, max_voxels: int | None = None, seed: int = 0, min_overlap_voxels: int = 1) -> None:
        if max_voxels is not None and max_voxels < 1:
            raise ValueError(f"max_voxels must be positive or None, got {max_voxels}.")
        if min_overlap_voxels < 1:
            raise ValueError(f"min_overlap_voxels must be at least 1, got {min_overlap_voxels}.")
        self.max_voxels = max_voxels
        self.seed = seed
        self.min_overlap_voxels = int(min_overlap_voxels)
        self.reset()

    def reset(self) -> None:
        """Forget every volume added so far (and restart the subsampling generator)."""
        self._scores: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []
        self._lesion_peaks: list[np.ndarray] = []
        self._lesion_thresholds: list[float | None] = []
        self._num_pooled = 0
        self._keep_prob = 1.0
        self._rng = np.random.default_rng(self.seed)
        self.num_volumes = 0
        self.num_voxels_seen = 0

    @property
    def num_pooled(self) -> int:
        """Number of voxels currently kept (all region voxels seen unless ``max_voxels`` subsamples)."""
        return self._num_pooled

    @property
    def keep_probability(self) -> float:
        """Probability with which each voxel seen is in the pool (1.0 without subsampling)."""
        return self._keep_prob

    def add(
        self,
        heatmap: ArrayLike,
        mask: ArrayLike,
        region: ArrayLike | None = None,
        lesion_threshold: float | None = None,
    ) -> None:
        """
        Add one volume.

        Args:
            heatmap: voxel anomaly scores, (H, W[, D]) with an optional leading channel axis; numpy array or tensor.
                For a batch, call once per item.
            mask: ground-truth lesion mask of the same shape, nonzero = lesion.
            region: optional brain/body mask of the same shape; only its nonzero voxels are pooled and searched for
                lesions.
            lesion_threshold: optional heatmap threshold for the lesion detection of this volume, used by
                :py:meth:`compute` when it gets no ``lesion_threshold`` itself.

        Raises:
            ValueError: when the shapes differ or the heatmap holds NaN or infinite values inside the region.
        """
        hm, gt, reg = _prepare(heatmap, mask, region)
        scores = hm[reg] if reg is not None else hm.reshape(-1)
        truth = gt[reg] if reg is not None else gt.reshape(-1)
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            raise ValueError(f"heatmap contains {bad} NaN or infinite value(s) inside the region.")
        self._lesion_peaks.append(_lesion_peaks(hm, gt, reg, self.min_overlap_voxels))
        self._lesion_thresholds.append(None if lesion_threshold is None else float(lesion_threshold))
        self.num_volumes += 1
        self.num_voxels_seen += int(scores.size)

        if self._keep_prob < 1.0:
            keep = self._rng.random(scores.size) < self._keep_prob
            scores, truth = scores[keep], truth[keep]
        self._scores.append(np.ascontiguousarray(scores, dtype=np.float32))
        self._truth.append(truth.astype(np.uint8))
        self._num_pooled += int(scores.size)
        if self.max_voxels is not None and self._num_pooled > self.max_voxels:
            self._thin(self.max_voxels / self._num_pooled)

    def _thin(self, fraction: float) -> None:
        """Keep each pooled voxel independently with probability ``fraction``."""
        self._keep_prob *= fraction
        self._num_pooled = 0
        for i, (s, t) in enumerate(zip(self._scores, self._truth)):
            keep = self._rng.random(s.size) < fraction
            self._scores[i], self._truth[i] = s[keep], t[keep]
            self._num_pooled += int(keep.sum())

    def compute(self, lesion_threshold: float | None = None, dice_threshold: float | None = None) -> dict[str, float]:
        """
        Voxel-level metrics of all the voxels pooled so far.

        Returns a dict with:

            - ``voxel_auroc``: area under the ROC curve of the pooled voxels (``auc(*roc_curve(...)[:2])``, which is
              what :py:func:`sklearn.metrics.roc_auc_score` computes for binary labels);
            - ``voxel_auprc``: :py:func:`sklearn.metrics.average_precision_score` of the pooled voxels;
            - ``dice_best`` and ``dice_best_threshold``: the best Dice of the pooled voxels over all thresholds
              (flag = score > threshold) and that threshold (see :py:func:`best_dice_threshold`). This is an oracle
              upper bound chosen on the evaluated data, as reported in the literature, not a deployable operating point;
            - ``num_volumes``, ``num_voxels`` (pooled) and ``num_lesion_voxels`` (pooled);
            - with a ``dice_threshold`` (e.g. the voxel threshold fitted on validation data, a deployable operating
              point): ``dice_at_threshold``, the Dice of the pooled voxels above it (:py:func:`dice_at_threshold`);
            - with a lesion threshold (``lesion_threshold`` here, else the ones given to :py:meth:`add`):
              ``lesion_detection_rate`` (detected / total lesions over all volumes; NaN when there is no lesion),
              ``lesions_detected`` and ``lesions_total``.

        Args:
            lesion_threshold: heatmap threshold for lesion detection in every volume; overrides those given to
                :py:meth:`add`.
            dice_threshold: heatmap threshold of ``dice_at_threshold``; None leaves it out.

        Raises:
            ValueError: when nothing was added or the pooled voxels hold a single class.
        """
        if not self._scores:
            raise ValueError("no volume was added.")
        scores = np.concatenate(self._scores)
        truth = np.concatenate(self._truth)
        num_lesion = int(truth.sum())
        if num_lesion == 0 or num_lesion == truth.size:
            kind = "no lesion voxel" if num_lesion == 0 else "only lesion voxels"
            raise ValueError(
                f"the pooled voxels hold {kind} ({truth.size} voxels of {self.num_volumes} volume(s)): voxel AUROC, "
                "AUPRC and Dice are undefined."
            )
        dice, best_threshold = best_dice_threshold(scores, truth)
        # what roc_auc_score computes for binary labels, without its slow label-type inspection of millions of voxels
        sk_metrics = _sklearn_metrics()
        fpr, tpr, _ = sk_metrics.roc_curve(truth, scores)
        out: dict[str, float] = {
            "voxel_auroc": float(sk_metrics.auc(fpr, tpr)),
            "voxel_auprc": float(sk_metrics.average_precision_score(truth, scores)),
            "dice_best": dice,
            "dice_best_threshold": best_threshold,
            "num_volumes": self.num_volumes,
            "num_voxels": int(truth.size),
            "num_lesion_voxels": num_lesion,
        }
        if dice_threshold is not None:
            out["dice_at_threshold"] = dice_at_threshold(scores, truth, dice_threshold)
        del scores, truth
        detection = self._lesion_counts(lesion_threshold)
        if detection is not None:
            detected, total = detection
            out["lesions_detected"] = detected
            out["lesions_total"] = total
            out["lesion_detection_rate"] = detected / total if total else float("nan")
        return out

    def _lesion_counts(self, lesion_threshold: float | None) -> tuple[int, int] | None:
        """Detected and total lesions at ``lesion_threshold`` (or the per-volume ones); None without a threshold."""
        if lesion_threshold is not None:
            thresholds: list[float | None] = [float(lesion_threshold)] * len(self._lesion_peaks)
        else:
            thresholds = self._lesion_thresholds
        if all(t is None for t in thresholds):
            return None
        missing = sum(t is None for t in thresholds)
        if missing:
            warnings.warn(
                f"{missing} of {len(thresholds)} volume(s) were added without a lesion_threshold and are left out of "
                "the lesion detection rate; pass lesion_threshold to compute() to use one for all volumes.",
                stacklevel=3,
            )
        detected = total = 0
        for peaks, t in zip(self._lesion_peaks, thresholds):
            if t is not None:
                detected += int(np.sum(peaks > t))
                total += int(peaks.size)
        return detected, total
