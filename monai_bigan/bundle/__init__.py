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
What the bundle configs build, as small tested Python: the model geometry derived from ``mode``, the scoring settings,
the networks and the one loader of trained models.
"""

from __future__ import annotations

from monai_bigan.exceptions import ModelMismatchError

from .config import bundle_config_parser, read_bundle_config, resolve_macro_paths
from .factories import (
    build_bigan,
    checkpoint_objects,
    default_device,
    default_num_workers,
    ema_copy,
    encoder_generator_parameters,
    every_n_events,
    gan_training_scans,
    place_network,
    scalar_losses,
    scoring_network,
    split_holdout,
    statistics_scans,
    validation_interval,
)
from .geometry import ModelGeometry, ScanMode
from .loading import (
    EXPORTED_STATISTICS_FILE,
    TrainedModel,
    check_model_identity,
    load_exported_model,
    load_state,
    load_trained_model,
)
from .scoring import ScoringSettings

__all__ = [
    "EXPORTED_STATISTICS_FILE",
    "ModelGeometry",
    "ModelMismatchError",
    "ScanMode",
    "ScoringSettings",
    "TrainedModel",
    "build_bigan",
    "bundle_config_parser",
    "check_model_identity",
    "checkpoint_objects",
    "default_device",
    "default_num_workers",
    "ema_copy",
    "encoder_generator_parameters",
    "every_n_events",
    "gan_training_scans",
    "load_exported_model",
    "load_state",
    "load_trained_model",
    "place_network",
    "read_bundle_config",
    "resolve_macro_paths",
    "scalar_losses",
    "scoring_network",
    "split_holdout",
    "statistics_scans",
    "validation_interval",
]
