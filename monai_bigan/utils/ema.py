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
"""Exponential moving average (EMA) of network weights, as EGBAD and ALAD score with (decay 0.999)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_decay_at", "update_ema"]


def ema_decay_at(decay: float, num_updates: int, warmup: bool = True) -> float:
    """
    Effective EMA decay after ``num_updates`` updates.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` (the ``num_updates`` rule of TensorFlow's
    ``ExponentialMovingAverage`` that the reference EGBAD code uses), so that short runs are not dominated by the
    random initial weights: after 300 updates a plain 0.999 average still holds 74 % of the initialization.

    Args:
        decay: the target decay in [0, 1).
        num_updates: number of updates done so far.
        warmup: whether to apply the warm-up rule.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates)) if warmup else decay


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """
    In-place update ``ema = decay * ema + (1 - decay) * model`` of the floating-point parameters, and a copy of the
    buffers (e.g. BatchNorm running statistics), using fused ``foreach`` kernels and no host-device sync.

    Args:
        ema_model: the averaged copy, same architecture as ``model``.
        model: the network being trained.
        decay: weight of the old average.

    Example::

        net = torch.nn.Linear(2, 2)
        ema = copy.deepcopy(net).requires_grad_(False)
        update_ema(ema, net, decay=0.999)
    """
    ema_params = [p for p in ema_model.parameters() if p.dtype.is_floating_point]
    params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
    if len(ema_params) != len(params):
        raise ValueError("ema_model and model must have the same parameters.")
    if ema_params:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    ema_buffers = list(ema_model.buffers())
    buffers = list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, buffers)
