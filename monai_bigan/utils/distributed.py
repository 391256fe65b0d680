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
Helpers for multi-GPU / multi-node training with PyTorch's ``DistributedDataParallel`` (DDP), as used by
``bundles/bigan/multi_gpu_train.json``. Every helper also works in a single process without a process group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from monai_bigan.utils.bundle import as_bool

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "attach_rank_zero_first",
    "bigan_parts",
    "ddp_bigan",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "rank_zero_first",
    "save_rank_state",
    "sync_buffers",
    "unwrap_bigan",
    "unwrap_module",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def unwrap_module(module: nn.Module) -> nn.Module:
    """
    The network inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper, or ``module`` itself.

    The unwrapped module shares its parameters with the wrapper; calling it bypasses DDP's gradient synchronization,
    which is what a forward pass whose parameters get no gradient (e.g. the discriminator in the encoder + generator
    step) needs.

    Args:
        module: a network, wrapped or not.
    """
    while isinstance(module, (DistributedDataParallel, DataParallel)):
        module = module.module
    return module


_BIGAN_PARTS = ("encoder", "generator", "discriminator", "discriminator_xx", "discriminator_zz")


def bigan_parts(network: nn.Module) -> dict[str, nn.Module]:
    """
    The networks of a :py:class:`monai_bigan.networks.BiGAN` by attribute name: ``encoder``, ``generator``,
    ``discriminator``, and ALAD's ``discriminator_xx`` and ``discriminator_zz`` when they are not ``None``; each as
    stored (possibly DDP-wrapped).

    Args:
        network: a ``BiGAN``.
    """
    parts = {name: getattr(network, name, None) for name in _BIGAN_PARTS}
    return {name: module for name, module in parts.items() if module is not None}


def unwrap_bigan(network: nn.Module) -> nn.Module:
    """
    A :py:class:`monai_bigan.networks.BiGAN` whose networks (encoder, generator, discriminator and the optional ALAD
    discriminators ``discriminator_xx`` and ``discriminator_zz``) are unwrapped from DDP.

    Returns ``network`` itself when none of them is wrapped; otherwise a new container sharing the same modules (and
    so the same parameters and buffers), whose state dict has no ``module.`` prefixes and loads into a plain
    ``BiGAN``.

    Args:
        network: a ``BiGAN``, possibly holding DDP-wrapped sub-networks (or wrapped itself).
    """
    from monai_bigan.networks import BiGAN

    network = unwrap_module(network)
    if not isinstance(network, BiGAN):
        return network
    parts = bigan_parts(network)
    plain = {name: unwrap_module(m) for name, m in parts.items()}
    if all(plain[name] is m for name, m in parts.items()):
        return network
    return BiGAN(**plain).train(network.training)


def ddp_bigan(network: nn.Module, device: str | torch.device | None = None, **ddp_kwargs: Any) -> nn.Module:
    """
    ``BiGAN(DDP(encoder), DDP(generator), DDP(discriminator))`` for :py:class:`monai_bigan.engines.BiGANTrainer`.

    Each sub-network gets its own DDP wrapper, so that the trainer's separate discriminator and encoder + generator
    steps each synchronize only the gradients they compute; ALAD's ``discriminator_xx`` and ``discriminator_zz``, when
    set, are wrapped in the same way. DDP broadcasts rank 0's parameters and buffers when it is constructed, so every
    rank starts from the same weights whatever its seed. The wrappers share the parameters of ``network``: keep using
    ``network`` (not the returned container) for the optimizers, the EMA copy and the checkpoints, which then hold no
    ``module.`` prefixes. Without a process group ``network`` is returned unchanged.

    Args:
        network: a ``BiGAN`` already on ``device``.
        device: the device of this rank; a CUDA device becomes DDP's ``device_ids``.
        ddp_kwargs: more arguments of ``torch.nn.parallel.DistributedDataParallel``.
    """
    from monai_bigan.networks import BiGAN

    if not is_distributed():
        return network
    if not isinstance(network, BiGAN):
        raise TypeError(f"network must be a monai_bigan.networks.BiGAN, got {type(network).__name__}.")
    device = torch.device(device) if device is not None else next(network.parameters()).device
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device])
        ddp_kwargs.setdefault("output_device", device)
    wrapped = {
        name: DistributedDataParallel(unwrap_module(m), **ddp_kwargs) for name, m in bigan_parts(network).items()
    }
    return BiGAN(**wrapped).train(network.training)


@torch.no_grad()
def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """
    Broadcast the buffers of ``module`` (e.g. BatchNorm running statistics) from rank ``src`` to all ranks, one
    collective per buffer dtype. DDP broadcasts rank 0's buffers only at the start of each forward pass, so after the
    last forward each rank holds its own statistics; this makes them identical again (no-op without a process group).

    Args:
        module: the network (wrapped or not); every rank must call this with the same architecture.
        src: the rank whose buffers are kept.
    """
    if get_world_size() < 2:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buffer in unwrap_module(module).buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = torch._utils._flatten_dense_tensors(buffers)
        dist.broadcast(flat, src)
        for buffer, synced in zip(buffers, torch._utils._unflatten_dense_tensors(flat, buffers)):
            buffer.copy_(synced)


def rank_zero_first(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """
    Call ``fn(*args, **kwargs)`` on rank 0 first, then (after a barrier) on the other ranks; return its result.

    For work that touches shared files, e.g. generating the demo data set or cleaning a checkpoint folder, so that
    the other ranks find it done instead of racing rank 0. Without a process group ``fn`` is simply called.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    if get_rank() == 0:
        try:
            return fn(*args, **kwargs)
        finally:
            dist.barrier()
    dist.barrier()
    return fn(*args, **kwargs)


def attach_rank_zero_first(handler: Any, engine: Engine, event: Any = None) -> None:
    """
    ``handler.attach(engine)``, ordered so that rank 0 runs the handler before the other ranks do.

    A barrier handler is registered on ``event`` (default ``Events.STARTED``) after the handler on rank 0 and before
    it on the other ranks. Used for :py:class:`monai_bigan.handlers.ResumeHandler`: every rank must load the same
    checkpoint (DDP synchronizes only gradients), but only rank 0 may delete stale checkpoints or temporary files.

    Args:
        handler: an object with ``attach(engine)`` registering it on ``event``.
        engine: the Ignite engine.
        event: the event the handler runs on.
    """
    event = Events.STARTED if event is None else event
    if not is_distributed():
        handler.attach(engine)
        return

    def _barrier(_: Engine) -> None:
        dist.barrier()

    if get_rank() == 0:
        handler.attach(engine)
        engine.add_event_handler(event, _barrier)
    else:
        engine.add_event_handler(event, _barrier)
        handler.attach(engine)


def save_rank_state(
    path: str | os.PathLike, modules: Mapping[str, nn.Module | None], enabled: bool | str = True
) -> None:
    """
    Debugging aid: save ``{name: module.state_dict()}`` of this rank to ``path``, formatted with ``rank=<rank>``.

    Lets a test check that all ranks end with the same weights. ``None`` modules are skipped; nothing is written when
    ``enabled`` is false (strings such as ``"false"`` from a command line override are accepted).

    Args:
        path: file name, e.g. ``"out/rank{rank}_final.pt"``.
        modules: the networks to save.
        enabled: whether to write anything.
    """
    if not as_bool(enabled):
        return
    path = os.fspath(path).format(rank=get_rank())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    states = {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in modules.items() if m is not None}
    torch.save(states, path)
