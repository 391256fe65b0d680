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
"""Handler that refits the healthy residual statistics of the current weights before each validation pass."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.handlers.progress import progress_bar
from monai_bigan.inferers.residual_statistics import ResidualStatistics, residual_maps
from monai_bigan.utils.checkpoint import ModelIdentity
from monai_bigan.utils.distributed import get_rank

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ResidualStatisticsHandler"]


class ResidualStatisticsHandler:
    """
    Fit :py:class:`monai_bigan.inferers.ResidualStatistics` with the scorer's current weights on healthy training
    scans, when the attached (validation) evaluator starts. The validation post-processing then normalizes residuals
    with statistics of the very weights it scores, and a checkpoint written during that validation (e.g. the best
    model) stores the statistics beside those weights when ``statistics`` is in its ``save_dict``.

    Only healthy training scans are read, never validation or test scans, so the validation metrics stay unbiased.

    Args:
        statistics: the module to fit (shared with the post-processing and the checkpoint's ``save_dict``).
        scorer: the anomaly scorer, usually on the EMA networks.
        data_loader: loader of preprocessed healthy training scans on the model's fixed grid, batches of dictionaries
            holding ``image_key``.
        inferer: inferer called as ``inferer(images, scorer)`` (e.g. a ``SliceInferer``); None calls the scorer.
        device: device to score on.
        image_key: key of the images in the batches.
        enabled: False turns the handler into a no-op; so does ``statistics`` None (recipes without residual
            normalization).
        progress: show a progress bar over the scans on rank 0 (erased when done on a terminal; in a log file only
            when the pass takes more than 10 s), see :py:func:`monai_bigan.handlers.progress_bar`.
        model_identity: the :py:class:`monai_bigan.utils.ModelIdentity` of the scored model, told after each fit which
            weights the statistics were fitted with (saved beside them in the checkpoints), or None.

    Example::

        stats = ResidualStatistics()
        ResidualStatisticsHandler(stats, scorer, healthy_train_loader, SliceInferer(spatial_dim=2)).attach(evaluator)
    """

    def __init__(
        self,
        statistics: ResidualStatistics | None,
        scorer: Callable[[torch.Tensor], torch.Tensor],
        data_loader: Iterable,
        inferer: Callable | None = None,
        device: str | torch.device = "cpu",
        image_key: str = "image",
        enabled: bool = True,
        progress: bool = True,
        model_identity: ModelIdentity | None = None,
    ) -> None:
        self.statistics = statistics
        self.scorer = scorer
        self.data_loader = data_loader
        self.inferer = inferer
        self.device = device
        self.image_key = image_key
        self.enabled = bool(enabled) and statistics is not None
        self.progress = bool(progress)
        self.model_identity = model_identity
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        start = time.perf_counter()
        maps = residual_maps(self.scorer, self.data_loader, self.inferer, self.device, self.image_key)
        # a data loader counts its scans; the batches of a plain iterable are not counted
        dataset = getattr(self.data_loader, "dataset", None)
        total = len(dataset) if hasattr(dataset, "__len__") else None
        enabled = self.progress and get_rank() == 0  # every rank of a distributed run fits: rank 0 shows it
        with progress_bar(
            maps, total=total, desc="residual statistics", unit="scan", enabled=enabled, transient=True
        ) as bar:
            self.statistics.to(self.device).fit(bar)
        if self.model_identity is not None:
            self.model_identity.statistics_fitted()
        self.logger.info(
            f"healthy residual statistics from {int(self.statistics.num_samples)} training scans on grid "
            f"{tuple(self.statistics.mean.shape[1:])} in {time.perf_counter() - start:.1f} s."
        )
