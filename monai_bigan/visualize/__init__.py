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
"""Visual outputs for human review: per-volume review sheets of the most anomalous slices."""

from __future__ import annotations

from .review_sheet import (
    InputSlices,
    ReviewSheetd,
    above_threshold_regions,
    input_slice_numbers,
    render_review_sheet,
    select_slices,
)

__all__ = [
    "InputSlices",
    "ReviewSheetd",
    "above_threshold_regions",
    "input_slice_numbers",
    "render_review_sheet",
    "select_slices",
]
