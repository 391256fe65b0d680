"""The evaluation bundle: BiGAN and baselines scored on the labelled test split, metrics and plots."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from monai_bigan.data import inference_datalist
from monai_bigan.utils import ScoreCalibration
from monai_bigan.workflows import compute_metrics, output_stem
from tests.bundle.test_inference_bundle import INFERENCE, TINY_INFER, trained_bundle  # noqa: F401 (fixture)
from tests.conftest import REPO_ROOT

EVALUATE = str(REPO_ROOT / "bundles" / "bigan" / "evaluate.json")


def test_evaluate_bundle_writes_metrics_with_baselines_and_plots(trained_bundle, tiny_dataset, tmp_path):  # noqa: F811
    out = tmp_path / "evaluation"
    wf = ConfigWorkflow(
        config_file=[INFERENCE, EVALUATE],  # evaluate.json extends the inference bundle
        workflow_type="infer",
        bundle_root=str(trained_bundle),
        dataset_dir=str(tiny_dataset),
        output_dir=str(out),
        baseline_grid=[16, 16, 16],
        **TINY_INFER,
    )
    wf.initialize()
    wf.run()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"zscore", "pca"}
    for method in (metrics["bigan"], *metrics["baselines"].values()):
        for key in ("auroc", "auprc", "sensitivity_at_95_specificity", "f1", "sensitivity", "specificity"):
            assert 0.0 <= method[key] <= 1.0, key
        for key in ("voxel_auroc", "voxel_auprc", "dice_best", "lesion_detection_rate"):
            assert 0.0 <= method[key] <= 1.0, key
        assert method["threshold_source"] == "validation"
    # the BiGAN's scan threshold is the validation calibration's, never one fitted on test scores
    calibration = ScoreCalibration.load(trained_bundle / "models" / "calibration.json")
    assert metrics["bigan"]["threshold"] == pytest.approx(calibration.threshold)
    for png in ("roc_pr.png", "score_histograms.png", "cases.png"):
        assert (out / png).stat().st_size > 5_000
    # baseline heatmaps are in each input's own geometry, named after it
    assert (out / "baselines" / "pca" / "test_1_heatmap.nii.gz").is_file()
    # the baselines are reported like the BiGAN, and calibrated by the same handler
    for baseline in ("zscore", "pca"):
        assert (out / "baselines" / baseline / "scores.csv").is_file()
        assert (out / "baselines" / baseline / "calibration.json").is_file()


def test_scoring_inputs_never_carry_test_labels_or_masks(tiny_dataset):
    entries = inference_datalist(tiny_dataset, "test")
    assert entries and all(set(e) == {"image"} for e in entries)


def test_compute_metrics_matches_sklearn_on_written_scores(tmp_path):
    from sklearn.metrics import average_precision_score, roc_auc_score

    data = tmp_path / "data"
    data.mkdir()
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    entries = []
    for i, label in enumerate(labels):
        (data / f"s{i}.nii.gz").write_bytes(b"")  # never opened: no mask given, so no voxel metrics
        entries.append({"image": f"s{i}.nii.gz", "label": label})
    (data / "datalist.json").write_text(json.dumps({"test": entries}))
    method = tmp_path / "method"
    method.mkdir()
    rows = [{"input": str(data / e["image"]), "score": s, "status": "ok"} for e, s in zip(entries, scores)]
    (method / "scores.json").write_text(json.dumps(rows))
    ScoreCalibration.fit([0.1, 0.2, 0.3], target_fpr=0.3).save(method / "calibration.json")
    metrics = compute_metrics(data, {"bigan": method}, tmp_path / "out")
    assert metrics["bigan"]["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["bigan"]["auprc"] == pytest.approx(average_precision_score(labels, scores))
    flagged = np.array(scores) > 0.3
    assert metrics["bigan"]["tp"] == int((flagged & (np.array(labels) == 1)).sum())
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_output_stem():
    assert output_stem("/a/b/case_1.nii.gz") == "case_1"
    assert output_stem("/a/dicom_series/") == "dicom_series"


def test_baseline_refuses_bad_training_files(tiny_dataset, tmp_path):
    import shutil

    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized

    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.transforms import CheckImaged, CheckInputd
    from monai_bigan.workflows import BaselineEvaluation

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "training_1.nii.gz").write_bytes(b"truncated")
    preprocessing = Compose(
        [
            CheckInputd("image"),
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            CheckImaged("image"),
            Resized("image", (8, 8, 8)),
        ]
    )
    evaluation = BaselineEvaluation("zscore", ZScoreBaseline(), preprocessing, data, tmp_path / "out")
    with pytest.raises(ValueError, match="training_1.nii.gz"):
        evaluation.run()
    assert not (tmp_path / "out" / "scores.json").exists()


def test_baseline_gets_the_same_heatmap_postprocessing_and_can_score_validation(tiny_dataset, tmp_path):

    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRangePercentilesd

    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.transforms import HeatmapPostprocessd
    from monai_bigan.workflows import BaselineEvaluation

    preprocessing = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            ScaleIntensityRangePercentilesd("image", 0, 99.5, -1, 1, clip=True),
            Resized("image", (12, 12, 10)),
        ]
    )
    post = HeatmapPostprocessd("pred", sigma=1.0, mask=True)
    rows = BaselineEvaluation(
        "zscore",
        ZScoreBaseline(),
        preprocessing,
        tiny_dataset,
        tmp_path / "val",
        heatmap_postprocessing=post,
        split="validation",
    ).run()
    validation = json.loads((tiny_dataset / "datalist.json").read_text())["validation"]
    assert [r["input"].split("/")[-1] for r in rows] == [e["image"].split("/")[-1] for e in validation]
    heatmap = np.asarray(nib.load(tmp_path / "val" / "validation_0_heatmap.nii.gz").dataobj)
    image = np.asarray(nib.load(tiny_dataset / validation[0]["image"]).dataobj)
    assert heatmap.shape == image.shape
    assert heatmap[image == image.min()].max() < 1e-3 * heatmap.max()  # masked outside the head


def _preprocessing(grid=(12, 12, 10)):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRangePercentilesd

    from monai_bigan.transforms import CheckImaged, CheckInputd

    return Compose(
        [
            CheckInputd("image"),
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            CheckImaged("image"),
            ScaleIntensityRangePercentilesd("image", 0, 99.5, -1, 1, clip=True),
            Resized("image", grid),
        ]
    )


def _spy_calibration_fit(monkeypatch):
    """Record the healthy residual samples per scan that each ``ScoreCalibration.fit`` call receives."""
    calls = []
    fit = ScoreCalibration.fit.__func__

    def spy(cls, scores, labels=None, healthy_residuals=(), **kwargs):
        residuals = [np.asarray(r) for r in healthy_residuals]
        calls.append({"scores": list(scores), "labels": list(labels or []), "residuals": residuals})
        return fit(cls, scores, labels, residuals, **kwargs)

    monkeypatch.setattr(ScoreCalibration, "fit", classmethod(spy))
    return calls


def test_baseline_calibrates_through_calibration_handler_with_voxel_cap_and_scoring(
    tiny_dataset, tmp_path, monkeypatch
):
    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.engines import AnomalyEvaluator
    from monai_bigan.handlers import AnomalyReportHandler, CalibrationHandler
    from monai_bigan.workflows import BaselineEvaluation

    scoring = {"alpha": 1.0, "method": "zscore", "top_k_slices": 3}
    evaluation = BaselineEvaluation(
        "zscore",
        ZScoreBaseline(),
        _preprocessing(),
        tiny_dataset,
        tmp_path / "out",
        top_k=3,
        scoring=scoring,
        max_voxels_per_scan=50,
    )
    # scored by the BiGAN's evaluator and handlers, not by a loop of its own
    validation = json.loads((tiny_dataset / "datalist.json").read_text())["validation"]
    evaluator, handler = evaluation.calibration_evaluator([{"image": str(tiny_dataset / validation[0]["image"])}])
    assert isinstance(evaluator, AnomalyEvaluator) and isinstance(handler, CalibrationHandler)
    assert handler.max_voxels_per_scan == 50 and handler.scoring == scoring
    evaluator, report = evaluation.scoring_evaluator([{"image": str(tiny_dataset / validation[0]["image"])}])
    assert isinstance(evaluator, AnomalyEvaluator) and isinstance(report, AnomalyReportHandler)

    calls = _spy_calibration_fit(monkeypatch)
    evaluation.run()
    # one healthy validation scan, its foreground residuals (far more than 50 voxels) capped at 50
    (call,) = calls
    assert call["labels"] == [0, 1]
    assert [r.size for r in call["residuals"]] == [50]
    calibration = ScoreCalibration.load(tmp_path / "out" / "calibration.json")
    assert calibration.scoring == scoring
    assert calibration.healthy_scores == pytest.approx([call["scores"][0]])
    assert calibration.voxel_threshold == pytest.approx(float(np.quantile(call["residuals"][0], 1 - 0.001)))
    assert evaluation.calibration is not None and evaluation.calibration.threshold == calibration.threshold


def test_baseline_scores_match_a_direct_computation(tiny_dataset, tmp_path):
    """The evaluator path gives the scores, thresholds and heatmaps of calling the baseline directly."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from monai_bigan.baselines import PCABaseline
    from monai_bigan.transforms import AnomalyScored, HeatmapPostprocessd
    from monai_bigan.workflows import BaselineEvaluation

    preprocessing = _preprocessing()
    post = HeatmapPostprocessd("pred", sigma=1.0, mask=True)
    rows = BaselineEvaluation(
        "pca",
        PCABaseline(),
        preprocessing,
        tiny_dataset,
        tmp_path / "out",
        top_k=3,
        heatmap_postprocessing=post,
    ).run()

    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    baseline = PCABaseline().fit(
        [preprocessing({"image": str(tiny_dataset / e["image"])})["image"] for e in datalist["training"]]
    )
    scored = AnomalyScored("pred", alpha=1.0, slice_dim=2, top_k=3)

    def direct(entry):
        image = preprocessing({"image": str(tiny_dataset / entry["image"])})["image"]
        with torch.no_grad():
            maps = baseline(image.as_tensor()[None])[0]
        maps = post({"image": image, "pred": maps})["pred"]
        return image, maps, float(scored({"image": image, "pred": maps})["score"][0])

    val = [direct(e) for e in datalist["validation"]]
    residuals = [maps[0][image[0] > -0.9].numpy() for (image, maps, _), e in zip(val, datalist["validation"])]
    expected_cal = ScoreCalibration.fit(
        [s for _, _, s in val],
        [e["label"] for e in datalist["validation"]],
        healthy_residuals=[r for r, e in zip(residuals, datalist["validation"]) if e["label"] == 0],
    )
    calibration = ScoreCalibration.load(tmp_path / "out" / "calibration.json")
    assert calibration.threshold == pytest.approx(expected_cal.threshold, rel=1e-6)
    assert calibration.voxel_threshold == pytest.approx(expected_cal.voxel_threshold, rel=1e-6)
    assert [r["input"] for r in rows] == [str(tiny_dataset / e["image"]) for e in datalist["test"]]
    for row, entry in zip(rows, datalist["test"]):
        image, maps, score = direct(entry)
        assert row["status"] == "ok"
        assert row["score"] == pytest.approx(score, rel=1e-6)
        assert row["threshold"] == pytest.approx(calibration.threshold)
        assert row["flagged"] == (score > calibration.threshold)
        assert row["percentile"] == pytest.approx(calibration.percentile(score))
        inverted = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)(
            {"image": image, "pred": MetaTensor(maps[:1].clone(), meta=image.meta)}
        )["pred"]
        heatmap = np.asarray(nib.load(tmp_path / "out" / f"{output_stem(entry['image'])}_heatmap.nii.gz").dataobj)
        np.testing.assert_allclose(heatmap, np.asarray(inverted[0]), rtol=1e-5, atol=1e-6)


def test_baseline_reports_bad_inputs_as_error_rows_and_writes_csv(tiny_dataset, tmp_path):
    import csv
    import shutil

    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.workflows import BaselineEvaluation

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    datalist = json.loads((data / "datalist.json").read_text())
    (data / "test_bad.nii.gz").write_bytes(b"truncated")
    (data / "validation_bad.nii.gz").write_bytes(b"truncated")
    datalist["test"].insert(1, {"image": "test_bad.nii.gz", "label": 1})
    datalist["test"].append({"image": "test_missing.nii.gz", "label": 0})
    datalist["validation"].append({"image": "validation_bad.nii.gz", "label": 0})
    (data / "datalist.json").write_text(json.dumps(datalist))
    out = tmp_path / "out"

    rows = BaselineEvaluation("zscore", ZScoreBaseline(), _preprocessing(), data, out, top_k=3).run()

    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error"]
    assert "test_bad.nii.gz" in rows[1]["message"] and "test_missing.nii.gz" in rows[3]["message"]
    # the bad validation scan is left out of the calibration, the rest is calibrated and scored
    calibration = ScoreCalibration.load(out / "calibration.json")
    assert len(calibration.healthy_scores) == 1
    assert all(isinstance(r["score"], float) and r["threshold"] == calibration.threshold for r in rows[::2])
    assert sorted(p.name for p in out.glob("*_heatmap.nii.gz")) == ["test_0_heatmap.nii.gz", "test_1_heatmap.nii.gz"]
    assert json.loads((out / "scores.json").read_text()) == rows
    with open(out / "scores.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["input"] for r in table] == [r["input"] for r in rows]
    assert [r["status"] for r in table] == ["ok", "error", "ok", "error"]
    # compute_metrics reads the baseline's outputs as before, skipping the failed scans
    metrics = compute_metrics(data, {"zscore": out}, tmp_path / "metrics", primary="zscore")
    assert metrics["zscore"]["num_failed"] == 2
    assert metrics["zscore"]["threshold_source"] == "validation"


def test_baseline_fitted_on_slices_scores_through_a_slice_inferer(tiny_dataset, tmp_path):
    from monai.inferers import SliceInferer

    from monai_bigan.baselines import ZScoreBaseline
    from monai_bigan.workflows import BaselineEvaluation

    baseline = ZScoreBaseline()
    rows = BaselineEvaluation(
        "zscore2d",
        baseline,
        _preprocessing(),
        tiny_dataset,
        tmp_path / "out",
        top_k=3,
        inferer=SliceInferer(spatial_dim=2, roi_size=(12, 12), sw_batch_size=4, progress=False),
    ).run()
    assert baseline.grid_shape == (1, 12, 12)  # fitted on the axial slices of the training grids
    assert int(baseline.num_samples) == 4 * 10
    assert [r["status"] for r in rows] == ["ok", "ok"]
    heatmap = nib.load(tmp_path / "out" / "test_0_heatmap.nii.gz")
    assert heatmap.shape == nib.load(tiny_dataset / "test_0.nii.gz").shape
