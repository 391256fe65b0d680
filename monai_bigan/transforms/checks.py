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
"""Input checks that turn silently wrong scans into clear errors naming the file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CheckImaged", "InvalidImageError"]


class InvalidImageError(ValueError):
    """An input image that cannot be scored; the message names the file and the problem."""


def _source_name(img: torch.Tensor) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in-memory image>"))


class CheckImaged(MapTransform):
    """
    Check channel-first images right after loading: the expected number of spatial dimensions and channels, a
    non-empty shape, finite values and some contrast. Raises :py:class:`InvalidImageError` naming the file.

    Args:
        keys: keys of the images to check.
        spatial_dims: expected spatial dimensions (3 for volumes, 2 for images); 2D images are also accepted by a
            volume pipeline when ``allow_2d`` is True.
        num_channels: expected channels after ``EnsureChannelFirst``.
        min_size: smallest accepted size of each spatial dimension.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        CheckImaged("image", spatial_dims=3)({"image": MetaTensor(torch.rand(1, 32, 32, 20))})
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        spatial_dims: int = 3,
        num_channels: int = 1,
        min_size: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.min_size = min_size

    def check(self, img: torch.Tensor) -> None:
        """Raise :py:class:`InvalidImageError` if ``img`` (channel first) cannot be scored."""
        name = _source_name(img)
        shape = tuple(img.shape)
        if len(shape) - 1 != self.spatial_dims:
            extra = " (4D or time series data need a single volume selected first)" if len(shape) - 1 > 3 else ""
            raise InvalidImageError(
                f"{name}: expected a {self.spatial_dims}D image, got an array of shape {shape[1:]} "
                f"with {shape[0]} channel(s){extra}."
            )
        if shape[0] != self.num_channels:
            raise InvalidImageError(
                f"{name}: expected {self.num_channels} channel(s), got {shape[0]} (array shape {shape}, channel "
                "first): a 4D series or multi-channel/RGB image must be reduced to a single volume first."
            )
        if min(shape[1:]) < self.min_size:
            raise InvalidImageError(f"{name}: image is empty or too small, spatial shape {shape[1:]}.")
        data = torch.as_tensor(img)
        finite = torch.isfinite(data)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise InvalidImageError(f"{name}: {bad} of {data.numel()} voxels are NaN or infinite.")
        if float(data.max()) == float(data.min()):
            raise InvalidImageError(f"{name}: image is constant (all voxels equal {float(data.min()):g}).")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d
