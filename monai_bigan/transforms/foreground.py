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
"""The foreground of a preprocessed scan, shared by cropping, masking and calibration."""

from __future__ import annotations

import torch

__all__ = ["FOREGROUND_THRESHOLD", "is_foreground"]

#: intensity (after the bundles' scaling to [-1, 1]) above which a voxel belongs to the body/brain
FOREGROUND_THRESHOLD = -0.9


def is_foreground(image: torch.Tensor) -> torch.Tensor:
    """Voxels above :py:data:`FOREGROUND_THRESHOLD`: the ``select_fn`` of ``CropForegroundd`` in the bundles."""
    return image > FOREGROUND_THRESHOLD
