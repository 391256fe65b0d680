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

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CheckImaged", "CheckInputd", "InvalidImageError"]


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
        max_voxels: largest accepted number of voxels (the default, 2**28, is 1 GiB as float32): bigger inputs are
            almost always a mistake (wrong file, or a 4D series read as a volume) and would exhaust memory.
        spacing_range: accepted voxel spacing in mm (from the affine); outside it the header is almost certainly
            wrong (e.g. 0 or 1e6 mm), and resampling would produce garbage.
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
        max_voxels: int = 2**28,
        spacing_range: Sequence[float] = (0.01, 50.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.min_size = min_size
        self.max_voxels = max_voxels
        self.spacing_range = (float(spacing_range[0]), float(spacing_range[1]))

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
        if int(np.prod(shape)) > self.max_voxels:
            raise InvalidImageError(
                f"{name}: image has {int(np.prod(shape)):,} voxels (shape {shape}), more than the limit of "
                f"{self.max_voxels:,}; check that this is the right file."
            )
        pixdim = getattr(img, "pixdim", None)
        if pixdim is not None:
            spacing = [float(v) for v in torch.as_tensor(pixdim).reshape(-1)[: self.spatial_dims]]
            low, high = self.spacing_range
            if any(not low <= v <= high for v in spacing):
                raise InvalidImageError(
                    f"{name}: voxel spacing {tuple(round(v, 4) for v in spacing)} mm is outside the accepted range "
                    f"[{low:g}, {high:g}] mm; the header (affine / pixdim) is probably wrong."
                )
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


class CheckInputd(MapTransform):
    """
    Check input paths before loading, so that common problems get a clear message naming the file instead of a
    reader's traceback: a missing file or folder, an empty (0-byte) file, a folder without DICOM files, and a DICOM
    folder that mixes several series (which a reader would otherwise stack into one nonsensical volume).

    Args:
        keys: keys holding input paths.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        CheckInputd("image")({"image": "/data/ct_series_01"})
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    @staticmethod
    def check(path: str | os.PathLike) -> None:
        """Raise :py:class:`InvalidImageError` if ``path`` cannot hold one scan."""
        name = os.fspath(path)
        if not os.path.exists(name):
            raise InvalidImageError(f"{name}: file or folder not found.")
        if os.path.isfile(name):
            if os.path.getsize(name) == 0:
                raise InvalidImageError(f"{name}: empty file (0 bytes).")
            return
        files = sorted(os.path.join(name, f) for f in os.listdir(name) if not f.startswith("."))
        series: dict[str, int] = {}
        for f in files:
            if not os.path.isfile(f) or not pydicom.misc.is_dicom(f):
                continue
            try:
                header = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            except Exception as e:  # a truncated header is reported with the file that has it
                raise InvalidImageError(f"{f}: unreadable DICOM header ({e}).") from e
            uid = str(getattr(header, "SeriesInstanceUID", "<no SeriesInstanceUID>"))
            series[uid] = series.get(uid, 0) + 1
        if not series:
            raise InvalidImageError(f"{name}: folder holds no DICOM files.")
        if len(series) > 1:
            counts = ", ".join(f"{uid} ({n} files)" for uid, n in series.items())
            raise InvalidImageError(
                f"{name}: folder mixes {len(series)} DICOM series: {counts}; put each series in its own folder."
            )

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                self.check(d[key])
        return d
