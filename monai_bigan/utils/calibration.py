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
Score calibration against healthy scans: percentiles, a threshold for a target false-positive rate and the heatmap
colour scale, all fitted on the validation split (never on test data) and stored as JSON beside the model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from monai_bigan.io.atomic import atomic_write_text

__all__ = ["ScoreCalibration"]

logger = logging.getLogger(__name__)


CALIBRATION_VERSION = 1


@dataclass
class ScoreCalibration:
    """
    Healthy reference statistics of the anomaly score, fitted on validation data.

    Attributes:
        healthy_scores: sorted scores of the healthy validation scans.
        target_fpr: false-positive rate the threshold is chosen for.
        threshold: the (1 - target_fpr) quantile of the healthy scores; scans above it are flagged.
        voxel_threshold: residual above which a voxel enters the anomaly mask: the (1 - voxel_fpr) quantile of the
            healthy residuals inside the foreground (None when fitted without residuals).
        heatmap_vmax: upper end of the heatmap colour scale (the healthy 99.99th residual percentile, above the voxel
            threshold), so that all heatmaps share one scale that does not depend on the image shown.
        threshold_f1: the F1-optimal threshold when the validation split holds labelled anomalies, else None.
        f1_at_threshold_f1: the validation F1 at that threshold.
        num_anomalous: number of labelled anomalous validation scans used for ``threshold_f1``.
        scoring: the scoring settings the scores came from (``ScoringSettings.to_dict()`` of
            :py:class:`monai_bigan.bundle.ScoringSettings`, which compares itself with this record at load time), or
            None when unknown (files written before version 0.4.0 of the bundle).
    """

    healthy_scores: list[float]
    target_fpr: float
    threshold: float
    voxel_fpr: float
    voxel_threshold: float | None
    heatmap_vmax: float | None
    threshold_f1: float | None = None
    f1_at_threshold_f1: float | None = None
    num_anomalous: int = 0
    scoring: dict[str, Any] | None = None
    source: str = "validation"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    version: int = CALIBRATION_VERSION

    @classmethod
    def fit(
        cls,
        scores: Sequence[float],
        labels: Sequence[int | None] | None = None,
        healthy_residuals: Sequence[np.ndarray] = (),
        target_fpr: float = 0.05,
        voxel_fpr: float = 0.001,
        scoring: Any = None,
    ) -> ScoreCalibration:
        """
        Fit from validation scores (and labels, 0 healthy / 1 anomalous; unlabelled scans count as healthy).

        Args:
            scores: one anomaly score per validation scan.
            labels: optional labels aligned with ``scores``.
            healthy_residuals: foreground residual values of healthy scans, for the voxel threshold and colour scale.
            target_fpr: false-positive rate of the scan-level threshold, in (0, 1).
            voxel_fpr: fraction of healthy foreground voxels the mask may contain, in (0, 1).
            scoring: the scoring settings the scores came from (a ``ScoringSettings`` or its ``to_dict()``), recorded
                so that inference can compare its own settings with them.

        Raises:
            ValueError: when there is no healthy score or a rate is out of range.
        """
        if not 0.0 < target_fpr < 1.0 or not 0.0 < voxel_fpr < 1.0:
            raise ValueError(f"target_fpr and voxel_fpr must be in (0, 1), got {target_fpr} and {voxel_fpr}.")
        scores_np = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels_np = (
            np.zeros(len(scores_np), dtype=int)
            if labels is None
            else np.array([0 if v is None else int(v) for v in labels])
        )
        healthy = np.sort(scores_np[labels_np == 0])
        if healthy.size == 0:
            raise ValueError("calibration needs at least one healthy validation scan (label 0 or unlabelled).")
        threshold = float(np.quantile(healthy, 1.0 - target_fpr, method="higher"))
        residuals = [np.asarray(r, dtype=np.float32).reshape(-1) for r in healthy_residuals if np.size(r)]
        if residuals:
            pooled = np.concatenate(residuals)
            voxel_threshold = float(np.quantile(pooled, 1.0 - voxel_fpr))
            heatmap_vmax = float(np.quantile(pooled, 0.9999))
        else:
            voxel_threshold = heatmap_vmax = None
        anomalous = scores_np[labels_np == 1]
        threshold_f1 = f1_best = None
        if anomalous.size:
            threshold_f1, f1_best = _best_f1_threshold(scores_np, labels_np)
        return cls(
            healthy_scores=healthy.tolist(),
            target_fpr=target_fpr,
            threshold=threshold,
            voxel_fpr=voxel_fpr,
            voxel_threshold=voxel_threshold,
            heatmap_vmax=heatmap_vmax,
            threshold_f1=threshold_f1,
            f1_at_threshold_f1=f1_best,
            num_anomalous=int(anomalous.size),
            scoring=_record(scoring),
        )

    def percentile(self, score: float) -> float:
        """Percentage of healthy validation scores at or below ``score`` (0-100)."""
        healthy = np.asarray(self.healthy_scores)
        return float(100.0 * np.searchsorted(healthy, score, side="right") / healthy.size)

    def flag_threshold(self, threshold_mode: str = "fpr") -> float:
        """
        The score above which a scan is flagged: ``"fpr"`` the threshold for the target false-positive rate, ``"f1"``
        the F1-optimal validation threshold.

        Raises:
            ValueError: for ``"f1"`` when the validation split had no labelled anomalies, or an unknown mode.
        """
        if threshold_mode == "fpr":
            return self.threshold
        if threshold_mode != "f1":
            raise ValueError(f"threshold_mode must be 'fpr' or 'f1', got {threshold_mode!r}.")
        if self.threshold_f1 is None:
            raise ValueError(
                "threshold_mode 'f1' needs labelled anomalies in the validation split; this calibration has none."
            )
        return self.threshold_f1

    def is_flagged(self, score: float) -> bool:
        """Whether ``score`` is above the threshold chosen for the target false-positive rate."""
        return bool(score > self.threshold)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON, atomically."""
        return atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScoreCalibration:
        """
        Read a calibration written by :py:meth:`save`.

        Raises:
            FileNotFoundError: naming the file, with a hint to train (or re-run validation) first.
            ValueError: when the file is not a valid calibration.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"calibration file {path} not found: it is written by the training bundle after validation; "
                "train first, or point 'calibration_file' at the calibration of your model."
            )
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            return cls(**content)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path} is not a valid monai_bigan calibration file: {e}") from e


def _record(scoring: Any) -> dict[str, Any] | None:
    """Scoring settings as the plain dictionary a calibration records."""
    if scoring is None:
        return None
    return scoring.to_dict() if hasattr(scoring, "to_dict") else dict(scoring)


def _best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold (flag when score >= t) maximizing F1 over the candidate thresholds given by the scores."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    tp = np.cumsum(sorted_labels == 1)
    fp = np.cumsum(sorted_labels == 0)
    positives = max(int((labels == 1).sum()), 1)
    f1 = 2 * tp / (tp + fp + positives)
    # only thresholds between distinct scores are realizable
    distinct = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    best = int(np.argmax(np.where(distinct, f1, -1.0)))
    return float(sorted_scores[best]), float(f1[best])
