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
"""Post-processing of the residual heatmap before it is scored, calibrated and written."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import GaussianSmooth, MapTransform

from monai_bigan.inferers.residual_statistics import ResidualStatistics

__all__ = ["HeatmapPostprocessd"]


class HeatmapPostprocessd(MapTransform):
    """
    Post-process the residual channel (channel 0) of the scorer maps of one item, on the model grid, in this order:

        1. ``statistics``: normalize each voxel's residual by the healthy statistics at that location,
           :py:class:`monai_bigan.inferers.ResidualStatistics` (stored in the model checkpoint), from channels 0
           (signed residual) and 1 (reconstruction). Skipped when None.
        2. ``sigma`` > 0: Gaussian smoothing over all spatial dimensions (sigma in voxels of the model grid), which
           suppresses isolated noisy voxels and favours compact lesions.
        3. ``mask``: zero outside the body/brain, the voxels of ``image_key`` at or below ``foreground_threshold``
           (background is -1 after the intensity scaling of the bundles).

    The other channels (reconstruction, discriminator term) are left unchanged, so
    :py:class:`monai_bigan.transforms.AnomalyScored`, the calibration and the written heatmaps all use the processed
    residual.

    Args:
        keys: key of the scorer maps, usually ``"pred"``.
        statistics: healthy residual statistics, or None.
        sigma: Gaussian smoothing sigma in voxels; 0 disables smoothing.
        mask: whether to zero the map outside the foreground of ``image_key``.
        image_key: key of the preprocessed image, for the mask.
        foreground_threshold: intensity above which a voxel is foreground.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        post = HeatmapPostprocessd("pred", statistics=stats, sigma=1.0, mask=True)
        out = post({"pred": torch.rand(3, 64, 64, 48), "image": torch.rand(1, 64, 64, 48) * 2 - 1})  # 3D grid
        out = post2d({"pred": torch.rand(3, 64, 64), "image": torch.rand(1, 64, 64) * 2 - 1})       # 2D grid
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        statistics: ResidualStatistics | None = None,
        sigma: float = 0.0,
        mask: bool = False,
        image_key: str = "image",
        foreground_threshold: float = -0.9,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if sigma < 0:
            raise ValueError(f"sigma must be non-negative, got {sigma}.")
        self.statistics = statistics
        self.sigma = float(sigma)
        self.mask = mask
        self.image_key = image_key
        self.foreground_threshold = foreground_threshold

    def process(self, maps: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The maps with channel 0 post-processed; same shape, type and meta data."""
        residual = torch.as_tensor(maps[:1]).as_subclass(torch.Tensor).float()
        if self.statistics is not None:
            if not self.statistics.is_fitted:
                raise RuntimeError(
                    "the residual statistics are not fitted: load them from a checkpoint written by the training "
                    "bundle with heatmap_normalize=true (key 'residual_statistics'), or set heatmap_normalize to false."
                )
            both = torch.as_tensor(maps[:2]).as_subclass(torch.Tensor)
            residual = self.statistics.normalize(both).to(residual.device)
        if self.sigma > 0:
            residual = GaussianSmooth(sigma=self.sigma)(residual)
            residual = torch.as_tensor(residual).as_subclass(torch.Tensor)
        if self.mask:
            if image is None:
                raise ValueError(f"mask=True needs the preprocessed image under {self.image_key!r}.")
            foreground = torch.as_tensor(image[:1]).as_subclass(torch.Tensor).to(residual.device)
            if foreground.shape != residual.shape:
                raise ValueError(
                    f"image shape {tuple(foreground.shape)} does not match the map shape {tuple(residual.shape)}."
                )
            residual = residual * (foreground > self.foreground_threshold)
        out = maps.clone()
        out[:1] = residual.to(out.dtype)
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.process(d[key], d.get(self.image_key))
        return d
