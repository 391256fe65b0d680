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
Voxel-wise z-score baseline: the mean and standard deviation of each voxel of the fixed model grid over the healthy
training population, and ``|x - mean| / std`` as the anomaly map.

The helpers it shares with :py:class:`monai_bigan.inferers.ResidualStatistics` (``ZScoreMode``, the std floor, the
item iterator) are in :py:mod:`monai_bigan.inferers.voxel_statistics`; ``ZScoreMode`` is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from monai_bigan.baselines.base import FittedBaseline
from monai_bigan.inferers.voxel_statistics import ZScoreMode, check_mode, deviations, floored_std, iter_images

__all__ = ["ZScoreBaseline", "ZScoreMode"]


class ZScoreBaseline(FittedBaseline):
    """
    Voxel-wise z-score anomaly maps against the healthy training population on a fixed grid.

    ``fit`` streams over the training items once, accumulating the voxel-wise mean and sum of squared deviations in
    float64 (Welford's algorithm), so the training set never needs to be in memory. ``forward(x)`` returns, like
    :py:class:`monai_bigan.inferers.AnomalyScorer`, a tensor ``(B, 3, *spatial)``:

        - channel 0: the z-score map ``|x - mean| / std`` (``mode="abs"``), ``max((x - mean) / std, 0)``
          (``"positive"``: only brighter than healthy, e.g. FLAIR hyperintense lesions) or ``max((mean - x) / std, 0)``
          (``"negative"``), averaged over the input channels;
        - channel 1: the healthy mean image (first input channel), the baseline's "reconstruction";
        - channel 2: zeros (there is no discriminator term), so that :py:class:`monai_bigan.transforms.AnomalyScored`
          gives ``alpha`` times the mean z-score (use ``alpha=1.0`` for the plain mean).

    ``std`` is the sample standard deviation (ddof=1) of each voxel, floored at ``max(min_std * global_std, eps)``
    with ``global_std`` the standard deviation of all training voxels of the channel pooled: background voxels that
    are constant over the training set (-1 after intensity scaling) would otherwise divide by ~0. The floor is applied
    in ``forward``, so ``min_std`` and ``eps`` can be changed after fitting.

    The statistics are buffers (``mean``, ``std``, ``global_std``, ``num_samples``): the module moves with
    ``.to(device)``, saves with ``state_dict`` and loads into a fresh ``ZScoreBaseline()``. It has no parameters, so
    MONAI's inferers (``SimpleInferer``, ``SliceInferer``) can call it like a network. Inputs must be resized to the
    fitted grid; one class serves 2D and 3D grids.

    Args:
        mode: ``"abs"``, ``"positive"`` or ``"negative"`` (see above).
        min_std: floor of the voxel std, relative to the pooled training std of the channel.
        eps: absolute floor of the voxel std.

    Example::

        # 3D: volumes resized to a fixed grid, scored whole
        zs = ZScoreBaseline(mode="abs").fit(train_loader)           # batches {"image": (B, 1, 64, 64, 48)}
        maps = zs(torch.rand(2, 1, 64, 64, 48) * 2 - 1)             # (2, 3, 64, 64, 48)
        # 2D: fitted on (C, H, W) items, e.g. axial slices at a fixed position, or called through a SliceInferer
        zs2d = ZScoreBaseline().fit(torch.rand(20, 1, 64, 64))      # 20 items of shape (1, 64, 64)
        maps = zs2d(torch.rand(4, 1, 64, 64))                       # (4, 3, 64, 64)

    Note:
        Fitting a 2D model on slices pooled from all positions of a volume gives per-pixel statistics averaged over
        the slice positions; the 3D variant on the whole grid keeps the statistics of each position.
    """

    def __init__(self, mode: str = ZScoreMode.ABS, min_std: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__()
        if min_std < 0 or eps < 0:
            raise ValueError(f"min_std and eps must be non-negative, got {min_std} and {eps}.")
        self.mode = check_mode(mode)
        self.min_std = float(min_std)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.zeros(0))
        self.register_buffer("global_std", torch.zeros(0))
        self.register_buffer("num_samples", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, min_std={self.min_std}, eps={self.eps}, grid_shape={self.grid_shape}"

    @torch.no_grad()
    def fit(
        self, source: Iterable | torch.Tensor | np.ndarray, image_key: str = "image", batched: bool | None = None
    ) -> ZScoreBaseline:
        """
        Compute the voxel-wise statistics of the healthy training items, in one streaming pass.

        Args:
            source: a stack ``(N, C, *spatial)``, an iterable of items ``(C, *spatial)`` (or of dictionaries holding
                them under ``image_key``), or a ``DataLoader`` yielding batches ``(B, C, *spatial)`` or dictionaries
                of them; see :py:func:`monai_bigan.inferers.voxel_statistics.iter_images`. All items must share one
                shape, the fixed grid.
            image_key: key of the image in dictionary elements.
            batched: whether the elements of an iterable are batches; by default True for a ``DataLoader`` only.

        Returns:
            self, fitted.

        Raises:
            ValueError: when the items differ in shape, are not channel-first arrays, or are fewer than two.
        """
        count = 0
        mean: torch.Tensor | None = None
        m2: torch.Tensor | None = None
        for item in iter_images(source, image_key=image_key, batched=batched):
            if item.dim() < 2:
                raise ValueError(f"items must be channel-first (C, *spatial), got shape {tuple(item.shape)}.")
            x = item.to(torch.float64)
            if mean is None or m2 is None:
                mean, m2 = torch.zeros_like(x), torch.zeros_like(x)
            elif x.shape != mean.shape:
                raise ValueError(
                    f"all items must share the fixed grid: item {count} has shape {tuple(x.shape)}, "
                    f"the first had {tuple(mean.shape)}."
                )
            count += 1
            delta = x - mean
            mean += delta / count
            m2 += delta * (x - mean)
        if mean is None or m2 is None or count < 2:
            raise ValueError(f"ZScoreBaseline needs at least two training items, got {count}.")
        var = m2 / (count - 1)
        # pooled variance of all voxels of each channel: within-voxel plus between-voxel sum of squares
        spatial = tuple(range(1, mean.dim()))
        grand_mean = mean.mean(dim=spatial, keepdim=True)
        total_ss = m2.sum(dim=spatial) + count * ((mean - grand_mean) ** 2).sum(dim=spatial)
        n_total = count * mean[0].numel()
        global_std = torch.sqrt(total_ss / max(n_total - 1, 1))

        device = self.mean.device
        self.mean = mean.to(device=device, dtype=torch.float32)
        self.std = var.sqrt().to(device=device, dtype=torch.float32)
        self.global_std = global_std.to(device=device, dtype=torch.float32)
        self.num_samples = torch.tensor(count, dtype=torch.long, device=device)
        return self

    def effective_std(self) -> torch.Tensor:
        """
        The voxel std after the floor ``max(min_std * global_std, eps)``, shape ``(C, *spatial)``.

        Raises:
            RuntimeError: when the module is not fitted.
        """
        if not self.is_fitted:
            raise RuntimeError("ZScoreBaseline is not fitted: call fit() or load a fitted state_dict first.")
        return floored_std(self.std, self.global_std, self.min_std, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: batch ``(B, C, *spatial)`` on the fitted grid.

        Returns:
            ``(B, 3, *spatial)``: z-score map, healthy mean image, zeros.

        Raises:
            RuntimeError: when the module is not fitted.
            ValueError: when ``x`` does not match the fitted grid.
        """
        x = self._check_input(x)
        mean = self.mean.to(device=x.device, dtype=x.dtype).unsqueeze(0)
        std = self.effective_std().to(device=x.device, dtype=x.dtype).unsqueeze(0)
        z = deviations((x - mean) / std, self.mode)
        return self._assemble(z, mean.expand(x.shape[0], *mean.shape[1:]))
