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
The model's view of a scan, derived from one ``mode`` key: what the networks see, how scans are resampled for them,
and how a whole scan is stitched back together from the network's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monai.inferers import Inferer, SimpleInferer, SliceInferer
from monai.transforms import (
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    FgBgToIndicesd,
    MapTransform,
    RandAffined,
    RandCropByPosNegLabeld,
    SqueezeDimd,
    ThresholdIntensityd,
)
from monai.utils import StrEnum

__all__ = ["ScanMode", "ModelGeometry"]


class ScanMode(StrEnum):
    """
    How the model sees a scan.

    - ``IMAGE2D``: 2D images (PNG, 2D NIfTI) in, a 2D model scoring each image whole.
    - ``SLICES``: 3D volumes in, a 2D model trained on slices along ``slice_dim`` and scoring a volume slice by slice.
    - ``VOLUME3D``: 3D volumes in, a 3D model scoring each volume whole.
    """

    IMAGE2D = "image2d"
    SLICES = "slices"
    VOLUME3D = "volume3d"


#: default model grid of each mode (in-plane for slices, the whole grid otherwise)
DEFAULT_IMAGE_SIZE = {ScanMode.IMAGE2D: (64, 64), ScanMode.SLICES: (64, 64), ScanMode.VOLUME3D: (32, 32, 32)}


@dataclass(frozen=True)
class ModelGeometry:
    """
    Everything the bundles derive from ``mode``: the network's spatial dimensions and input shape, the grid scans are
    resized to, their orientation, the inferer that stitches whole scans, and the slice sampling of training.

    Args:
        mode: one of :py:class:`ScanMode` (``"image2d"``, ``"slices"`` or ``"volume3d"``).
        image_size: the network's input grid: in-plane size for ``"slices"`` (2 values), the whole grid otherwise
            (2 values for ``"image2d"``, 3 for ``"volume3d"``). ``None`` takes the mode's default (64×64, or 32³).
        slice_dim: for ``"slices"``, the spatial axis of the RAS volume the slices are taken along (0 sagittal,
            1 coronal, 2 axial); ignored otherwise.
        num_slices: for ``"slices"``, the number of slices the volume is resized to along ``slice_dim``.
        in_channels: image channels.

    Raises:
        ValueError: for an unknown mode, an ``image_size`` of the wrong length, or a ``slice_dim`` outside 0-2.

    Example::

        g = ModelGeometry("slices", image_size=(64, 64), slice_dim=2, num_slices=48)
        g.spatial_dims, g.in_shape, g.resize_to  # 2, [1, 64, 64], [64, 64, 48]
        g = ModelGeometry("volume3d")
        g.spatial_dims, g.in_shape, g.resize_to  # 3, [1, 32, 32, 32], [32, 32, 32]
    """

    mode: str = ScanMode.SLICES
    image_size: Sequence[int] | None = None
    slice_dim: int | None = 2
    num_slices: int = 48
    in_channels: int = 1

    def __post_init__(self) -> None:
        modes = [m.value for m in ScanMode]
        if self.mode not in modes:
            raise ValueError(f"mode must be one of {modes}, got {self.mode!r}.")
        mode = ScanMode(self.mode)
        size = DEFAULT_IMAGE_SIZE[mode] if self.image_size is None else tuple(int(s) for s in self.image_size)
        if len(size) != self.spatial_dims:
            raise ValueError(
                f"image_size {list(size)} must have {self.spatial_dims} values in mode {mode.value!r} "
                f"({'in-plane size of the slices' if mode == ScanMode.SLICES else 'the whole model grid'})."
            )
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "image_size", size)
        if mode == ScanMode.SLICES:
            if self.slice_dim not in (0, 1, 2):
                raise ValueError(f"slice_dim must be 0, 1 or 2 in mode 'slices', got {self.slice_dim!r}.")
            if int(self.num_slices) < 1:
                raise ValueError(f"num_slices must be positive, got {self.num_slices}.")
        else:
            object.__setattr__(self, "slice_dim", None)

    @property
    def spatial_dims(self) -> int:
        """Spatial dimensions of the networks: 3 for ``"volume3d"``, else 2."""
        return 3 if self.mode == ScanMode.VOLUME3D else 2

    @property
    def input_spatial_dims(self) -> int:
        """Spatial dimensions of the scans read: 2 for ``"image2d"``, else 3."""
        return 2 if self.mode == ScanMode.IMAGE2D else 3

    @property
    def in_shape(self) -> list[int]:
        """Channel-first input shape of the networks, e.g. ``[1, 64, 64]``."""
        return [int(self.in_channels), *self.image_size]

    @property
    def resize_to(self) -> list[int]:
        """The grid every scan is resized to: ``image_size``, with ``num_slices`` inserted at ``slice_dim``."""
        size = list(self.image_size)
        if self.slice_dim is not None:
            size.insert(self.slice_dim, int(self.num_slices))
        return size

    @property
    def axcodes(self) -> str:
        """Orientation the scans are brought to: ``"RAS"`` for volumes, ``"RA"`` for 2D images."""
        return "RA" if self.input_spatial_dims == 2 else "RAS"

    @property
    def resize_mode(self) -> str:
        """Interpolation of the resize: bilinear for 2D images, trilinear for volumes."""
        return "bilinear" if self.input_spatial_dims == 2 else "trilinear"

    def inferer(self, sw_batch_size: int = 128) -> Inferer:
        """
        The inferer that gives the scorer's maps of a whole preprocessed scan: MONAI's ``SliceInferer`` along
        ``slice_dim`` for ``"slices"``, a ``SimpleInferer`` otherwise.

        Args:
            sw_batch_size: slices scored per network call.
        """
        if self.slice_dim is None:
            return SimpleInferer()
        return SliceInferer(
            spatial_dim=self.slice_dim, roi_size=self.image_size, sw_batch_size=sw_batch_size, progress=False
        )

    def slice_sampling(self, num_samples: int, foreground_threshold: float = -0.5) -> list[MapTransform]:
        """
        Training transforms that cut ``num_samples`` random slices along ``slice_dim`` through the foreground (image
        intensity above ``foreground_threshold`` after scaling to [-1, 1]) and drop the slice axis; empty for the
        whole-image modes, which train on whole images.

        Args:
            num_samples: slices drawn per volume.
            foreground_threshold: intensity above which a voxel may be a slice centre.
        """
        if self.slice_dim is None:
            return []
        crop = [-1, -1, -1]
        crop[self.slice_dim] = 1
        return [
            EnsureTyped(keys="image", track_meta=False),
            CopyItemsd(keys="image", names="foreground"),
            ThresholdIntensityd(keys="foreground", threshold=foreground_threshold, above=True, cval=0.0),
            FgBgToIndicesd(keys="foreground"),
            RandCropByPosNegLabeld(
                keys="image",
                label_key="foreground",
                spatial_size=crop,
                pos=1,
                neg=0,
                num_samples=int(num_samples),
                fg_indices_key="foreground_fg_indices",
                bg_indices_key="foreground_bg_indices",
            ),
            SqueezeDimd(keys="image", dim=self.slice_dim + 1),
            DeleteItemsd(keys=["foreground", "foreground_fg_indices", "foreground_bg_indices"]),
        ]

    def augmentation(
        self, prob: float, rotate: float = 0.1, scale: float = 0.05, translate: float = 2.0
    ) -> list[MapTransform]:
        """
        Random affine augmentation of each training image or slice (MONAI's ``RandAffined``, border padding), or
        nothing when ``prob`` is 0: one rotation angle in 2D, three in 3D, up to ``rotate`` radians; scaling up to
        ``scale``; shifts up to ``translate`` voxels.

        Args:
            prob: probability of augmenting an image.
            rotate: largest rotation (radians) about each axis.
            scale: largest relative scaling.
            translate: largest shift in voxels.
        """
        if prob <= 0:
            return []
        dims = self.spatial_dims
        return [
            RandAffined(
                keys="image",
                prob=float(prob),
                rotate_range=(rotate,) if dims == 2 else (rotate,) * 3,
                scale_range=(scale,) * dims,
                translate_range=(translate,) * dims,
                padding_mode="border",
            )
        ]
