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
"""AnomalyReportHandler: per-input records, a report of exactly the batch's inputs, and failed runs that change nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, MetaTensor

from monai_bigan.data import InferenceBatch, open_inference_batch
from monai_bigan.engines import AnomalyEvaluator
from monai_bigan.handlers import REPORT_COLUMNS, AnomalyReportHandler


def _inputs(tmp_path: Path, count: int) -> list[dict]:
    """Input paths (never read: the engines below make the scorer's outputs themselves)."""
    return [{"image": str(tmp_path / "in" / f"scan_{i}.nii.gz")} for i in range(count)]


def _engine(handler: AnomalyReportHandler, fail_at: int | None = None) -> Engine:
    """An engine whose outputs are those of AnomalyEvaluator: the scored item, its outputs written first."""

    def step(engine: Engine, item: dict) -> list[dict]:
        if engine.state.iteration == fail_at:
            raise OSError("disk full")
        source = item["image"]
        if handler.batch is not None:
            handler.batch.output_path(source, "heatmap", ".nii.gz").write_bytes(b"heatmap")
        score = float(Path(source).name[5])
        image = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": source})
        return [{"image": image, "score": torch.tensor([score]), "flagged": torch.tensor(score > 1)}]

    engine = Engine(step)
    handler.attach(engine)
    return engine


def _report(folder: Path) -> list[dict]:
    with open(folder / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_input_is_recorded_after_its_outputs_and_the_report_lists_the_batch(tmp_path):
    inputs = _inputs(tmp_path, 3)
    out = tmp_path / "out"
    batch = open_inference_batch(out, inputs)
    handler = AnomalyReportHandler(batch=batch)
    _engine(handler).run(batch.pending)
    assert list(_report(out)[0]) == list(REPORT_COLUMNS)
    assert [(r["input"], r["output"], r["score"]) for r in _report(out)] == [
        (i["image"], f"scan_{n}", f"{float(n)}") for n, i in enumerate(inputs)
    ]
    record = json.loads((out / "records" / "scan_2.json").read_text())
    assert record["files"] == ["scan_2_heatmap.nii.gz"] and record["row"]["flagged"] is True
    assert json.loads((out / "scores.json").read_text()) == handler.rows

    # a resumed run scores the rest and reports every input of the batch, each once, in order
    (out / "scan_1_heatmap.nii.gz").unlink()
    batch = open_inference_batch(out, inputs)
    handler = AnomalyReportHandler(batch=batch)
    _engine(handler).run(batch.pending)
    assert handler.num_scored == 1 and [r["input"] for r in handler.rows] == [i["image"] for i in inputs]
    assert [r["input"] for r in _report(out)] == [i["image"] for i in inputs]


def test_a_failing_run_leaves_the_previous_report_byte_identical(tmp_path):
    inputs = _inputs(tmp_path, 3)
    out = tmp_path / "out"
    batch = open_inference_batch(out, inputs)
    _engine(AnomalyReportHandler(batch=batch)).run(batch.pending)
    before = {name: (out / name).read_bytes() for name in ("scores.csv", "scores.json")}
    for name in ("scan_0_heatmap.nii.gz", "scan_2_heatmap.nii.gz"):
        (out / name).unlink()

    batch = open_inference_batch(out, inputs)
    handler = AnomalyReportHandler(batch=batch)
    with pytest.raises(OSError, match="disk full"):
        _engine(handler, fail_at=2).run(batch.pending)
    assert {name: (out / name).read_bytes() for name in before} == before
    # what was scored before the failure is recorded: the next run resumes after it
    assert (out / "scan_0_heatmap.nii.gz").is_file() and (out / "records" / "scan_0.json").is_file()
    assert [p["image"] for p in open_inference_batch(out, inputs).pending] == [inputs[2]["image"]]


def test_without_a_batch_a_failing_run_writes_no_report(tmp_path):
    handler = AnomalyReportHandler(tmp_path)
    _engine(handler).run(_inputs(tmp_path, 2))
    before = (tmp_path / "scores.csv").read_bytes()
    with pytest.raises(OSError, match="disk full"):
        _engine(AnomalyReportHandler(tmp_path), fail_at=1).run(_inputs(tmp_path, 2))
    assert (tmp_path / "scores.csv").read_bytes() == before
    assert [r["output"] for r in _report(tmp_path)] == ["scan_0", "scan_1"]


def test_inputs_without_a_record_are_error_rows(tmp_path):
    inputs = _inputs(tmp_path, 2)
    batch = InferenceBatch(tmp_path / "out", inputs)
    handler = AnomalyReportHandler(batch=batch)
    _engine(handler).run(inputs[:1])  # a run that never got to the second input
    assert [r["status"] for r in handler.rows] == ["ok", "error"]
    assert "no result was recorded" in handler.rows[1]["message"]
    with pytest.raises(RuntimeError, match="1 of 2 inputs could not be scored"):
        handler.raise_if_failed()


def test_an_evaluator_with_nothing_to_score_still_rebuilds_the_report(tmp_path):
    inputs = _inputs(tmp_path, 2)
    out = tmp_path / "out"
    batch = open_inference_batch(out, inputs)
    _engine(AnomalyReportHandler(batch=batch)).run(batch.pending)
    (out / "scores.csv").unlink()
    batch = open_inference_batch(out, inputs)
    assert batch.pending == [] and batch.num_skipped == 2
    handler = AnomalyReportHandler(batch=batch)
    evaluator = AnomalyEvaluator(
        device="cpu", val_data_loader=DataLoader(batch.pending), network=torch.nn.Identity(), val_handlers=[handler]
    )
    evaluator.run()
    assert handler.num_scored == 0 and [r["input"] for r in _report(out)] == [i["image"] for i in inputs]
