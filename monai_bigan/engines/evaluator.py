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
"""An evaluator that scores a batch of scans and reports the ones it cannot score instead of stopping."""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.data.guarded import ERROR_KEY, SOURCE_KEY, describe_error

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["AnomalyEvaluator"]

logger = logging.getLogger(__name__)


def _sources(batchdata: Any, image_key: str) -> list[str]:
    """Input paths of a batch, from the MetaTensor metadata."""
    if isinstance(batchdata, dict):
        if SOURCE_KEY in batchdata:
            return [str(s) for s in batchdata[SOURCE_KEY]]
        meta = getattr(batchdata.get(image_key), "meta", {}) or {}
        names = meta.get("filename_or_obj")
        if names is not None:
            return [str(n) for n in (names if isinstance(names, (list, tuple)) else [names])]
    return ["<unknown input>"]


class AnomalyEvaluator(SupervisedEvaluator):
    """
    ``SupervisedEvaluator`` for anomaly scoring that survives bad inputs: items that
    :py:class:`monai_bigan.data.GuardedDataset` could not load, and items whose inference or post-processing
    (inversion, writing, ...) raises, become outputs ``{"error": message, "source": path}`` and the run goes on.
    Handlers such as :py:class:`monai_bigan.handlers.AnomalyReportHandler` write them as error rows.

    A run with nothing to score (a resumed batch whose inputs are all done, or a distributed rank without a share)
    still starts and completes: its ``STARTED`` and ``COMPLETED`` handlers run, so the report is rebuilt and every rank
    reaches the report's barrier (MONAI's ``Workflow.run`` would return without any event).

    All arguments are those of ``SupervisedEvaluator``, plus:

    Args:
        catch_errors: turn per-item failures into error outputs (default); False re-raises them.
        image_key: key of the image in the batch, used to name the failing input.
    """

    def __init__(self, *args: Any, catch_errors: bool = True, image_key: str = "image", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.catch_errors = catch_errors
        self.image_key = image_key
        self.error_logger = logging.getLogger(__name__)

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Score every item of the data loader; with none, only fire ``STARTED`` and ``COMPLETED``."""
        if self.state.epoch_length == 0:
            logger.info("nothing to score in this run.")
            self.fire_event(Events.STARTED)
            self.fire_event(Events.COMPLETED)
            return
        super().run(global_epoch)

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, torch.Tensor]) -> Any:
        if isinstance(batchdata, dict) and ERROR_KEY in batchdata:
            engine.state.output = [
                {ERROR_KEY: str(msg), SOURCE_KEY: src}
                for msg, src in zip(batchdata[ERROR_KEY], _sources(batchdata, self.image_key))
            ]
        else:
            try:
                return super()._iteration(engine, batchdata)
            except Exception as e:
                if not self.catch_errors:
                    raise
                engine.state.output = [
                    {ERROR_KEY: describe_error(e, src), SOURCE_KEY: src} for src in _sources(batchdata, self.image_key)
                ]
        for item in engine.state.output:
            self.error_logger.error(item[ERROR_KEY])
        return engine.state.output
