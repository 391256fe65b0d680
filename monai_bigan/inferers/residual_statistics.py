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
Healthy residual statistics at each location of the model grid, to turn a raw reconstruction residual into a
"how unusual is this voxel here, given the reconstruction" map.

A reconstruction model leaves larger residuals at some places of every healthy scan (tissue boundaries, where small
deformations move edges; bright structures it reconstructs blurrily, too dark or too bright). Calibrating the
reconstruction against healthy scans at each voxel and dividing by the healthy spread there removes this
anatomy-shaped background, so a lesion stands out even where healthy residuals are large.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import torch
from monai.data import decollate_batch
from monai.networks import eval_mode

from monai_bigan.inferers.voxel_statistics import (
    FittedStatistics,
    ZScoreMode,
    check_mode,
    deviations,
    floored_std,
    iter_images,
)

__all__ = ["ResidualStatistics", "residual_maps"]

logger = logging.getLogger(__name__)


class ResidualStatistics(FittedStatistics):
    """
    Voxel-wise calibration of a reconstruction against healthy scans on the fixed model grid.

    Fitted on the maps ``(residual, reconstruction)`` of healthy scans, with the signed residual ``r = x - G(E(x))``
    (:py:class:`monai_bigan.inferers.AnomalyScorer` with ``residual="signed"``, channels 0 and 1), so that the image
    is ``x = r + G(E(x))``:

    - ``regress=True`` (default): at each voxel v, the least-squares line ``x ~ a_v + b_v * G(E(x))`` over the
      healthy scans (slope clipped to ``[0, max_slope]``), and the normalized map ``|x - a_v - b_v * G(E(x))| /
      s_v`` with ``s_v`` the standard deviation of the healthy fit residuals. Where the reconstruction predicts the
      voxel (bias field, contrast, anatomy), the spread left is small and lesions stand out; where it carries no
      information (``b_v = 0``), the map falls back to the voxel-wise z-score of the image, so a blurred or biased
      reconstruction is never worse than the population statistics.
    - ``regress=False``: ``b_v = 1``, i.e. the voxel-wise z-score of the signed residual, ``|r - mean_v(r)| / std_v(r)``.

    ``s_v`` is floored at ``min_std`` times the pooled spread of the healthy *images* over the whole grid, exactly the
    floor of :py:class:`monai_bigan.baselines.ZScoreBaseline` with the same ``min_std``: a noise floor in image
    intensity units, so that voxels whose few healthy samples happen to agree (flat white matter, background) do not
    turn small intensity changes into large z values, and so that the normalized residual and the image z-score differ
    only in what they subtract.

    ``mode`` chooses which deviations count, like :py:class:`monai_bigan.baselines.ZScoreBaseline`: ``"abs"`` both,
    ``"negative"`` only darker than predicted (T1 "black holes", infarcts), ``"positive"`` only brighter (FLAIR
    hyperintensities, enhancing tumour).

    The statistics are buffers saved with ``state_dict``, stored in the model checkpoint beside the networks whose
    reconstructions they describe. Fit them on healthy scans that checkpoint selection and thresholds never see as
    test data: the training split (see :py:class:`monai_bigan.handlers.ResidualStatisticsHandler`).

    Args:
        regress: fit the per-voxel slope (True) or fix it to 1 (False).
        max_slope: upper clip of the slope.
        min_std: floor of ``s_v``, relative to the pooled spread of the healthy images over the grid.
        eps: absolute floor of ``s_v``.
        mode: ``"abs"``, ``"negative"`` or ``"positive"`` (see above).

    Example::

        # 3D grid: a 2D model stitched over 48 axial slices, or a 3D model; maps (residual, reconstruction)
        stats = ResidualStatistics().fit(torch.rand(10, 2, 64, 64, 48))   # 10 healthy scans
        z = stats.normalize(torch.rand(2, 64, 64, 48))                    # (1, 64, 64, 48), >= 0
        # 2D grid: 2D images
        stats2d = ResidualStatistics().fit(torch.rand(10, 2, 64, 64))
        z = stats2d.normalize(torch.rand(2, 64, 64))                      # (1, 64, 64)
    """

    def __init__(
        self,
        regress: bool = True,
        max_slope: float = 1.5,
        min_std: float = 0.1,
        eps: float = 1e-6,
        mode: str = ZScoreMode.ABS,
    ) -> None:
        super().__init__()
        if max_slope <= 0 or min_std < 0 or eps < 0:
            raise ValueError(f"need max_slope > 0 and non-negative floors, got {max_slope}, {min_std}, {eps}.")
        self.mode = check_mode(mode)
        self.regress = regress
        self.max_slope = float(max_slope)
        self.min_std = float(min_std)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(0))  # intercept a_v, (1, *spatial); named like the baselines'
        self.register_buffer("slope", torch.zeros(0))
        self.register_buffer("std", torch.zeros(0))
        self.register_buffer("global_std", torch.zeros(0))  # pooled spread of the healthy images: the floor's unit
        self.register_buffer("num_samples", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"regress={self.regress}, max_slope={self.max_slope}, min_std={self.min_std}, mode={self.mode!r}, "
            f"grid={self.grid_shape}"
        )

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The fitted spatial shape; empty before fitting."""
        return tuple(self.mean.shape[1:]) if self.is_fitted else ()

    @torch.no_grad()
    def fit(self, source: Iterable | torch.Tensor) -> ResidualStatistics:
        """
        Fit the per-voxel line and spread in one streaming pass (float64 sums; the scans are never all in memory).

        Args:
            source: maps ``(2, *spatial)`` (signed residual, reconstruction) of healthy scans: a stack
                ``(N, 2, *spatial)``, an iterable of items, or a data loader of batches, as
                :py:meth:`monai_bigan.baselines.ZScoreBaseline.fit` takes.

        Returns:
            self, fitted.

        Raises:
            ValueError: when the maps have fewer than 2 channels, differ in shape, or are fewer than two.
        """
        sums: dict[str, torch.Tensor] = {}
        count = 0
        shape = None
        for item in iter_images(source):
            if item.dim() < 2 or item.shape[0] < 2:
                raise ValueError(f"expected maps (residual, reconstruction, *spatial), got shape {tuple(item.shape)}.")
            if shape is not None and item.shape[1:] != shape:
                raise ValueError(f"all maps must share the fixed grid: got {tuple(item.shape[1:])} after {shape}.")
            shape = item.shape[1:]
            recon = item[1:2].to(torch.float64)
            image = item[0:1].to(torch.float64) + recon
            for name, value in (("r", recon), ("x", image), ("rr", recon * recon), ("xr", image * recon)):
                sums[name] = sums[name] + value if name in sums else value.clone()
            sums["xx"] = sums["xx"] + image * image if "xx" in sums else image * image
            count += 1
        if count < 2:
            raise ValueError(f"ResidualStatistics needs the maps of at least two healthy scans, got {count}.")
        mean_r, mean_x = sums["r"] / count, sums["x"] / count
        var_r = (sums["rr"] / count - mean_r**2).clamp_min(0)
        cov = sums["xr"] / count - mean_x * mean_r
        var_x = (sums["xx"] / count - mean_x**2).clamp_min(0)
        if self.regress:
            slope = torch.where(var_r > 1e-12, cov / var_r.clamp_min(1e-12), torch.zeros_like(var_r))
            slope = slope.clamp(0.0, self.max_slope)
        else:
            slope = torch.ones_like(var_r)
        intercept = mean_x - slope * mean_r
        # variance of the fit residual x - a - b r, unbiased for the two fitted parameters (one when b is fixed)
        dof = count - 2 if self.regress else count - 1
        var_fit = (var_x - 2 * slope * cov + slope**2 * var_r).clamp_min(0) * count / max(dof, 1)
        device = self.mean.device
        self.mean = intercept.to(device=device, dtype=torch.float32)
        self.slope = slope.to(device=device, dtype=torch.float32)
        self.std = var_fit.sqrt().to(device=device, dtype=torch.float32)
        # pooled variance of every image voxel of every scan (within- plus between-voxel), as ZScoreBaseline's
        n_total = count * mean_x.numel()
        pooled_var = (sums["xx"].mean() / count - (sums["x"].mean() / count) ** 2) * n_total / max(n_total - 1, 1)
        self.global_std = pooled_var.clamp_min(0).sqrt().reshape(1).to(device=device, dtype=torch.float32)
        self.num_samples = torch.tensor(count, dtype=torch.long, device=device)
        return self

    def effective_std(self) -> torch.Tensor:
        """``s_v`` after the floor ``max(min_std * pooled image spread, eps)``, shape ``(1, *spatial)``."""
        if not self.is_fitted:
            raise RuntimeError("ResidualStatistics is not fitted: call fit() or load a fitted state_dict first.")
        return floored_std(self.std, self.global_std, self.min_std, self.eps)

    def normalize(self, maps: torch.Tensor) -> torch.Tensor:
        """
        Normalize the maps of one scan.

        Args:
            maps: ``(C >= 2, *spatial)`` on the fitted grid, channel 0 the signed residual, channel 1 the
                reconstruction (the first two channels of the scorer's output).

        Returns:
            ``|x - a - b * G(E(x))| / s`` (``mode="abs"``; the positive or negative part of the signed value for
            the other modes), ``(1, *spatial)``, on the device of the statistics.

        Raises:
            RuntimeError: when the statistics are not fitted.
            ValueError: when the maps are not on the fitted grid or have fewer than 2 channels.
        """
        if not self.is_fitted:
            raise RuntimeError("ResidualStatistics is not fitted: call fit() or load a fitted state_dict first.")
        maps = torch.as_tensor(maps)
        if maps.dim() < 2 or maps.shape[0] < 2 or tuple(maps.shape[1:]) != self.grid_shape:
            raise ValueError(
                f"ResidualStatistics was fitted on maps (2, {', '.join(map(str, self.grid_shape))}) (residual, "
                f"reconstruction); got {tuple(maps.shape)}: resize the input to the fitted grid."
            )
        maps = maps.to(device=self.mean.device, dtype=torch.float32)
        recon = maps[1:2]
        image = maps[0:1] + recon
        return deviations((image - self.mean - self.slope * recon) / self.effective_std(), self.mode)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Batched :py:meth:`normalize`: ``(B, C >= 2, *spatial)`` -> ``(B, 1, *spatial)``."""
        return torch.stack([self.normalize(m) for m in maps])


def residual_maps(
    scorer: Callable[[torch.Tensor], torch.Tensor],
    data: Iterable,
    inferer: Callable | None = None,
    device: str | torch.device = "cpu",
    image_key: str = "image",
    non_blocking: bool = False,
) -> Iterator[torch.Tensor]:
    """
    Yield the (residual, reconstruction) maps, channels 0 and 1 of :py:class:`monai_bigan.inferers.AnomalyScorer`'s
    output, of every scan, as ``(2, *spatial)`` float tensors on ``device``, scoring in eval mode without gradients.

    Args:
        scorer: the anomaly scorer (or any module returning ``(B, >= 2, *spatial)`` maps).
        data: a data loader (or iterable) of batches, dictionaries holding ``image_key`` ``(B, C, *spatial)``.
        inferer: MONAI inferer called as ``inferer(images, network)``, e.g. a ``SliceInferer`` that stitches a 2D
            model over volumes; None calls the scorer directly.
        device: device to score on.
        image_key: key of the images in the batches.
        non_blocking: asynchronous host-to-device copies.

    Example::

        stats = ResidualStatistics().fit(residual_maps(scorer, train_loader, SliceInferer(spatial_dim=2, roi_size=(64, 64))))
    """
    modules = [scorer] if isinstance(scorer, torch.nn.Module) else []
    # the maps without the discriminator passes when the scorer can skip them
    network = getattr(scorer, "reconstruction_maps", scorer)
    with eval_mode(*modules):
        for batch in data:
            images = batch[image_key] if isinstance(batch, dict) else batch
            images = torch.as_tensor(images).to(device, non_blocking=non_blocking)
            maps = inferer(images, network) if inferer is not None else network(images)
            for item in decollate_batch(torch.as_tensor(maps)[:, :2].float(), detach=True):
                yield torch.as_tensor(item)
