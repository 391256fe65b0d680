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
from tests.bundle.test_inference_bundle import TINY_INFER, trained_bundle  # noqa: F401 (fixture)
from tests.conftest import REPO_ROOT

EVALUATE = str(REPO_ROOT / "bundles" / "bigan" / "evaluate.json")


def test_evaluate_bundle_writes_metrics_with_baselines_and_plots(trained_bundle, tiny_dataset, tmp_path):  # noqa: F811
    out = tmp_path / "evaluation"
    wf = ConfigWorkflow(
        config_file=EVALUATE,
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
