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
Checkpoint helpers: random number generator states that can be checkpointed, finding and loading epoch checkpoints,
and the identity of a trained model (which weights a calibration or residual statistics were fitted for).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.transforms import Randomizable
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "CALIBRATION_MODEL_KEY",
    "MODEL_IDENTITY_KEY",
    "ModelIdentity",
    "RNGState",
    "UnsafeCheckpointError",
    "calibration_model_record",
    "find_checkpoints",
    "load_checkpoint",
    "scoring_network_key",
    "state_dict_digest",
]

#: the checkpoint entry holding :py:meth:`ModelIdentity.state_dict`
MODEL_IDENTITY_KEY = "model_identity"
#: the entry of a calibration's ``scoring`` record that holds :py:meth:`ModelIdentity.record`
CALIBRATION_MODEL_KEY = "model"


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


def state_dict_digest(state: Mapping[str, Any]) -> str:
    """
    The sha256 digest (hex) of a state dict: every entry's name and, for tensors, dtype, shape and values, in name
    order. A module's live ``state_dict()`` and the same state saved in and loaded from a checkpoint give the same
    digest, whatever the device or memory format.

    Args:
        state: a state dict, e.g. ``network.state_dict()`` or ``checkpoint["ema_network"]``.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(f"{name}\0".encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(f"{value!r}\0".encode())
    return digest.hexdigest()


class ModelIdentity:
    """
    Which trained model a calibration or residual statistics were fitted for: the sha256 digest of the scoring
    network's weights (:py:func:`state_dict_digest`, the same for the live network and its weights in ``model.pt``),
    the training epoch and a run id, so that loading can refuse files that belong to another model (e.g. a
    ``calibration.json`` rewritten by a continuation that was killed before writing its ``model.pt``).

    One object is shared by a training's handlers and saved in its checkpoints (entry ``"model_identity"``):

    - :py:meth:`attach` to the trainer keeps :py:attr:`epoch` current;
    - the run id is drawn when a training starts from scratch and restored from the checkpoint on resume, so one id
      names a training across kills and continuations;
    - :py:class:`monai_bigan.handlers.ResidualStatisticsHandler` calls :py:meth:`statistics_fitted` after each fit, and
      that record is saved beside the statistics in every checkpoint;
    - :py:class:`monai_bigan.handlers.CalibrationHandler` stores :py:meth:`record` (with the digest of the statistics the
      scores were normalized with) in the calibration;
    - :py:func:`monai_bigan.bundle.load_trained_model` compares both records with the weights it loads.

    Args:
        network: the scoring network (the EMA copy when there is one).
        statistics: the healthy residual statistics, or None without heatmap normalization.
        run_id: the run id; default a new random one.

    Example::

        identity = ModelIdentity(ema_network, statistics)
        identity.attach(trainer)
        saver = CheckpointSaver(save_dir, {"ema_network": ema_network, "model_identity": identity}, save_interval=1)
    """

    def __init__(
        self, network: nn.Module | None = None, statistics: nn.Module | None = None, run_id: str | None = None
    ) -> None:
        self.network = network
        self.statistics = statistics
        self.run_id = uuid.uuid4().hex[:12] if run_id is None else str(run_id)
        self.epoch = 0
        #: the :py:meth:`record` (without statistics) of the weights the statistics were last fitted with
        self.statistics_fitted_for: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Follow the epochs of ``engine`` (the trainer)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)

    def _epoch_started(self, engine: Engine) -> None:
        self.epoch = int(engine.state.epoch)

    def weights_digest(self) -> str:
        """:py:func:`state_dict_digest` of the scoring network's current weights."""
        if self.network is None:
            raise ValueError("ModelIdentity has no network to identify.")
        network = self.network
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module  # checkpoints store the wrapped module's state
        return state_dict_digest(network.state_dict())

    def record(self, statistics: bool = True) -> dict[str, Any]:
        """
        The identity of the current model: ``weights_sha256``, ``epoch``, ``run_id`` and, with ``statistics``,
        ``statistics_sha256`` (None without statistics).
        """
        record: dict[str, Any] = {"weights_sha256": self.weights_digest(), "epoch": self.epoch, "run_id": self.run_id}
        if statistics:
            record["statistics_sha256"] = (
                None if self.statistics is None else state_dict_digest(self.statistics.state_dict())
            )
        return record

    def statistics_fitted(self) -> None:
        """Record that the statistics were just fitted with the current weights."""
        self.statistics_fitted_for = self.record(statistics=False)

    def state_dict(self) -> dict[str, Any]:
        """The run id, the epoch and the record of the statistics' weights, for a checkpoint."""
        return {"run_id": self.run_id, "epoch": self.epoch, "statistics_fitted_for": self.statistics_fitted_for}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :py:meth:`state_dict` (missing entries keep their current values)."""
        self.run_id = str(state_dict.get("run_id", self.run_id))
        self.epoch = int(state_dict.get("epoch", self.epoch))
        self.statistics_fitted_for = state_dict.get("statistics_fitted_for", self.statistics_fitted_for)


def calibration_model_record(calibration: Any) -> dict[str, Any] | None:
    """
    The :py:meth:`ModelIdentity.record` a calibration was fitted for (kept in its ``scoring`` record, entry
    ``"model"``), or None for a calibration written without one (by an older version, or for a baseline).

    Args:
        calibration: a :py:class:`monai_bigan.utils.ScoreCalibration`.
    """
    record = getattr(calibration, CALIBRATION_MODEL_KEY, None)
    if record is None:
        record = (getattr(calibration, "scoring", None) or {}).get(CALIBRATION_MODEL_KEY)
    return dict(record) if isinstance(record, Mapping) else None
