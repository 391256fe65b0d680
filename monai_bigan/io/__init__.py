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
"""Reading and writing helpers."""

from __future__ import annotations

from .atomic import atomic_path, atomic_save_figure, atomic_write_text, new_file_mode, write_error
from .dicom import (
    anomaly_segmentation,
    heatmap_parametric_map,
    read_series,
    reorient_for_dicom,
    score_report,
    volume_to_frames,
    write_dataset,
    write_dicom_series,
)
from .writers import AtomicNibabelWriter

__all__ = [
    "atomic_path",
    "atomic_save_figure",
    "atomic_write_text",
    "new_file_mode",
    "write_error",
    "AtomicNibabelWriter",
    "anomaly_segmentation",
    "heatmap_parametric_map",
    "read_series",
    "reorient_for_dicom",
    "score_report",
    "volume_to_frames",
    "write_dataset",
    "write_dicom_series",
]
