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
"""Ignite handlers for BiGAN workflows."""

from __future__ import annotations

from .calibration import CalibrationHandler
from .checkpoint import AtomicCheckpointSaver, BestMetricState, ResumeHandler
from .distributed import DistributedResumeHandler
from .health import TrainingCollapseError, TrainingHealthMonitor
from .progress import TrainingProgress, progress_bar
from .report import REPORT_COLUMNS, AnomalyReportHandler
from .residual_statistics import ResidualStatisticsHandler
from .stow import StowHandler

__all__ = [
    "AnomalyReportHandler",
    "AtomicCheckpointSaver",
    "BestMetricState",
    "CalibrationHandler",
    "DistributedResumeHandler",
    "ResidualStatisticsHandler",
    "REPORT_COLUMNS",
    "ResumeHandler",
    "StowHandler",
    "TrainingCollapseError",
    "TrainingHealthMonitor",
    "TrainingProgress",
    "progress_bar",
]
