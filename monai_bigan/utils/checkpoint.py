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
"""Checkpoint helpers: random number generator states that can be checkpointed, and finding epoch checkpoints."""

from __future__ import annotations

import glob
import os
import pickle
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

__all__ = ["RNGState", "UnsafeCheckpointError", "find_checkpoints", "load_checkpoint", "scoring_network_key"]


def _numpy_state_to_list(state: tuple) -> list:
    """``RandomState.get_state()`` as a list that ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached_gaussian = state
    return [
        str(name),
        torch.as_tensor(np.asarray(keys, dtype=np.int64)),
        int(pos),
        int(has_gauss),
        float(cached_gaussian),
    ]


def _numpy_state_from_list(state: list) -> tuple:
    name, keys, pos, has_gauss, cached_gaussian = state
    keys = np.asarray(torch.as_tensor(keys).numpy(), dtype=np.int64).astype(np.uint32)
    return str(name), keys, int(pos), int(has_gauss), float(cached_gaussian)


def _randomizables(objects: Iterable[Any]) -> list[Randomizable]:
    """
    The MONAI ``Randomizable`` transforms in ``objects``, searched recursively through ``.transforms`` and through the
    attributes of random transforms (e.g. the array cropper inside ``RandCropByPosNegLabeld``, which draws with its own
    ``R``). Their ``R`` is read when saving or loading, not now: a data loader may replace it with
    ``set_random_state`` later.
    """
    found: list[Randomizable] = []

    def visit(obj: Any) -> None:
        if any(obj is r for r in found):
            return
        children = list(getattr(obj, "transforms", None) or ())
        if isinstance(obj, Randomizable):
            found.append(obj)
            children += [v for v in vars(obj).values() if isinstance(v, Randomizable) or hasattr(v, "transforms")]
        for child in children:
            visit(child)

    for obj in objects:
        visit(obj)
    return found


class RNGState:
    """
    The global random number generators (torch CPU and CUDA, NumPy, Python ``random``) and, optionally, the local
    ``RandomState`` of MONAI random transforms, as an object with ``state_dict()`` / ``load_state_dict()`` that Ignite's
    ``Checkpoint`` saves and loads beside the networks. The state holds only tensors, lists, ints, floats and strings,
    so it loads with ``torch.load(..., weights_only=True)``.

    Saved at the end of an epoch and restored when training resumes, it makes the continuation draw the same random
    numbers (shuffling, latent samples, random crops) as an uninterrupted run.

    Args:
        transforms: transforms (e.g. the training ``Compose``) whose ``Randomizable`` members' random states are also
            saved. With a data loader that uses worker processes these states live in the workers and are reseeded from
            torch every epoch, so only the main-process case needs them.

    Example::

        rng = RNGState([train_preprocessing])
        saver = CheckpointSaver(save_dir, {"network": net, "rng": rng}, save_interval=1)
    """

    def __init__(self, transforms: Iterable[Any] | Any | None = None) -> None:
        if transforms is None:
            transforms = []
        elif not isinstance(transforms, (list, tuple)):
            transforms = [transforms]
        self._randomizables = _randomizables(transforms)

    def state_dict(self) -> dict[str, Any]:
        """The current states of all the generators."""
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_list(np.random.get_state()),
            "python": list(random.getstate()),
            "transforms": [_numpy_state_to_list(t.R.get_state()) for t in self._randomizables],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """
        Restore the generators from :py:meth:`state_dict`; entries that are missing (or CUDA states on a machine with
        a different number of GPUs) leave those generators as they are.
        """
        if "torch" in state_dict:
            torch.set_rng_state(torch.as_tensor(state_dict["torch"], dtype=torch.uint8).cpu())
        if "numpy" in state_dict:
            np.random.set_state(_numpy_state_from_list(state_dict["numpy"]))
        if "python" in state_dict:
            version, internal, gauss_next = state_dict["python"]
            random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
        cuda_states = state_dict.get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in cuda_states])
        saved = state_dict.get("transforms") or []
        if len(saved) == len(self._randomizables):
            for transform, state in zip(self._randomizables, saved):
                transform.R.set_state(_numpy_state_from_list(state))


def find_checkpoints(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> list[tuple[int, str]]:
    """
    The checkpoints in ``ckpt_dir`` matching ``pattern``, as ``(number, path)`` sorted newest (largest number) first;
    the number is the last integer in the file name, e.g. the epoch of ``checkpoint_epoch=12.pt``. Temporary files of
    an atomic write in progress are hidden files and never match.

    Args:
        ckpt_dir: folder of the checkpoints; a missing folder gives an empty list.
        pattern: glob pattern of the file names.
    """
    found = []
    for path in glob.glob(os.path.join(glob.escape(os.fspath(ckpt_dir)), pattern)):
        numbers = re.findall(r"\d+", os.path.basename(path))
        if numbers and os.path.isfile(path):
            found.append((int(numbers[-1]), path))
    return sorted(found, key=lambda item: item[0], reverse=True)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds arbitrary Python objects, which loading would execute."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """
    Load a checkpoint with ``torch.load(weights_only=True)``, which only accepts tensors and plain containers, and turn
    the errors into messages that name the file and say what to do.

    Args:
        path: the checkpoint file.
        map_location: where to map the tensors, as in ``torch.load``.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file holds pickled Python objects beyond tensors and containers; it is refused
            because unpickling them can run arbitrary code.
        ValueError: the file is truncated or not a PyTorch checkpoint, or its top level is not a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load this checkpoint: it holds arbitrary Python objects, not only tensors and "
            "containers, and unpickling them could run code. Re-save it with state dicts only "
            f"(torch.save({{'network': net.state_dict(), ...}})). Details: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a dictionary of state dicts, got {type(checkpoint).__name__}.")
    return checkpoint


def scoring_network_key(checkpoint: Mapping[str, Any], key: str = "ema_network") -> str:
    """
    The checkpoint entry to score with: ``key``, except that a model trained without EMA (``ema_decay 0``) has no
    ``"ema_network"`` entry, and its plain ``"network"`` is then what there is to score with.

    Args:
        checkpoint: a loaded checkpoint dictionary.
        key: the entry the config asks for.
    """
    if key == "ema_network" and key not in checkpoint and "network" in checkpoint:
        return "network"
    return key
