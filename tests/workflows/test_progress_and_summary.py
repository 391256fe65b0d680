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
"""Progress bars of the evaluation and recalibration workflows, and the summary compute_metrics ends with."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_bigan.utils import ScoreCalibration
from monai_bigan.workflows import Recalibration, compute_metrics
from monai_bigan.workflows.evaluation import metrics_summary

LABELS = [0, 0, 1, 1]


def _method(tmp_path, data, name, heatmaps, scores, voxel_threshold):
    folder = tmp_path / name
    folder.mkdir()
    rows = []
    for i, (heatmap, score) in enumerate(zip(heatmaps, scores)):
        nib.save(nib.Nifti1Image(heatmap.astype(np.float32), np.eye(4)), folder / f"s{i}_heatmap.nii.gz")
        rows.append({"input": str(data / f"s{i}.nii.gz"), "score": score, "status": "ok"})
    (folder / "scores.json").write_text(json.dumps(rows))
    calibration = ScoreCalibration.fit([0.1, 0.2, 0.3], target_fpr=0.3)
    replace(calibration, voxel_threshold=voxel_threshold).save(folder / "calibration.json")
    return folder


@pytest.fixture
def scored(tmp_path):
    """A labelled test split of 4 tiny volumes with masks, and two methods' heatmaps, scores and calibrations."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    entries, masks = [], []
    for i, label in enumerate(LABELS):
        mask = np.zeros((6, 6, 4), np.uint8)
        if label:
            mask[1 + i : 4 + i, 2:4, 1:3] = 1
        masks.append(mask)
        nib.save(nib.Nifti1Image(rng.random((6, 6, 4)).astype(np.float32), np.eye(4)), data / f"s{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), data / f"s{i}_mask.nii.gz")
        entries.append({"image": f"s{i}.nii.gz", "label": label, "mask": f"s{i}_mask.nii.gz"})
    (data / "datalist.json").write_text(json.dumps({"test": entries}))
    heatmaps = [0.8 * m + 0.6 * rng.random(m.shape) for m in masks]
    bigan = _method(tmp_path, data, "bigan", heatmaps, [0.1, 0.4, 0.35, 0.8], voxel_threshold=0.5)
    zscore = _method(tmp_path, data, "zscore", [rng.random(m.shape) for m in masks], [0.2, 0.1, 0.3, 0.4], None)
    return data, {"bigan": bigan, "zscore": zscore}, masks, heatmaps


def test_summary_names_the_headline_metrics_and_the_outputs(scored, tmp_path, caplog, capsys):
    data, methods, masks, heatmaps = scored
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="monai_bigan.workflows.evaluation"):
        metrics = compute_metrics(data, methods, out)
    # Dice of the voxels above the validation voxel threshold, pooled over the scans
    flagged = np.concatenate([(h > 0.5).ravel() for h in heatmaps])
    lesion = np.concatenate([(m > 0).ravel() for m in masks])
    expected = 2 * np.sum(flagged & lesion) / (np.sum(flagged) + np.sum(lesion))
    assert metrics["bigan"]["dice_at_validation_threshold"] == pytest.approx(expected)
    assert 0.0 < expected < 1.0
    assert "dice_at_validation_threshold" not in metrics["baselines"]["zscore"]  # no validation voxel threshold
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))

    summary = [r.getMessage() for r in caplog.records if "image AUROC" in r.getMessage()]
    assert len(summary) == 1
    lines = summary[0].splitlines()
    assert lines[0] == "evaluation of the 'test' split (4 labelled scans):"
    assert lines[1].split() == [
        "method",
        "image",
        "AUROC",
        "voxel",
        "AUPRC",
        "Dice",
        "@",
        "val.",
        "threshold",
        "failed",
    ]
    bigan = metrics["bigan"]
    assert lines[2].split() == [
        "bigan",
        f"{bigan['auroc']:.3f}",
        f"{bigan['voxel_auprc']:.3f}",
        f"{expected:.3f}",
        "0",
    ]
    zscore = metrics["baselines"]["zscore"]
    assert lines[3].split() == ["zscore", f"{zscore['auroc']:.3f}", f"{zscore['voxel_auprc']:.3f}", "-", "0"]
    assert lines[4] == f"  metrics: {os.path.abspath(out / 'metrics.json')}"
    assert lines[5] == f"  plots: roc_pr.png, score_histograms.png, cases.png in {os.path.abspath(out)}"
    # one progress bar over the scans of both methods
    err = capsys.readouterr().err
    assert "metrics: 100%" in err and "8/8" in err


def test_metrics_progress_can_be_turned_off_or_be_a_callable(scored, tmp_path, capsys):
    data, methods, _, _ = scored
    compute_metrics(data, methods, tmp_path / "a", progress=False)
    assert "metrics:" not in capsys.readouterr().err
    seen = []
    compute_metrics(data, methods, tmp_path / "b", progress=seen.append)
    assert seen == ["bigan", "zscore"] and "metrics:" not in capsys.readouterr().err


def test_summary_of_a_metrics_file_without_voxel_metrics(tmp_path):
    results = {"split": "test", "num_scans": 6, "bigan": {"auroc": 0.75, "num_failed": 1}, "baselines": {}}
    text = metrics_summary(results, tmp_path)
    assert text.splitlines()[2].split() == ["bigan", "0.750", "-", "-", "1"]
    assert "plots" not in text  # none written


def test_baseline_evaluation_shows_the_fit_and_the_passes(tiny_dataset, tmp_path, capsys):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRangePercentilesd

    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.workflows import BaselineEvaluation

    preprocessing = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            ScaleIntensityRangePercentilesd("image", 0, 99.5, -1, 1, clip=True),
            Resized("image", (12, 12, 10)),
        ]
    )
    BaselineEvaluation("zscore", ZScoreBaseline(), preprocessing, tiny_dataset, tmp_path / "on", top_k=3).run()
    err = capsys.readouterr().err
    # 4 training scans fitted, 2 validation scans calibrated, 2 test scans scored
    for line in ("zscore: fitting: 100%", "zscore: calibration: 100%", "zscore: scoring test: 100%"):
        assert line in err, line
    assert "4/4" in err and "2/2" in err
    evaluation = BaselineEvaluation(
        "zscore", ZScoreBaseline(), preprocessing, tiny_dataset, tmp_path / "off", top_k=3, progress=False
    )
    evaluation.run()
    assert "zscore:" not in capsys.readouterr().err


class _Evaluator(Engine):
    def __init__(self) -> None:
        super().__init__(lambda engine, batch: batch)

    def run(self) -> None:  # type: ignore[override]
        super().run([0, 1, 2], max_epochs=1)


def test_recalibration_shows_its_pass_once(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"network": torch.nn.Linear(2, 2).state_dict()}, path)
    evaluator = _Evaluator()
    recalibration = Recalibration(evaluator, path, torch.nn.Linear(2, 2))
    recalibration.run()
    assert "recalibration: 100%" in capsys.readouterr().err
    handlers = len(evaluator._event_handlers[Events.ITERATION_COMPLETED])
    recalibration.run()  # a second run does not attach a second bar
    assert len(evaluator._event_handlers[Events.ITERATION_COMPLETED]) == handlers
    assert capsys.readouterr().err.count("recalibration: 100%") == 1
    Recalibration(_Evaluator(), path, torch.nn.Linear(2, 2), progress=False).run()
    assert "recalibration" not in capsys.readouterr().err
