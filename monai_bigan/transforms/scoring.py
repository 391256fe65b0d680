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
"""Post-processing transforms that turn the scorer's voxel maps into per-image and per-volume anomaly scores."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_bigan.utils.enums import AnomalyKeys

__all__ = ["AnomalyScored"]


class AnomalyScored(MapTransform):
    """
    Per-volume anomaly score A = alpha * L_G + (1 - alpha) * L_D from the channel-first maps of
    :py:class:`monai_bigan.inferers.AnomalyScorer` (residual, reconstruction, L_D map), for one item (not a batch).

    - Images scored whole (2D images, or volumes with a 3D model; ``slice_dim=None``): L_G is the mean residual and
      L_D the mean of the L_D map.
    - Volumes scored slice by slice with a 2D model (``slice_dim`` = the spatial axis the slices were taken along,
      2 for axial slices of RAS volumes): each slice gets A_s = alpha * L_G_s + (1 - alpha) * L_D_s, and the volume
      score is the mean of the ``top_k`` largest A_s, so that a focal lesion in a few slices is not diluted by the
      healthy rest. The components are averaged over the same slices. Slices with less than ``min_foreground`` of
      their area above ``foreground_threshold`` in ``image_key`` are skipped: the ends of a volume hold almost no
      anatomy, the model rarely saw such slices in training, and they would otherwise dominate the score.

    - ``top_fraction`` set (any of the above): L_G is instead the mean of the largest ``top_fraction`` of the residual
      map's foreground voxels (all voxels when no ``image_key``), e.g. 0.001 for the top 0.1 %: a small focal lesion
      then weighs as much as a large one instead of being diluted by the healthy rest of its slices. L_D is taken as
      above. Best used on a normalized, smoothed map (:py:class:`monai_bigan.transforms.HeatmapPostprocessd`).

    Writes ``score``, ``score_residual`` (L_G), ``score_discriminator`` (L_D), each a 1-element float tensor,
    ``worst_slice`` (index of the most anomalous slice along ``slice_dim``, or along the last axis of a volume scored
    whole; -1 for 2D images) and ``slice_map`` (1, *spatial), each voxel holding the score of its slice, which
    ``Invertd`` can bring back to the input's geometry.

    Args:
        keys: key of the scorer maps, usually ``"pred"``.
        alpha: weight of L_G (EGBAD: 0.9).
        slice_dim: spatial axis of the slices, or None to score the image as a whole.
        top_k: number of slices averaged into the volume score.
        image_key: key of the preprocessed image, for the foreground test; None scores every slice.
        foreground_threshold: intensity (after scaling to [-1, 1]) above which a voxel is foreground.
        min_foreground: smallest foreground fraction of a slice for it to be scored.
        top_fraction: if given, in (0, 1]: L_G is the mean of this fraction of the largest foreground residuals.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        maps = {"pred": torch.rand(3, 64, 64, 40)}  # 2D model stitched over 40 axial slices
        out = AnomalyScored("pred", alpha=0.9, slice_dim=2, top_k=5)(maps)
        out["score"].shape  # (1,)
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        alpha: float = 0.9,
        slice_dim: int | None = None,
        top_k: int = 8,
        image_key: str | None = "image",
        foreground_threshold: float = -0.9,
        min_foreground: float = 0.05,
        top_fraction: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if top_fraction is not None and not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}.")
        self.top_fraction = top_fraction
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        self.alpha = alpha
        self.slice_dim = slice_dim
        self.top_k = top_k
        self.image_key = image_key
        self.foreground_threshold = foreground_threshold
        self.min_foreground = min_foreground

    def score(self, maps: torch.Tensor, image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Scores of one channel-first map tensor (residual, reconstruction, L_D) and optionally its image."""
        meta = maps.meta if isinstance(maps, MetaTensor) else None
        maps = torch.as_tensor(maps).float()
        if maps.ndim < 2 or maps.shape[0] < 3:
            raise ValueError(f"expected channel-first maps with 3 channels, got shape {tuple(maps.shape)}.")
        residual, ld = maps[0], maps[2]
        if self.slice_dim is not None and not 0 <= self.slice_dim < residual.ndim:
            raise ValueError(f"slice_dim {self.slice_dim} is out of range for spatial shape {tuple(residual.shape)}.")
        # slices localize the anomaly even when the volume is scored whole (then along the last, axial, axis)
        axis = self.slice_dim if self.slice_dim is not None else (residual.ndim - 1 if residual.ndim == 3 else None)
        out: dict[str, torch.Tensor] = {}
        if axis is None:
            worst = torch.tensor(-1)
        else:
            other = tuple(d for d in range(residual.ndim) if d != axis)
            lg_s, ld_s = residual.mean(dim=other), ld.mean(dim=other)
            per_slice = self.alpha * lg_s + (1.0 - self.alpha) * ld_s
            if image is not None:
                foreground = (torch.as_tensor(image)[0].float() > self.foreground_threshold).float().mean(dim=other)
                keep = foreground >= self.min_foreground
                if bool(keep.any()):
                    per_slice = torch.where(keep, per_slice, torch.full_like(per_slice, float("-inf")))
            k = min(self.top_k, int(torch.isfinite(per_slice).sum()))
            top = torch.topk(per_slice, k=k).indices
            worst = top[0]
            # per-slice scores as a volume, so that inverting it finds the slice in the input's own geometry
            shape = [1] * residual.ndim
            shape[axis] = -1
            slice_map = torch.nan_to_num(per_slice, neginf=0.0).reshape(shape).expand_as(residual)
            slice_map = slice_map.unsqueeze(0).contiguous()
            # a MetaTensor like the maps, so Invertd maps it back with the image's geometry
            out[AnomalyKeys.SLICE_MAP] = slice_map if meta is None else MetaTensor(slice_map, meta=meta)
        if self.slice_dim is None or axis is None:
            lg, ldv = residual.mean().reshape(1), ld.mean().reshape(1)
            score = self.alpha * lg + (1.0 - self.alpha) * ldv
        else:
            lg, ldv, score = lg_s[top].mean().reshape(1), ld_s[top].mean().reshape(1), per_slice[top].mean().reshape(1)
        if self.top_fraction is not None:
            values = residual.reshape(-1)
            if image is not None:
                foreground = (torch.as_tensor(image)[0].float() > self.foreground_threshold).reshape(-1)
                if bool(foreground.any()):
                    values = values[foreground]
            k = max(1, int(round(self.top_fraction * values.numel())))
            lg = torch.topk(values, k=k).values.mean().reshape(1)
            score = self.alpha * lg + (1.0 - self.alpha) * ldv
        out.update(
            {
                AnomalyKeys.SCORE: score,
                AnomalyKeys.SCORE_RESIDUAL: lg,
                AnomalyKeys.SCORE_DISCRIMINATOR: ldv,
                AnomalyKeys.WORST_SLICE: worst.reshape(()),
            }
        )
        return out

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d.get(self.image_key) if self.image_key is not None else None
            d.update(self.score(d[key], image))
        return d
