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
Small factories that the bundle configs call, so that the JSON holds wiring and hyper-parameters, not programs.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from monai_bigan.networks import (
    BiGAN,
    Encoder,
    Generator,
    ImagePairDiscriminator,
    JointDiscriminator,
    LatentPairDiscriminator,
)
from monai_bigan.utils.bundle import as_bool

from .geometry import ModelGeometry

__all__ = [
    "build_bigan",
    "place_network",
    "ema_copy",
    "scoring_network",
    "encoder_generator_parameters",
    "validation_interval",
    "split_holdout",
    "checkpoint_objects",
    "default_device",
    "default_num_workers",
    "gan_training_scans",
    "statistics_scans",
    "every_n_events",
    "scalar_losses",
]


def build_bigan(
    geometry: ModelGeometry,
    latent_size: int = 64,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2, 2),
    norm: str | None = "batch",
    spectral_norm: bool | str = False,
    alad_dxx: bool | str = False,
    alad_dzz: bool | str = False,
) -> BiGAN:
    """
    The BiGAN of a bundle: encoder E, generator G (mirrored channels), joint discriminator D(x, z), and ALAD's D_xx
    and D_zz when asked for, all with the spatial dimensions and input shape of ``geometry``.

    Args:
        geometry: the model geometry (its ``spatial_dims`` and ``in_shape``).
        latent_size: size of the code z.
        channels: channels of the encoder's and discriminators' downsampling stages (the generator mirrors them).
        strides: strides of those stages.
        norm: normalization of E and G (``"batch"``, ``"instance"``, None).
        spectral_norm: spectral normalization in E and every discriminator.
        alad_dxx: add ALAD's image-pair discriminator D_xx.
        alad_dzz: add ALAD's latent-pair discriminator D_zz.

    Example::

        net = build_bigan(ModelGeometry("slices"))    # 2D: x [B, 1, 64, 64], z [B, 64]
        net = build_bigan(ModelGeometry("volume3d"))  # 3D: x [B, 1, 32, 32, 32]
    """
    dims, in_shape, sn = geometry.spatial_dims, geometry.in_shape, as_bool(spectral_norm)
    channels, strides = list(channels), list(strides)
    return BiGAN(
        encoder=Encoder(dims, in_shape, latent_size, channels=channels, strides=strides, norm=norm, spectral_norm=sn),
        generator=Generator(dims, latent_size, in_shape, channels=channels[::-1], strides=strides, norm=norm),
        discriminator=JointDiscriminator(
            dims, in_shape, latent_size, channels=channels, strides=strides, spectral_norm=sn
        ),
        discriminator_xx=(
            ImagePairDiscriminator(dims, in_shape, channels=channels, strides=strides, spectral_norm=sn)
            if as_bool(alad_dxx)
            else None
        ),
        discriminator_zz=LatentPairDiscriminator(latent_size, spectral_norm=sn) if as_bool(alad_dzz) else None,
    )


def place_network(network: nn.Module, device: str | torch.device, channels_last: bool | str = False) -> nn.Module:
    """``network`` on ``device``, in channels-last memory format when asked for and the network is 2D."""
    if as_bool(channels_last) and getattr(getattr(network, "encoder", None), "spatial_dims", 2) == 2:
        return network.to(device, memory_format=torch.channels_last)
    return network.to(device)


def ema_copy(network: nn.Module, decay: float) -> nn.Module | None:
    """A copy of ``network`` to hold the exponential moving average of its weights, or None when ``decay`` is 0."""
    return copy.deepcopy(network) if decay > 0 else None


def scoring_network(network: nn.Module, ema_network: nn.Module | None) -> nn.Module:
    """The network validation scores with: the EMA copy when there is one."""
    return network if ema_network is None else ema_network


def encoder_generator_parameters(network: BiGAN) -> Iterator[nn.Parameter]:
    """The parameters of E and G, which one optimizer steps jointly."""
    return itertools.chain(network.encoder.parameters(), network.generator.parameters())


def validation_interval(max_epochs: int, num_validations: int = 10) -> int:
    """
    Epochs between validations: the largest divisor of ``max_epochs`` not above ``max_epochs // num_validations``,
    so that the last epoch is validated (and calibrates the final model).
    """
    max_epochs = int(max_epochs)
    return next(i for i in range(max(1, max_epochs // num_validations), 0, -1) if max_epochs % i == 0)


def split_holdout(datalist: Sequence[dict], holdout: int) -> tuple[list[dict], list[dict]]:
    """
    Split the healthy training scans into those the GAN trains on and those the residual statistics are fitted on:
    the last ``holdout`` scans are held out of GAN training; with ``holdout`` 0 (or too large) both are the whole list.
    """
    datalist, holdout = list(datalist), int(holdout)
    if 0 < holdout < len(datalist):
        return datalist[: len(datalist) - holdout], datalist[len(datalist) - holdout :]
    return datalist, datalist


def checkpoint_objects(**objects: Any) -> dict[str, Any]:
    """The objects to checkpoint, keyed by name, without the ones that are None (e.g. no EMA copy)."""
    return {name: obj for name, obj in objects.items() if obj is not None}


def default_device(local_rank: int | str | None = None) -> torch.device:
    """The first GPU (or this process's GPU under torchrun, ``LOCAL_RANK``) when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    rank = os.environ.get("LOCAL_RANK", "0") if local_rank is None else local_rank
    return torch.device(f"cuda:{int(rank)}")


def default_num_workers(processes_per_node: int | None = None, cap: int = 4) -> int:
    """
    Data loader workers per process: half the CPUs of the process's share minus one, at most ``cap``; 0 on small
    machines, where a background thread (``ThreadDataLoader``) prepares batches instead.
    """
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if processes_per_node is None else processes_per_node
    return min(cap, max(0, (os.cpu_count() or 1) // (2 * max(processes, 1)) - 1))


def gan_training_scans(datalist: Sequence[dict], holdout: int = 0) -> list[dict]:
    """The healthy training scans the GAN trains on: all but the last ``holdout`` (see :py:func:`split_holdout`)."""
    return split_holdout(datalist, holdout)[0]


def statistics_scans(datalist: Sequence[dict], holdout: int = 0) -> list[dict]:
    """The healthy training scans the residual statistics are fitted on (see :py:func:`split_holdout`)."""
    return split_holdout(datalist, holdout)[1]


def every_n_events(engine: Any, event: int, n: int = 10) -> bool:
    """Event filter of MONAI's stats handlers (``iteration_log``): true every ``n``-th event."""
    return event % int(n) == 0


def scalar_losses(output: dict, keys: Sequence[str] = ("d_loss", "eg_loss", "recon_loss")) -> dict[str, float]:
    """The losses of a training iteration's output that the stats handlers log, as floats (one host sync each)."""
    return {key: output[key].item() for key in keys if key in output}
