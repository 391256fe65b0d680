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
"""Handler that writes one row per scored input to ``scores.csv`` and ``scores.json``."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.data.guarded import ERROR_KEY, SOURCE_KEY
from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.utils.enums import AnomalyKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AnomalyReportHandler", "REPORT_COLUMNS"]

REPORT_COLUMNS = (
    "input",
    "score",
    "score_residual",
    "score_discriminator",
    "percentile",
    "flagged",
    "threshold",
    "worst_slice",
    "status",
    "message",
)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1)[0].item()
    elif isinstance(value, np.ndarray):
        value = value.reshape(-1)[0].item()
    return value


def _source(item: dict, image_key: str) -> str:
    if SOURCE_KEY in item:
        return str(item[SOURCE_KEY])
    meta = getattr(item.get(image_key), "meta", None) or {}
    return str(meta.get("filename_or_obj", "<unknown input>"))


def worst_axial_slice(heatmap: torch.Tensor) -> int:
    """
    Index of the most anomalous axial slice of a channel-first heatmap in its own (file) orientation: the array axis
    closest to inferior-superior in its affine, scored by the mean residual of each slice.
    """
    data = torch.as_tensor(heatmap).float()[0]
    affine = getattr(heatmap, "affine", None)
    axis = data.ndim - 1
    if affine is not None and data.ndim == 3:
        codes = nib.aff2axcodes(np.asarray(torch.as_tensor(affine), dtype=float))
        axis = next((i for i, c in enumerate(codes) if c in ("S", "I")), axis)
    other = tuple(d for d in range(data.ndim) if d != axis)
    return int(torch.argmax(data.mean(dim=other)))


class AnomalyReportHandler:
    """
    Collects, for every input of an anomaly-scoring evaluator, the score, its components, percentile among healthy
    scans, flag, threshold and most anomalous slice, or the error that stopped it, and writes ``<name>.csv`` and
    ``<name>.json`` atomically into ``output_dir`` when the run completes (and, with what it has, if it fails).

    Args:
        output_dir: folder of the report.
        name: file name stem of the report.
        image_key: key of the preprocessed image (its metadata names the input).
        heatmap_key: key of a map in the input's own space (the inverted ``slice_map`` of ``AnomalyScored``, or a
            heatmap) whose largest axial slice mean is reported as the most anomalous slice; when absent the slice
            index of the scoring space is reported.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        name: str = "scores",
        image_key: str = "image",
        heatmap_key: str = "slice_map",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.name = name
        self.image_key = image_key
        self.heatmap_key = heatmap_key
        self.rows: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.write)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    @property
    def num_failed(self) -> int:
        """Number of inputs that could not be scored."""
        return sum(row["status"] != "ok" for row in self.rows)

    def iteration_completed(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS, "")
            row["input"] = _source(item, self.image_key)
            if ERROR_KEY in item:
                row.update(status="error", message=str(item[ERROR_KEY]))
            else:
                for key in ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold"):
                    if key in item:
                        row[key] = _scalar(item[key])
                if self.heatmap_key in item:
                    row["worst_slice"] = worst_axial_slice(item[self.heatmap_key])
                elif AnomalyKeys.WORST_SLICE in item:
                    row["worst_slice"] = _scalar(item[AnomalyKeys.WORST_SLICE])
                row["status"] = "ok"
            self.rows.append(row)

    def write(self, engine: Engine | None = None) -> None:
        """Write the CSV and JSON reports."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.output_dir / f"{self.name}.csv", buffer.getvalue())
        atomic_write_text(self.output_dir / f"{self.name}.json", json.dumps(self.rows, indent=2))
        flagged = sum(1 for r in self.rows if r["flagged"] is True)
        self.logger.info(
            f"scored {len(self.rows) - self.num_failed} of {len(self.rows)} inputs, {flagged} flagged, "
            f"{self.num_failed} failed -> {self.output_dir / (self.name + '.csv')}"
        )

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        # keep what was scored before the run broke, then let the error propagate
        self.write(engine)
        raise e

    def raise_if_failed(self) -> None:
        """
        Raise after the run when an input could not be scored, so the command exits with a failure status.

        Raises:
            RuntimeError: listing the failed inputs.
        """
        failed = [row for row in self.rows if row["status"] != "ok"]
        if failed:
            lines = "\n".join(f"  {row['message']}" for row in failed)
            raise RuntimeError(
                f"{len(failed)} of {len(self.rows)} inputs could not be scored (see {self.output_dir}/{self.name}.csv):"
                f"\n{lines}"
            )
