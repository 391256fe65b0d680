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
"""GPU speed options that bundle configs switch on: mixed-precision dtype, channels-last and compilation."""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["amp_dtype", "autocast_kwargs", "channels_last_kwargs", "compile_networks"]

logger = logging.getLogger(__name__)


def amp_dtype(device: str | torch.device, preferred: str = "auto") -> torch.dtype:
    """
    Autocast dtype: bfloat16 where the GPU supports it (no loss scaling needed), float16 otherwise.

    Args:
        device: the training device.
        preferred: ``"auto"``, ``"bfloat16"`` or ``"float16"``.
    """
    if preferred not in ("auto", "bfloat16", "float16"):
        raise ValueError(f"amp dtype must be 'auto', 'bfloat16' or 'float16', got {preferred!r}.")
    if preferred != "auto":
        return getattr(torch, preferred)
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast_kwargs(device: str | torch.device, preferred: str = "auto") -> dict:
    """Keyword arguments of ``torch.autocast`` for the engines' ``amp_kwargs``: the dtype of :py:func:`amp_dtype`."""
    return {"dtype": amp_dtype(device, preferred)}


def channels_last_kwargs(enabled: bool, spatial_dims: int) -> dict:
    """``Tensor.to`` keyword arguments for channels-last input batches (2D only: 3D uses channels_last_3d rarely)."""
    return {"memory_format": torch.channels_last} if enabled and spatial_dims == 2 else {}


def compile_networks(*modules: nn.Module | None, enabled: bool = True) -> None:
    """
    ``torch.compile`` each module in place (``nn.Module.compile``), which keeps its state-dict keys, so
    checkpoints stay loadable without compilation. Sub-modules of a ``BiGAN`` are compiled one by one because
    the trainer calls them directly (ALAD's ``discriminator_xx`` and ``discriminator_zz`` included when set).
    """
    if not enabled:
        return
    for module in modules:
        if module is None:
            continue
        for name in ("encoder", "generator", "discriminator", "discriminator_xx", "discriminator_zz"):
            child = getattr(module, name, None)
            if isinstance(child, nn.Module):
                child.compile()
        logger.info(f"compiled {type(module).__name__} with torch.compile")
