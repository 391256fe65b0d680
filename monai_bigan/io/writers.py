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
"""Image writers that never leave a half-written file behind."""

from __future__ import annotations

from monai.config import PathLike
from monai.data import NibabelWriter

from .atomic import atomic_path

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """
    ``NibabelWriter`` that writes to a temporary file in the target folder and renames it into place, so a crash or a
    kill never leaves a truncated NIfTI that a viewer would open. Use as ``SaveImaged(..., writer=AtomicNibabelWriter)``.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
