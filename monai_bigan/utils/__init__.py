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
"""Utilities shared across monai_bigan: keys, events and weight averaging."""

from __future__ import annotations

from .bundle import as_bool, default_bundle_root, require_file
from .calibration import ScoreCalibration
from .checkpoint import (
    ModelIdentity,
    RNGState,
    UnsafeCheckpointError,
    calibration_model_record,
    find_checkpoints,
    load_checkpoint,
    scoring_network_key,
    state_dict_digest,
)
from .ema import ema_decay_at, update_ema
from .enums import AnomalyKeys, BiGANIterationEvents, BiGANKeys
from .lock import TrainingLock
from .performance import amp_dtype, autocast_kwargs, channels_last_kwargs, compile_networks
from .progress import progress_bar
from .warnings import filter_framework_warnings
