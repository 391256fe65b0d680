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
Crash-safe checkpointing: a ``CheckpointSaver`` whose files are written atomically (and whose rotation never leaves
no checkpoint), a handler that resumes training from the newest complete epoch checkpoint, and the best-metric state
that a resume restores with it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
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

__all__ = ["AtomicCheckpointSaver", "BestMetricState", "ResumeHandler"]

#: ``.<target>.<random>.tmp``, the temporary file of an atomic write (``monai_bigan.io.atomic.atomic_path``)
_TEMPORARY = re.compile(r"\.(.+)\.[^.]+\.tmp")


class _AtomicDiskSaver(DiskSaver):
    """
    Ignite ``DiskSaver`` that writes each checkpoint to a hidden temporary file in the same folder, flushes it to disk
    and renames it onto the target, with the permissions of any other new file. An optional fixed ``filename``
    replaces Ignite's generated name, as in MONAI's ``CheckpointSaver``.

    Ignite's ``Checkpoint`` removes the checkpoint that rotates out *before* writing the new one; here removals wait
    until the next checkpoint has been renamed into place, so that a process killed in between still leaves a
    complete checkpoint. A removal of the file being written (a fixed ``filename`` such as ``model.pt``) is dropped:
    the rename replaces it.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self.pending_removals: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` after the next successful save (see the class docstring)."""
        name = self.filename or filename
        if name not in self.pending_removals:
            self.pending_removals.append(name)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        with atomic_path(path, suffix=".tmp") as tmp:
            func(checkpoint, tmp, **self.kwargs)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename must not reach the disk before the data
            finally:
                os.close(fd)
        # the new checkpoint is in place: only now may the one it replaces go
        for name in self.pending_removals:
            if name != path.name:
                Path(self.dirname, name).unlink(missing_ok=True)
        self.pending_removals.clear()


class AtomicCheckpointSaver(CheckpointSaver):
    """
    MONAI ``CheckpointSaver`` (same arguments and files) whose writes are atomic: a checkpoint is written to a temporary
    file in ``save_dir`` and renamed onto its name only when complete, so a process killed while saving leaves the
    previous checkpoint intact instead of a truncated file. MONAI uses Ignite's non-atomic ``DiskSaver`` because
    Ignite's atomic mode leaves files readable by their owner only; here the files get the usual ``0o666 & ~umask``.

    The ``n_saved`` rotation removes a checkpoint only after the one that replaces it has been renamed into place
    (Ignite removes it first), so a kill at any moment leaves at least one complete epoch checkpoint.

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
    the trainer (epoch, iteration, gradient scalers) and, when present, a :py:class:`monai_bigan.utils.RNGState`, a
    :py:class:`BestMetricState` and a :py:class:`monai_bigan.utils.ModelIdentity` (a checkpoint of an older version
    without them is loaded with a warning, those objects keeping their state). The engine's ``max_epochs`` stays the
    one it was configured with, so a longer run can continue a shorter one. When the checkpoint already reached
    ``max_epochs``, the run logs that training is complete and trains nothing.

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
    resume cannot pick up a checkpoint of the abandoned run.

    In both cases the hidden temporary files that a kill left in ``ckpt_dir`` (``.<name>.<random>.tmp``, see
    :py:class:`AtomicCheckpointSaver`) are dealt with first, each with a log line: a complete checkpoint (one that
    loads) whose target is missing was killed between its write and its rename, and is renamed into place; any other
    one (incomplete, or superseded by an existing target, or an interrupted ``calibration.json`` write) is deleted.

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
        self._recover_interrupted_writes()
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

    def _recover_interrupted_writes(self) -> None:
        """Finish or discard the atomic writes that a killed process left as temporary files (see the docstring)."""
        folder = glob.escape(os.fspath(self.ckpt_dir))
        for path in sorted(
            glob.glob(os.path.join(folder, ".*.pt.*.tmp")) + glob.glob(os.path.join(folder, ".*.json.*.tmp"))
        ):
            match = _TEMPORARY.fullmatch(os.path.basename(path))
            if match is None:  # not the name of an atomic write's temporary file
                continue
            target = os.path.join(os.path.dirname(path), match.group(1))
            if not target.endswith(".pt"):
                self.logger.info(f"removing {path}, left by an interrupted write of {target}.")
                os.remove(path)
                continue
            try:
                load_checkpoint(path, map_location="cpu")
            except Exception as e:
                self.logger.info(
                    f"removing {path}, an incomplete checkpoint left by an interrupted write ({type(e).__name__})."
                )
                os.remove(path)
                continue
            if os.path.exists(target):
                self.logger.info(f"removing {path}, a complete but superseded write of {target}, which is kept.")
                os.remove(path)
            else:
                os.replace(path, target)
                self.logger.warning(
                    f"recovered {target} from {path}: it was complete but not yet renamed when the process was killed."
                )

    def _adopt(self, epoch: int, candidates: list[tuple[int, str]]) -> None:
        """
        Hand the existing epoch checkpoints up to ``epoch`` to the saver's rotation: the newest ``n_saved`` are kept,
        the older ones are removed once the next checkpoint is written.
        """
        interval = getattr(self.saver, "_interval_checkpoint", None)
        if interval is None:
            return
        saved = [(n, os.path.basename(p)) for n, p in sorted(candidates) if n <= epoch]
        keep = len(saved) if interval.n_saved is None else interval.n_saved
        interval.load_state_dict({"_saved": saved[-keep:]})
        for _, name in saved[:-keep]:
            interval.save_handler.remove(name)

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


class BestMetricState:
    """
    The best-metric record of a validation evaluator and of the ``CheckpointSaver`` that keeps its best checkpoint, as
    an object with ``state_dict()`` / ``load_state_dict()`` to save in the epoch checkpoints beside the networks.

    MONAI keeps the best key metric so far in the evaluator's ``state.best_metric`` / ``state.best_metric_epoch``, and
    the key-metric saver remembers the score of the checkpoint it wrote (e.g. ``model_best.pt``). Neither is in a
    checkpoint, so after a resume the first validation would count as the best so far and could overwrite the best
    checkpoint with a worse model. Restored with the rest on resume, the comparison continues where it stopped.

    Args:
        evaluator: the validation evaluator (a MONAI ``Workflow`` with a key metric).
        saver: the ``CheckpointSaver`` with ``save_key_metric=True`` attached to ``evaluator``, or None.

    Example::

        best = BestMetricState(evaluator, best_saver)
        CheckpointSaver(save_dir, {"network": net, "trainer": trainer, "best": best}, save_interval=1)
    """

    def __init__(self, evaluator: Engine, saver: CheckpointSaver | None = None) -> None:
        self.evaluator = evaluator
        self.saver = saver

    def _key_metric_checkpoint(self) -> Any:
        return getattr(self.saver, "_key_metric_checkpoint", None)

    def state_dict(self) -> dict[str, Any]:
        """The best metric and its epoch, and the ``(score, file name)`` records of the key-metric saver."""
        state = self.evaluator.state
        try:
            best = float(getattr(state, "best_metric", -1))
        except (TypeError, ValueError):  # a non-scalar key metric is never compared
            best = -1.0
        record: dict[str, Any] = {
            "best_metric": best,
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }
        checkpoint = self._key_metric_checkpoint()
        if checkpoint is not None:
            record["key_metric_saved"] = [[float(p), str(f)] for p, f in checkpoint.state_dict()["_saved"]]
        return record

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :py:meth:`state_dict` into the evaluator's state and the saver."""
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])
        checkpoint = self._key_metric_checkpoint()
        if checkpoint is not None and "key_metric_saved" in state_dict:
            checkpoint.load_state_dict({"_saved": [(p, f) for p, f in state_dict["key_metric_saved"]]})
