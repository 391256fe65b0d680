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
"""Transform that places a scan's score among the healthy validation scores."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import torch
from monai.transforms import MapTransform

from monai_bigan.utils.calibration import ScoreCalibration
from monai_bigan.utils.enums import AnomalyKeys

__all__ = ["ScoreCalibrationd"]


class ScoreCalibrationd(MapTransform):
    """
    Adds ``percentile`` (share of healthy validation scans scoring at most this much, in %), ``flagged`` (above
    the threshold for the calibration's target false-positive rate) and ``threshold`` to the item, from the
    ``score`` that :py:class:`AnomalyScored` wrote.

    Args:
        calibration: a :py:class:`monai_bigan.utils.ScoreCalibration` or the path of its JSON file.
        score_key: key of the scan score.
        threshold_mode: ``"fpr"`` flags above the threshold for the calibration's target false-positive rate;
            ``"f1"`` uses the F1-optimal threshold of the labelled validation anomalies (flag when score >= it).

    Raises:
        ValueError: for ``"f1"`` when the validation split had no labelled anomalies.
    """

    def __init__(
        self,
        calibration: ScoreCalibration | str | os.PathLike,
        score_key: str = AnomalyKeys.SCORE,
        threshold_mode: str = "fpr",
    ) -> None:
        super().__init__(keys=score_key)
        self.calibration = (
            calibration if isinstance(calibration, ScoreCalibration) else ScoreCalibration.load(calibration)
        )
        # validates the mode (and that "f1" has a threshold) in one place, the calibration
        self.threshold = self.calibration.flag_threshold(threshold_mode)
        self.threshold_mode = threshold_mode

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            score = float(torch.as_tensor(d[key]).reshape(-1)[0])
            d["percentile"] = self.calibration.percentile(score)
            d["threshold"] = float(self.threshold)
            # the F1-optimal threshold is a validation score that was itself flagged (score >= t)
            d["flagged"] = (
                bool(score >= self.threshold) if self.threshold_mode == "f1" else self.calibration.is_flagged(score)
            )
        return d
