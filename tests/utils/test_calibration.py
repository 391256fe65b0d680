from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from monai_bigan.bundle import ScoringSettings
from monai_bigan.transforms import ScoreCalibrationd
from monai_bigan.utils import ScoreCalibration


def test_fit_uses_healthy_scores_only_for_threshold_and_percentiles():
    scores = [0.1, 0.2, 0.3, 0.4, 5.0, 6.0]
    labels = [0, 0, 0, 0, 1, 1]
    cal = ScoreCalibration.fit(scores, labels, target_fpr=0.25)
    assert cal.healthy_scores == [0.1, 0.2, 0.3, 0.4]
    assert cal.threshold == pytest.approx(0.4)  # (1 - 0.25) quantile of the healthy scores, "higher" method
    assert cal.percentile(0.25) == pytest.approx(50.0)
    assert cal.percentile(10.0) == pytest.approx(100.0)
    assert cal.is_flagged(0.41) and not cal.is_flagged(0.4)
    # labelled anomalies give the F1-optimal threshold: here a perfect separation
    assert cal.threshold_f1 == pytest.approx(5.0) and cal.f1_at_threshold_f1 == pytest.approx(1.0)
    assert cal.num_anomalous == 2


def test_voxel_threshold_and_colour_scale_come_from_healthy_residuals():
    rng = np.random.default_rng(0)
    residuals = [rng.uniform(0, 1, 10_000) for _ in range(3)]
    cal = ScoreCalibration.fit([0.1, 0.2, 0.3], healthy_residuals=residuals, voxel_fpr=0.01)
    assert cal.voxel_threshold == pytest.approx(0.99, abs=0.01)
    assert cal.heatmap_vmax == pytest.approx(0.9999, abs=0.01)
    assert cal.heatmap_vmax > cal.voxel_threshold
    assert cal.threshold_f1 is None


def test_save_load_round_trip_and_errors(tmp_path):
    cal = ScoreCalibration.fit([0.1, 0.3, 0.2], [0, 0, None])
    path = cal.save(tmp_path / "models" / "calibration.json")
    assert ScoreCalibration.load(path) == cal
    assert json.loads(path.read_text())["target_fpr"] == 0.05
    with pytest.raises(FileNotFoundError, match="calibration.json"):
        ScoreCalibration.load(tmp_path / "calibration.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        ScoreCalibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="healthy"):
        ScoreCalibration.fit([1.0], [1])
    with pytest.raises(ValueError, match="target_fpr"):
        ScoreCalibration.fit([1.0], target_fpr=0.0)


def test_score_calibrationd_adds_percentile_flag_and_threshold():
    cal = ScoreCalibration.fit([0.1, 0.2, 0.3, 0.4, 5.0], [0, 0, 0, 0, 1], target_fpr=0.25)
    out = ScoreCalibrationd(cal)({"score": torch.tensor([0.35])})
    assert out["percentile"] == pytest.approx(75.0) and out["flagged"] is False and out["threshold"] == cal.threshold
    out = ScoreCalibrationd(cal, threshold_mode="f1")({"score": torch.tensor([5.0])})
    assert out["flagged"] is True and out["threshold"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="labelled anomalies"):
        ScoreCalibrationd(ScoreCalibration.fit([0.1, 0.2]), threshold_mode="f1")


def test_scoring_settings_are_recorded_and_a_different_scorer_is_warned_about(tmp_path, caplog):
    refined = ScoringSettings(refine_steps=20, refine_lr=0.4)
    calibration = ScoreCalibration.fit([0.1, 0.2, 0.3], scoring=refined)
    loaded = ScoreCalibration.load(calibration.save(tmp_path / "calibration.json"))
    assert loaded.scoring == calibration.scoring == refined.to_dict() and loaded.scoring["refine_steps"] == 20
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.scoring"):
        assert refined.check(loaded.scoring) == {}  # same scorer: silent
        assert not caplog.records
        ScoringSettings().check(loaded.scoring)
    assert "refine_steps 20 -> 0" in caplog.text and "calibrating" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.scoring"):
        ScoringSettings().check(ScoreCalibration.fit([0.1, 0.2]).scoring)  # unknown settings (older files): silent
    assert not caplog.records


def test_flag_threshold_by_mode():
    calibration = ScoreCalibration.fit([0.1, 0.2, 0.3, 0.9], [0, 0, 0, 1])
    assert calibration.flag_threshold("fpr") == calibration.threshold
    assert calibration.flag_threshold("f1") == calibration.threshold_f1
    with pytest.raises(ValueError, match="labelled anomalies"):
        ScoreCalibration.fit([0.1]).flag_threshold("f1")
