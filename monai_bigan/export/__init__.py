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
Export of a trained BiGAN anomaly scorer to TorchScript and ONNX, so inference needs neither the training code nor its
classes: ``python -m monai_bigan.export --bundle_root B [--format torchscript|onnx|all]``.
"""

from __future__ import annotations

from .exporter import (
    DEFAULT_CHECKPOINT_KEY,
    bundle_parser,
    export_bundle,
    export_onnx,
    export_torchscript,
    load_scorer,
    main,
)
from .scorer import CheckpointAnomalyScorer

__all__ = [
    "DEFAULT_CHECKPOINT_KEY",
    "CheckpointAnomalyScorer",
    "bundle_parser",
    "export_bundle",
    "export_onnx",
    "export_torchscript",
    "load_scorer",
    "main",
]
