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
Crash-safe checkpointing: a ``CheckpointSaver`` whose files are written atomically, and a handler that resumes
training from the newest complete epoch checkpoint.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.exceptions import ModelMismatchError, NonFiniteLossError
from monai_bigan.io.atomic import atomic_path
from monai_bigan.utils.bundle import as_bool
from monai_bigan.utils.checkpoint import find_checkpoints, load_checkpoint

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.handlers import DiskSaver
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    DiskSaver, _ = optional_import(
        "ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver", as_type="base"
    )

__all__ = ["AtomicCheckpointSaver", "ResumeHandler"]


class _AtomicDiskSaver(DiskSaver):
    """
    Ignite ``DiskSaver`` that writes each checkpoint to a hidden temporary file in the same folder, flushes it to disk
    and renames it onto the target, with the permissions of any other new file. An optional fixed ``filename``
    replaces Ignite's generated name, as in MONAI's ``CheckpointSaver``.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        with atomic_path(path, suffix=".tmp") as tmp:
            func(checkpoint, tmp, **self.kwargs)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename must not reach the disk before the data
            finally:
                os.close(fd)


class AtomicCheckpointSaver(CheckpointSaver):
    """
    MONAI ``CheckpointSaver`` (same arguments and files) whose writes are atomic: a checkpoint is written to a temporary
    file in ``save_dir`` and renamed onto its name only when complete, so a process killed while saving leaves the
    previous checkpoint intact instead of a truncated file. MONAI uses Ignite's non-atomic ``DiskSaver`` because
    Ignite's atomic mode leaves files readable by their owner only; here the files get the usual ``0o666 & ~umask``.

    When training stops on a :py:class:`monai_bigan.engines.NonFiniteLossError`, the final checkpoint is not written,
    so the last checkpoint on disk keeps finite weights.

    Args:
        args: positional arguments of ``monai.handlers.CheckpointSaver``.
        kwargs: keyword arguments of ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, getattr(checkpoint.save_handler, "filename"))

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Save the final checkpoint as MONAI does, except after non-finite losses; then re-raise ``e``."""
        if isinstance(e, NonFiniteLossError):
            raise e
        super().exception_raised(engine, e)


class ResumeHandler:
    """
    Resume training from the newest complete checkpoint in ``ckpt_dir`` (``checkpoint_epoch=N.pt`` as written each
    epoch by a ``CheckpointSaver``), so that re-running a killed training continues where it stopped.

    At ``Events.STARTED`` the checkpoints matching ``pattern`` are tried from the largest epoch down; a file that cannot
    be loaded (e.g. truncated) is skipped with a warning. The first one that loads (``torch.load(weights_only=True)``)
    restores every object of ``load_dict`` through ``ignite.handlers.Checkpoint.load_objects``: networks, optimizers,
    the trainer (epoch, iteration, gradient scalers) and, when present, a :py:class:`monai_bigan.utils.RNGState`. The
    engine's ``max_epochs`` stays the one it was configured with, so a longer run can continue a shorter one. When the
    checkpoint already reached ``max_epochs``, the run logs that training is complete and trains nothing.

    Args:
        ckpt_dir: folder of the checkpoints.
        load_dict: objects to restore, keyed as in the checkpoint, e.g. the ``save_dict`` of the ``CheckpointSaver``.
        enabled: when False the handler does nothing (start over; existing checkpoints get overwritten). Strings such
            as ``"false"`` from a command line override are accepted.
        pattern: glob pattern of the epoch checkpoints.
        map_location: ``torch.load`` map location, default the CPU (``load_state_dict`` copies onto the device).
        strict: ``strict`` of ``nn.Module.load_state_dict``.
        saver: the ``CheckpointSaver`` that writes the epoch checkpoints; after a resume it is told about the files
            already there, so that its ``n_saved`` rotation also removes the checkpoints of the interrupted run.
        name: logger name; default the engine's logger.

    With ``enabled=False`` the epoch checkpoints already in ``ckpt_dir`` are deleted at the start, so that a later
    resume cannot pick up a checkpoint of the abandoned run. In both cases the hidden temporary files of checkpoint
    writes interrupted by a kill (``.<name>.pt.<random>.tmp``, see :py:class:`AtomicCheckpointSaver`) are deleted.

    Example::

        ResumeHandler("models", {"network": net, "optimizer": opt, "trainer": trainer}).attach(trainer)
        trainer.run()
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        pattern: str = "checkpoint_epoch=*.pt",
        map_location: Any = "cpu",
        strict: bool = True,
        saver: CheckpointSaver | None = None,
        name: str | None = None,
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name at least one object to restore.")
        self.ckpt_dir = ckpt_dir
        self.load_dict = dict(load_dict)
        self.enabled = as_bool(enabled)
        self.pattern = pattern
        self.map_location = map_location
        self.strict = strict
        self.saver = saver
        self.logger = logging.getLogger(name)
        self._name = name
        self.resumed_from: str | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``Events.STARTED`` of ``engine`` (the trainer)."""
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Load the newest complete checkpoint into the objects of ``load_dict``, if enabled and one exists."""
        self._remove_stale_temporaries()
        candidates = find_checkpoints(self.ckpt_dir, self.pattern)
        if not self.enabled:
            for _, path in candidates:
                os.remove(path)
            removed = (
                f", removed the previous run's {[os.path.basename(p) for _, p in candidates]}" if candidates else ""
            )
            self.logger.info(f"resume disabled: training starts from scratch{removed}.")
            return
        if not candidates:
            self.logger.info(
                f"no checkpoint matching {self.pattern!r} in {self.ckpt_dir}: training starts from scratch."
            )
            return
        for epoch, path in candidates:
            try:
                checkpoint = load_checkpoint(path, map_location=self.map_location)
            except Exception as e:  # a truncated or corrupt file: fall back to the previous checkpoint
                self.logger.warning(f"skipping checkpoint {path}, it cannot be loaded ({type(e).__name__}: {e}).")
                continue
            self._restore(engine, checkpoint, path)
            self._adopt(epoch, candidates)
            return
        self.logger.warning(f"no loadable checkpoint in {self.ckpt_dir}: training starts from scratch.")

    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary files of atomic checkpoint writes that a killed process left behind."""
        for path in glob.glob(os.path.join(glob.escape(os.fspath(self.ckpt_dir)), ".*.pt.*.tmp")):
            self.logger.info(f"removing {path}, left by an interrupted checkpoint write.")
            os.remove(path)

    def _adopt(self, epoch: int, candidates: list[tuple[int, str]]) -> None:
        """Hand the existing epoch checkpoints up to ``epoch`` to the saver's rotation (oldest first)."""
        interval = getattr(self.saver, "_interval_checkpoint", None)
        if interval is None:
            return
        saved = [(n, os.path.basename(p)) for n, p in sorted(candidates) if n <= epoch]
        interval.load_state_dict({"_saved": saved})

    def _restore(self, engine: Engine, checkpoint: Mapping, path: str) -> None:
        max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
        missing = [k for k in self.load_dict if k not in checkpoint]
        if missing:
            self.logger.warning(f"checkpoint {path} has no {missing}; those objects keep their current state.")
        to_load = {k: v for k, v in self.load_dict.items() if k in checkpoint}
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=dict(checkpoint), strict=self.strict)
        except (RuntimeError, ValueError, KeyError) as e:
            # typically another preset trained into the same bundle_root: one line, no state-dict traceback
            detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).splitlines()[0])
            raise ModelMismatchError(
                f"cannot resume from {path}: it was written by another model (another mode, preset or network keys: "
                f"{detail}). Give this run its own --bundle_root, or pass --resume false to start over in this folder "
                "(its checkpoints are then deleted)."
            ) from None
        epoch = engine.state.epoch
        if max_epochs is not None:
            if epoch > max_epochs:
                raise ValueError(
                    f"checkpoint {path} is at epoch {epoch}, beyond max_epochs={max_epochs}: pass a larger max_epochs "
                    "to continue it, or resume=false to start over."
                )
            engine.state.max_epochs = max_epochs
        if epoch_length is not None and engine.state.epoch_length != epoch_length:
            self.logger.warning(
                f"checkpoint {path} had {engine.state.epoch_length} iterations per epoch, the data now gives "
                f"{epoch_length} (did the data change?); continuing with {epoch_length}."
            )
            engine.state.epoch_length = epoch_length
            engine.state.iteration = epoch * epoch_length
        self.resumed_from = path
        self.logger.info(f"resumed from {path} (epoch {epoch}, iteration {engine.state.iteration}).")
        if max_epochs is not None and epoch >= max_epochs:
            self.logger.info(
                f"training is already complete: the checkpoint reached max_epochs={max_epochs}; nothing to train "
                "(pass a larger max_epochs to continue, or resume=false to start over)."
            )
