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
Evaluation metrics and figures of anomaly detection (positive class = anomaly): framework-free functions, and the
Ignite metric :py:class:`ValidationCriterion` that selects checkpoints on validation data.
"""

from __future__ import annotations

from .anomaly import (
    VoxelMetricAccumulator,
    best_dice_threshold,
    dice_at_threshold,
    image_level_metrics,
    lesion_detection,
)
from .criterion import (
    CriterionKind,
    ValidationCriterion,
    ValidationCriterionMetric,
    score_label_transform,
)
from .plots import plot_case_grid, plot_roc_pr, plot_score_histograms
