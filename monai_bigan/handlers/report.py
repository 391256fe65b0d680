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
Handler that writes one row per scored input to ``scores.csv`` and ``scores.json``: from the run's rows, or, for an
:py:class:`monai_bigan.data.InferenceBatch`, from the completion records of all the batch's inputs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.data.batch import InferenceBatch
from monai_bigan.data.guarded import ERROR_KEY, item_source
from monai_bigan.data.outputs import output_stem, source_key
from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.utils.enums import AnomalyKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AnomalyReportHandler", "REPORT_COLUMNS", "SOURCE_COLUMNS"]

#: columns of the report; ``output`` is the stem of the input's output files (``<output>_heatmap.nii.gz``, ...)
REPORT_COLUMNS = (
    "input",
    "output",
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
#: columns added after ``input`` when the batch's inputs carry them: the UIDs of series fetched from a DICOMweb server
#: (``monai_bigan.data.dicomweb_datalist``), so that a row names its study and series, not only its cached copy
SOURCE_COLUMNS = ("study", "series")


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1)[0].item()
    elif isinstance(value, np.ndarray):
        value = value.reshape(-1)[0].item()
    return value


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
    ``<name>.json`` atomically into ``output_dir`` when the run completes. A run that fails leaves an earlier report
    as it was.

    With a ``batch`` (:py:class:`monai_bigan.data.InferenceBatch`), each input's row is also written, right after its
    outputs, as its completion record (with the output files it wrote), and the report is rebuilt at the end from the
    records of all the batch's inputs, in their order: those scored in this run and those a resumed run skipped. Under
    ``torch.distributed`` every rank records its share, then after a barrier rank 0 alone writes the report, each
    input once (an input without a record gets an error row).

    Args:
        output_dir: folder of the report (default: the batch's output folder).
        name: file name stem of the report (default: the batch's ``report_name``, else ``"scores"``).
        image_key: key of the preprocessed image (its metadata names the input).
        heatmap_key: key of a map in the input's own space (the inverted ``slice_map`` of ``AnomalyScored``, or a
            heatmap) whose largest axial slice mean is reported as the most anomalous slice; when absent the slice
            index of the scoring space is reported.
        batch: the batch whose inputs are scored: records each input and reports them all.

    Attributes:
        rows: the report rows: this run's, or after the run with a batch, those of the whole batch (on rank 0).
        num_scored: inputs scored (or failed) in this run, by this process.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        name: str | None = None,
        image_key: str = "image",
        heatmap_key: str = "slice_map",
        batch: InferenceBatch | None = None,
    ) -> None:
        if output_dir is None and batch is None:
            raise ValueError("AnomalyReportHandler needs an output_dir or a batch.")
        self.batch = batch
        self.output_dir = Path(output_dir) if output_dir is not None else batch.output_dir  # type: ignore[union-attr]
        self.name = name or (batch.report_name if batch is not None else "scores")
        self.image_key = image_key
        self.heatmap_key = heatmap_key
        self.rows: list[dict[str, Any]] = []
        self.num_scored = 0
        self._fields_by_source: dict[str, dict[str, Any]] | None = None
        self.logger = logging.getLogger(__name__)

    @property
    def report_file(self) -> Path:
        """The CSV report."""
        return self.output_dir / f"{self.name}.csv"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.write)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def started(self, engine: Engine | None = None) -> None:
        """Forget the rows of an earlier run."""
        self.rows.clear()
        self.num_scored = 0

    @property
    def num_failed(self) -> int:
        """Number of inputs that could not be scored."""
        return sum(row["status"] != "ok" for row in self.rows)

    def _output(self, source: str) -> str:
        if self.batch is not None:
            return self.batch.stem(source) if source in self.batch.names else ""
        return output_stem(source) if not source.startswith("<") else ""

    def _source_fields(self, source: str) -> dict[str, Any]:
        """The :py:data:`SOURCE_COLUMNS` that the batch's item of ``source`` carries."""
        if self.batch is None:
            return {}
        if self._fields_by_source is None:
            image_key = self.batch.image_key
            self._fields_by_source = {
                source_key(item[image_key]): {k: item[k] for k in SOURCE_COLUMNS if item.get(k)}
                for item in self.batch.inputs
            }
        return dict(self._fields_by_source.get(source_key(source), {}))

    def iteration_completed(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS, "")
            row["input"] = item_source(item, self.image_key)
            row.update(self._source_fields(row["input"]))
            row["output"] = self._output(row["input"])
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
            self.num_scored += 1
            if self.batch is not None:
                # after all the outputs of the input: its record says it is complete
                self.batch.write_record(row, self.batch.take_outputs(row["input"]))

    def batch_rows(self) -> list[dict[str, Any]]:
        """The report rows of every input of the batch, from their completion records, in the batch's order."""
        if self.batch is None:
            raise ValueError("batch_rows needs the handler's batch.")
        rows = []
        for source, record in zip(self.batch.names.sources, self.batch.records()):
            row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS, "")
            if record is None:
                row.update(self._source_fields(source))
                row.update(
                    input=source,
                    output=self.batch.stem(source),
                    status="error",
                    message=f"{source}: no result was recorded (the run stopped before scoring it, or the output "
                    "folder is not shared by all the processes of the run).",
                )
            else:
                row.update(record.get("row") or {})
            rows.append(row)
        return rows

    def write(self, engine: Engine | None = None) -> None:
        """
        Write the CSV and JSON reports atomically: this run's rows, or with a batch (on rank 0, after every rank has
        recorded its share) the rows of all its inputs.
        """
        if self.batch is not None:
            self.batch.synchronize()
            if not self.batch.is_main_process:
                return
            self.rows = self.batch_rows()
        self.write_report(self.rows)
        flagged = sum(1 for r in self.rows if r["flagged"] is True)
        skipped = 0 if self.batch is None else self.batch.num_skipped
        earlier = f" ({skipped} of them by an earlier run)" if skipped else ""
        self.logger.info(
            f"scored {len(self.rows) - self.num_failed} of {len(self.rows)} inputs{earlier}, {flagged} flagged, "
            f"{self.num_failed} failed -> {self.report_file}"
        )

    def write_report(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` as ``<name>.csv`` and ``<name>.json`` atomically."""
        buffer = io.StringIO()
        present = [c for c in SOURCE_COLUMNS if any(row.get(c) for row in rows)]
        columns = [REPORT_COLUMNS[0], *present, *REPORT_COLUMNS[1:]]
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.report_file, buffer.getvalue())
        atomic_write_text(self.output_dir / f"{self.name}.json", json.dumps(list(rows), indent=2))

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        # an earlier report stays as it was: never replaced by a partial (or empty) one
        resume = "" if self.batch is None else f"; the {self.num_scored} inputs scored are recorded and a rerun resumes"
        self.logger.error(f"the run failed: {self.report_file} was not written{resume}.")
        raise e

    def raise_if_failed(self) -> None:
        """
        Raise after the run when an input could not be scored, so the command exits with a failure status (with a
        batch under ``torch.distributed``: on rank 0, which reports every rank's inputs).

        Raises:
            RuntimeError: listing the failed inputs.
        """
        if self.batch is not None and not self.batch.is_main_process:
            return
        failed = [row for row in self.rows if row["status"] != "ok"]
        if failed:
            lines = "\n".join(f"  {row['message']}" for row in failed)
            raise RuntimeError(
                f"{len(failed)} of {len(self.rows)} inputs could not be scored (see {self.report_file}):\n{lines}"
            )
