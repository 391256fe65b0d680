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
"""The training run of the bundle: checkpointing, resuming, optional compilation, training and recalibration."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from monai_bigan.utils.bundle import as_bool
from monai_bigan.utils.performance import compile_networks

__all__ = ["TrainingRun"]

logger = logging.getLogger(__name__)


class TrainingRun:
    """
    One training of the bundle, in order: attach the epoch ``checkpoint_saver`` and the ``resume_handler`` to the
    trainer (they hold the trainer in their state, so they cannot be among its own handlers), compile the networks
    when asked, train, then run ``recalibration`` when the test-time ``scoring`` differs from the per-epoch validation
    scoring (latent refinement), whose statistics and thresholds would not fit the test-time scores.

    Args:
        trainer: the :py:class:`monai_bigan.engines.BiGANTrainer`.
        checkpoint_saver: the handler writing the epoch checkpoints and ``model.pt``.
        resume_handler: the handler resuming from the newest complete epoch checkpoint.
        networks: the networks to compile (e.g. the BiGAN and its EMA copy; None entries are skipped).
        compile: ``torch.compile`` them in place.
        recalibration: a :py:class:`monai_bigan.workflows.Recalibration`, or None.
        scoring: the test-time :py:class:`monai_bigan.bundle.ScoringSettings`; None never recalibrates.

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
    ) -> None:
        self.trainer = trainer
        self.checkpoint_saver = checkpoint_saver
        self.resume_handler = resume_handler
        self.networks = list(networks or [])
        self.compile = as_bool(compile)
        self.recalibration = recalibration
        self.scoring = scoring

    @property
    def recalibrates(self) -> bool:
        """Whether training ends with a recalibration: test-time scoring is not the validation scoring."""
        return (
            self.recalibration is not None
            and self.scoring is not None
            and self.scoring != self.scoring.for_validation()
        )

    def run(self) -> None:
        """Attach, compile, train and recalibrate."""
        self.checkpoint_saver.attach(self.trainer)
        self.resume_handler.attach(self.trainer)
        compile_networks(*self.networks, enabled=self.compile)
        self.trainer.run()
        if self.recalibrates:
            logger.info("the test-time scoring differs from validation's: refitting statistics and thresholds with it.")
            self.recalibration.run()
