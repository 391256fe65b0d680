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
"""Handler that fits the healthy score calibration on each validation pass and stores it beside the model."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.utils.calibration import ScoreCalibration
from monai_bigan.utils.checkpoint import CALIBRATION_MODEL_KEY, ModelIdentity
from monai_bigan.utils.enums import AnomalyKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CalibrationHandler"]


class CalibrationHandler:
    """
    Collects the per-scan scores (and labels, when the validation split has them) of a validation evaluator, and the
    residuals of healthy scans inside the foreground; at the end of each validation pass it fits a
    :py:class:`monai_bigan.utils.ScoreCalibration` and writes it atomically to ``calibration_file``.

    Attach it to the **validation** evaluator only: the calibration must never see test data. Because it is rewritten
    on every pass, the file describes the weights of the last validation, i.e. the final model when the last epoch is
    validated.

    Args:
        calibration_file: JSON file to write, e.g. ``models/calibration.json``.
        target_fpr: false-positive rate of the scan-level threshold (default 5 %).
        voxel_fpr: fraction of healthy foreground voxels allowed in the anomaly mask.
        foreground_threshold: image intensity (after scaling to [-1, 1]) above which a voxel is foreground.
        pred_key: key of the scorer maps in the output; channel 0 is the residual.
        image_key: key of the preprocessed image in the output.
        label_key: key of the scan label in the output (0 healthy, 1 anomalous; missing means healthy).
        max_voxels_per_scan: cap on the residual samples kept per scan, to bound memory on large volumes.
        scoring: the scoring settings of the evaluator (:py:class:`monai_bigan.bundle.ScoringSettings`), recorded in
            the calibration so that inference can warn when it scores differently.
        model_identity: the :py:class:`monai_bigan.utils.ModelIdentity` of the scored model; its record (digests of the
            scoring weights and of the residual statistics, epoch, run id) is stored with the scoring settings (entry
            ``"model"``), so that :py:func:`monai_bigan.bundle.load_trained_model` refuses a calibration fitted for
            another model. None records nothing (e.g. for the baselines).
    """

    def __init__(
        self,
        calibration_file: str | os.PathLike,
        target_fpr: float = 0.05,
        voxel_fpr: float = 0.001,
        foreground_threshold: float = -0.9,
        pred_key: str = "pred",
        image_key: str = "image",
        label_key: str = "label",
        max_voxels_per_scan: int = 200_000,
        scoring: Any = None,
        model_identity: ModelIdentity | None = None,
    ) -> None:
        self.calibration_file = calibration_file
        self.target_fpr = target_fpr
        self.voxel_fpr = voxel_fpr
        self.foreground_threshold = foreground_threshold
        self.pred_key = pred_key
        self.image_key = image_key
        self.label_key = label_key
        self.max_voxels_per_scan = max_voxels_per_scan
        self.scoring = scoring
        self.model_identity = model_identity
        self.logger = logging.getLogger(__name__)
        self.calibration: ScoreCalibration | None = None
        self._reset()

    def _reset(self) -> None:
        self._scores: list[float] = []
        self._labels: list[int | None] = []
        self._residuals: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def iteration_completed(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            if AnomalyKeys.SCORE not in item:
                continue
            label = item.get(self.label_key)
            label = None if label is None else int(torch.as_tensor(label).reshape(-1)[0])
            self._scores.append(float(torch.as_tensor(item[AnomalyKeys.SCORE]).reshape(-1)[0]))
            self._labels.append(label)
            if label in (None, 0) and self.pred_key in item and self.image_key in item:
                residual = torch.as_tensor(item[self.pred_key])[0]
                foreground = torch.as_tensor(item[self.image_key])[0] > self.foreground_threshold
                values = residual[foreground].float().cpu().numpy()
                if values.size > self.max_voxels_per_scan:
                    rng = np.random.default_rng(len(self._residuals))
                    values = rng.choice(values, self.max_voxels_per_scan, replace=False)
                self._residuals.append(values)

    def _scoring_record(self) -> Any:
        """The scoring settings to record, with the identity of the model when there is one."""
        if self.model_identity is None:
            return self.scoring
        scoring = self.scoring
        record = dict(scoring.to_dict() if hasattr(scoring, "to_dict") else (scoring or {}))
        record[CALIBRATION_MODEL_KEY] = self.model_identity.record()
        return record

    def epoch_completed(self, engine: Engine) -> None:
        if not self._scores:
            self.logger.warning("no validation scores collected; calibration not written.")
            return
        try:
            self.calibration = ScoreCalibration.fit(
                self._scores,
                self._labels,
                self._residuals,
                target_fpr=self.target_fpr,
                voxel_fpr=self.voxel_fpr,
                scoring=self._scoring_record(),
            )
        except ValueError as e:
            self.logger.warning(f"calibration not written: {e}")
            return
        self.calibration.save(self.calibration_file)
        cal = self.calibration
        f1 = (
            ""
            if cal.threshold_f1 is None
            else f", F1-optimal threshold {cal.threshold_f1:.4g} (F1 {cal.f1_at_threshold_f1:.3f})"
        )
        # no voxel threshold without healthy residuals (outputs without image or maps)
        voxel = "none" if cal.voxel_threshold is None else f"{cal.voxel_threshold:.4g}"
        self.logger.info(
            f"calibration from {len(cal.healthy_scores)} healthy validation scans: threshold {cal.threshold:.4g} "
            f"at {cal.target_fpr:.0%} FPR, voxel threshold {voxel}{f1} -> {self.calibration_file}"
        )
