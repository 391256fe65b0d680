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
The training run of the bundle: one training per folder (a lock), checkpointing, resuming, optional compilation,
training and recalibration.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from torch import nn

from monai_bigan.bundle.loading import REFIT_HINT, check_model_identity
from monai_bigan.exceptions import ModelMismatchError
from monai_bigan.utils.bundle import as_bool
from monai_bigan.utils.lock import TrainingLock
from monai_bigan.utils.performance import compile_networks

__all__ = ["TrainingRun"]

logger = logging.getLogger(__name__)


class TrainingRun:
    """
    One training of the bundle, in order:

    1. take the training lock of the checkpoint folder (:py:class:`monai_bigan.utils.TrainingLock`), before anything
       is written there: a second training of the same folder fails at once, naming this one;
    2. attach the ``model_identity`` (it follows the epochs), the epoch ``checkpoint_saver`` and the
       ``resume_handler`` to the trainer (they hold the trainer in their state, so they cannot be among its own
       handlers);
    3. compile the networks when asked, and train;
    4. run ``recalibration`` when the test-time ``scoring`` differs from the per-epoch validation scoring (latent
       refinement), whose statistics and thresholds would not fit the test-time scores, or when the calibration does
       not belong to the final ``model.pt`` (e.g. a resumed run with nothing left to train after a killed
       continuation had rewritten the calibration, or a last epoch without validation);
    5. release the lock (also when training fails).

    Args:
        trainer: the :py:class:`monai_bigan.engines.BiGANTrainer`.
        checkpoint_saver: the handler writing the epoch checkpoints and ``model.pt``.
        resume_handler: the handler resuming from the newest complete epoch checkpoint.
        networks: the networks to compile (e.g. the BiGAN and its EMA copy; None entries are skipped).
        compile: ``torch.compile`` them in place.
        recalibration: a :py:class:`monai_bigan.workflows.Recalibration`, or None.
        scoring: the test-time :py:class:`monai_bigan.bundle.ScoringSettings`; None never recalibrates for the
            scoring.
        model_identity: the :py:class:`monai_bigan.utils.ModelIdentity` shared with the validation handlers, or None.
        calibration_file: the calibration that must belong to ``recalibration.checkpoint_file`` after training (it
            is refitted when it does not), or None not to check.
        lock: take the training lock (e.g. False on all but one process of a distributed run).
        lock_dir: folder of the lock file; default the ``checkpoint_saver``'s ``save_dir``.

    Example::

        TrainingRun(trainer, saver, resume, [net, ema]).run()
    """

    def __init__(
        self,
        trainer: Any,
        checkpoint_saver: Any,
        resume_handler: Any,
        networks: list[nn.Module | None] | None = None,
        compile: bool | str = False,
        recalibration: Any = None,
        scoring: Any = None,
        model_identity: Any = None,
        calibration_file: str | os.PathLike | None = None,
        lock: bool | str = True,
        lock_dir: str | os.PathLike | None = None,
    ) -> None:
        self.trainer = trainer
        self.checkpoint_saver = checkpoint_saver
        self.resume_handler = resume_handler
        self.networks = list(networks or [])
        self.compile = as_bool(compile)
        self.recalibration = recalibration
        self.scoring = scoring
        self.model_identity = model_identity
        self.calibration_file = calibration_file
        self.lock = as_bool(lock)
        self.lock_dir = checkpoint_saver.save_dir if lock_dir is None else lock_dir

    @property
    def recalibrates(self) -> bool:
        """Whether training ends with a recalibration: test-time scoring is not the validation scoring."""
        return (
            self.recalibration is not None
            and self.scoring is not None
            and self.scoring != self.scoring.for_validation()
        )

    def calibration_mismatch(self) -> str | None:
        """Why the calibration does not belong to the recalibration's checkpoint, or None when it does (or unknown)."""
        if (
            self.recalibration is None
            or self.calibration_file is None
            or not getattr(self.recalibration, "enabled", True)
        ):
            return None
        if not (os.path.isfile(self.recalibration.checkpoint_file) and os.path.isfile(self.calibration_file)):
            return None
        try:
            check_model_identity(self.recalibration.checkpoint_file, self.calibration_file)
        except ModelMismatchError as e:
            return str(e).removesuffix(f": {REFIT_HINT}.")
        return None

    def run(self) -> None:
        """Lock, attach, compile, train and recalibrate."""
        with TrainingLock(self.lock_dir) if self.lock else contextlib.nullcontext():
            if self.model_identity is not None:
                self.model_identity.attach(self.trainer)
            self.checkpoint_saver.attach(self.trainer)
            self.resume_handler.attach(self.trainer)
            compile_networks(*self.networks, enabled=self.compile)
            self.trainer.run()
            if self.recalibrates:
                logger.info(
                    "the test-time scoring differs from validation's: refitting statistics and thresholds with it."
                )
                self.recalibration.run()
                return
            mismatch = self.calibration_mismatch()
            if mismatch is not None:
                logger.warning(f"{mismatch}: refitting the calibration and statistics for the final model.")
                self.recalibration.run()
