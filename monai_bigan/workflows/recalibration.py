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
"""Refit a trained model's healthy residual statistics and score calibration with the scorer used at test time."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import torch
from ignite.engine import Engine

from monai_bigan.bundle import ScoringSettings, load_trained_model
from monai_bigan.handlers.progress import TrainingProgress
from monai_bigan.inferers import ResidualStatistics
from monai_bigan.io.atomic import atomic_path
from monai_bigan.utils.checkpoint import MODEL_IDENTITY_KEY, ModelIdentity, load_checkpoint
from monai_bigan.utils.lock import TrainingLock

__all__ = ["Recalibration"]

logger = logging.getLogger(__name__)


class Recalibration:
    """
    Refit the healthy residual statistics and the score calibration of a trained model with the test-time scorer, and
    store them with the model.

    Training fits both at every validation with its own, cheap scorer. When inference scores differently, above all
    with test-time latent refinement (too costly to run at every validation on a CPU), healthy residuals are smaller
    than the statistics and thresholds expect. This workflow loads the scoring network from ``checkpoint_file``, runs
    ``evaluator`` once over the validation split (its handlers, a
    :py:class:`monai_bigan.handlers.ResidualStatisticsHandler` on the healthy training scans and a
    :py:class:`monai_bigan.handlers.CalibrationHandler`, refit the statistics and rewrite the calibration file), and
    writes the refitted statistics into ``checkpoint_file`` atomically. Network weights and every other entry of the
    checkpoint are kept; other checkpoints (``model_best.pt``, ``checkpoint_epoch=N.pt``) are not touched.

    With a ``model_identity`` shared with those handlers, the calibration and the statistics record the identity of
    the model in ``checkpoint_file`` (its run id and epoch are read from it), so that loading can tell that they belong
    to it. The run holds the training lock of the checkpoint's folder (:py:class:`monai_bigan.utils.TrainingLock`), so
    that it never runs beside a training of the same folder.

    The training bundle runs it after training when ``refine_steps`` > 0 or when the calibration does not belong to
    the final model (see :py:class:`monai_bigan.workflows.TrainingRun`), and on its own as
    ``python -m monai.bundle run calibrating --config_file bundles/bigan/train.json --refine_steps 20``.

    Args:
        evaluator: evaluator over the validation split whose network is the test-time scorer (wrapping ``network``)
            and whose handlers refit ``statistics`` and write the calibration.
        checkpoint_file: checkpoint the scoring network is loaded from and the statistics are written to.
        network: the scoring network: the checkpoint's ``"ema_network"`` entry is loaded into it, or ``"network"``
            for a model trained without EMA.
        statistics: the statistics the evaluator's handler refits, or None for a model without heatmap normalization.
        scoring: the test-time scoring settings (for the messages; the evaluator's handlers record them).
        enabled: False makes :py:meth:`run` do nothing (e.g. on all but one process of a distributed run).
        progress: show a progress bar (with an ETA) over the evaluator's pass, see
            :py:class:`monai_bigan.handlers.TrainingProgress`.
        model_identity: the :py:class:`monai_bigan.utils.ModelIdentity` of ``network`` that the evaluator's handlers
            record, or None.
        lock: hold the training lock of the checkpoint's folder while running.

    Example::

        recalibration = Recalibration(evaluator, "models/model.pt", bigan.ema, statistics)
        recalibration.run()
    """

    def __init__(
        self,
        evaluator: Engine,
        checkpoint_file: str | os.PathLike,
        network: torch.nn.Module,
        statistics: ResidualStatistics | None = None,
        scoring: ScoringSettings | None = None,
        enabled: bool = True,
        progress: bool = True,
        model_identity: ModelIdentity | None = None,
        lock: bool = True,
    ) -> None:
        self.evaluator = evaluator
        self.checkpoint_file = Path(checkpoint_file)
        self.network = network
        self.statistics = statistics
        self.scoring = ScoringSettings() if scoring is None else scoring
        self.enabled = enabled
        self.progress = progress
        self.model_identity = model_identity
        self.lock = lock
        self._progress_attached = False

    def run(self) -> Path | None:
        """Load, refit and save; returns the checkpoint path, or None when disabled."""
        if not self.enabled:
            return None
        if not self.lock:
            return self._run()
        with TrainingLock(self.checkpoint_file.parent):
            return self._run()

    def _run(self) -> Path:
        # only the weights: the statistics and the calibration are what this refits
        model = load_trained_model(self.checkpoint_file, self.network, replace(self.scoring, heatmap_normalize=False))
        logger.info(
            "Recalibrating %s with the test-time scorer (%s weights).", self.checkpoint_file, model.checkpoint_key
        )
        if self.model_identity is not None:
            checkpoint = load_checkpoint(self.checkpoint_file, map_location="cpu")
            # the run and epoch of the weights just loaded; the statistics are about to be refitted
            trainer = checkpoint.get("trainer") or {}
            self.model_identity.load_state_dict(
                {"epoch": trainer.get("epoch", 0), **(checkpoint.get(MODEL_IDENTITY_KEY) or {})}
            )
            self.model_identity.statistics_fitted_for = None
        if self.progress and not self._progress_attached:
            loader = getattr(self.evaluator, "data_loader", None)
            unit = "scan" if getattr(loader, "batch_size", None) == 1 else "batch"
            TrainingProgress(desc="recalibration", unit=unit).attach(self.evaluator)
            self._progress_attached = True
        self.evaluator.run()
        if self.statistics is not None:
            checkpoint = load_checkpoint(self.checkpoint_file, map_location="cpu")
            checkpoint["residual_statistics"] = {k: v.cpu() for k, v in self.statistics.state_dict().items()}
            if self.model_identity is not None:
                checkpoint[MODEL_IDENTITY_KEY] = self.model_identity.state_dict()
            with atomic_path(self.checkpoint_file, suffix=".tmp") as tmp:
                torch.save(checkpoint, tmp)
            logger.info("Stored the refitted statistics in %s.", self.checkpoint_file)
        return self.checkpoint_file
