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
Voxel-wise statistics of healthy images on a fixed model grid, shared by
:py:class:`monai_bigan.inferers.ResidualStatistics` and the baselines of :py:mod:`monai_bigan.baselines`
(:py:class:`~monai_bigan.baselines.ZScoreBaseline`, :py:class:`~monai_bigan.baselines.PCABaseline`):

- :py:class:`ZScoreMode`, :py:func:`check_mode` and :py:func:`deviations`: which deviations from the healthy
  statistics count as anomalous;
- :py:func:`floored_std`: the noise floor of a voxel-wise standard deviation;
- :py:func:`iter_images`: channel-first items from tensors, arrays, data sets or data loaders, to fit on;
- :py:class:`FittedStatistics`: the base module whose fitted statistics are buffers sized by the fit, so that an
  unfitted module loads a fitted ``state_dict``.

This module imports nothing from :py:mod:`monai_bigan` (the baselines import it, not the other way round).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["FittedStatistics", "ZScoreMode", "check_mode", "deviations", "floored_std", "iter_images", "to_tensor"]


class ZScoreMode:
    """
    Which deviations from the healthy statistics count as anomalous, in :py:class:`monai_bigan.baselines.ZScoreBaseline`
    and :py:class:`monai_bigan.inferers.ResidualStatistics`: both signs (``ABS``), only brighter than healthy
    (``POSITIVE``) or only darker (``NEGATIVE``).
    """

    ABS = "abs"
    POSITIVE = "positive"
    NEGATIVE = "negative"


def check_mode(mode: str) -> str:
    """
    Validate a :py:class:`ZScoreMode` value.

    Args:
        mode: ``"abs"``, ``"positive"`` or ``"negative"``.

    Returns:
        ``mode``.

    Raises:
        ValueError: for any other value.
    """
    if mode not in (ZScoreMode.ABS, ZScoreMode.POSITIVE, ZScoreMode.NEGATIVE):
        raise ValueError(f"mode must be 'abs', 'positive' or 'negative', got {mode!r}.")
    return mode


def deviations(z: torch.Tensor, mode: str) -> torch.Tensor:
    """
    The deviations of a signed z map that ``mode`` counts: ``|z|``, ``max(z, 0)`` or ``max(-z, 0)``.

    Args:
        z: signed z map, any shape.
        mode: a :py:class:`ZScoreMode` value (``"abs"``, ``"positive"`` or ``"negative"``).
    """
    if mode == ZScoreMode.ABS:
        return z.abs()
    return z.clamp_min(0) if mode == ZScoreMode.POSITIVE else (-z).clamp_min(0)


def floored_std(std: torch.Tensor, global_std: torch.Tensor, min_std: float, eps: float) -> torch.Tensor:
    """
    ``std`` ``(C, *spatial)`` floored at ``max(min_std * global_std, eps)`` per channel, without a host sync.

    Args:
        std: voxel-wise standard deviation, ``(C, *spatial)``.
        global_std: pooled standard deviation of each channel, ``(C,)``.
        min_std: floor relative to ``global_std``.
        eps: absolute floor.
    """
    floor = (global_std * min_std).clamp_min(eps)
    return torch.maximum(std, floor.reshape((-1,) + (1,) * (std.dim() - 1)))


def to_tensor(data: Any) -> torch.Tensor:
    """A plain (not MetaTensor) detached tensor from a tensor or an array."""
    if isinstance(data, torch.Tensor):
        return data.detach().as_subclass(torch.Tensor)
    return torch.as_tensor(np.asarray(data))


def iter_images(source: Any, image_key: str = "image", batched: bool | None = None) -> Iterator[torch.Tensor]:
    """
    Yield channel-first items ``(C, *spatial)`` as plain tensors from the sources the statistics can be fitted on.

    Args:
        source: one of

            - a tensor or array ``(N, C, *spatial)``: a stack of N items (e.g. 2D slices of several volumes);
            - an iterable (list, MONAI ``Dataset``, generator) of items ``(C, *spatial)``, or of dictionaries holding
              them under ``image_key``;
            - a ``torch.utils.data.DataLoader`` (MONAI's included) yielding batches ``(B, C, *spatial)``, or
              dictionaries holding them under ``image_key``. A list or tuple element (e.g. from a ``TensorDataset``)
              counts by its first entry.
        image_key: key of the image in dictionary elements.
        batched: whether the elements of an iterable are batches ``(B, C, *spatial)`` rather than items; by default
            True for a ``DataLoader`` and False otherwise.

    Returns:
        an iterator over ``(C, *spatial)`` tensors.

    Raises:
        KeyError: when a dictionary element lacks ``image_key``.
    """
    if isinstance(source, (torch.Tensor, np.ndarray)):
        yield from to_tensor(source).unbind(0)
        return
    if batched is None:
        batched = isinstance(source, DataLoader)
    for element in source:
        if isinstance(element, Mapping):
            if image_key not in element:
                raise KeyError(f"image_key {image_key!r} not in the data dictionary (keys: {list(element)}).")
            element = element[image_key]
        elif isinstance(element, (list, tuple)):
            element = element[0]
        data = to_tensor(element)
        if batched:
            yield from data.unbind(0)
        else:
            yield data


class FittedStatistics(nn.Module):
    """
    Base of the modules holding fitted voxel-wise statistics: no trainable parameters, fitted statistics as buffers
    whose shapes are only known after fitting, so that loading a fitted ``state_dict`` into a fresh (unfitted) module
    resizes them.

    Subclasses register a ``mean`` buffer (empty until fitted) beside their other statistics.
    """

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        for name, buffer in self._buffers.items():
            key = prefix + name
            if buffer is not None and key in state_dict and isinstance(state_dict[key], torch.Tensor):
                if state_dict[key].shape != buffer.shape:
                    self._buffers[name] = torch.empty(state_dict[key].shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @property
    def is_fitted(self) -> bool:
        """Whether the statistics are set (by ``fit`` or by loading a fitted ``state_dict``)."""
        return self.mean.numel() > 0

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """The fitted item shape ``(C, *spatial)``; empty before fitting."""
        return tuple(self.mean.shape) if self.is_fitted else ()
