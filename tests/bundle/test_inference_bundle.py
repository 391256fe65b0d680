"""The inference bundle end to end on a tiny trained model: outputs, geometry, report, calibration and bad input."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.bundle import ConfigWorkflow
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.utils import ScoreCalibration
from tests.bundle.test_train_bundle import TINY_2D, TRAIN
from tests.conftest import REPO_ROOT, train_tiny_bundle

INFERENCE = str(REPO_ROOT / "bundles" / "bigan" / "inference.json")
TINY_INFER = {k: v for k, v in TINY_2D.items() if k not in ("slices_per_volume", "batch_size")}


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory, tiny_dataset):
    root = tmp_path_factory.mktemp("trained")
    train_tiny_bundle(root, tiny_dataset, TRAIN, **TINY_2D)
    assert (root / "models" / "calibration.json").is_file()
    return root


def _infer(bundle_root, dataset_dir, output_dir, **override):
    wf = ConfigWorkflow(
        config_file=INFERENCE,
        workflow_type="infer",
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        output_dir=str(output_dir),
        **{**TINY_INFER, **override},
    )
    wf.initialize()
    return wf, wf.run


def _chain_text(exc):
    text = ""
    while exc is not None:
        text += str(exc)
        exc = exc.__cause__ or exc.__context__
    return text


def _rows(output_dir):
    with open(output_dir / "scores.csv") as f:
        return list(csv.DictReader(f))


def test_scores_test_split_with_all_outputs(trained_bundle, tiny_dataset, tmp_path):
    wf, run = _infer(trained_bundle, tiny_dataset, tmp_path / "out")
    assert wf.check_properties() == []
    run()
    out = tmp_path / "out"
    rows = _rows(out)
    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    assert len(rows) == len(datalist["test"]) and all(r["status"] == "ok" for r in rows)
    assert json.loads((out / "scores.json").read_text())[0]["input"] == rows[0]["input"]
    calibration = ScoreCalibration.load(trained_bundle / "models" / "calibration.json")
    for row, entry in zip(rows, datalist["test"]):
        stem = entry["image"].replace(".nii.gz", "")
        source = nib.load(tiny_dataset / entry["image"])
        for postfix, dtype in (("heatmap", np.float32), ("reconstruction", np.float32), ("mask", np.uint8)):
            result = nib.load(out / f"{stem}_{postfix}.nii.gz")
            assert result.shape == source.shape, postfix
            np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
            assert result.get_data_dtype() == dtype
        assert (out / f"{stem}_review.png").stat().st_size > 10_000
        # percentiles and flags come from the healthy validation calibration, not from this batch
        score = float(row["score"])
        assert float(row["percentile"]) == pytest.approx(calibration.percentile(score))
        assert row["flagged"] == str(score > calibration.threshold)
        assert float(row["score"]) == pytest.approx(
            0.9 * float(row["score_residual"]) + 0.1 * float(row["score_discriminator"]), rel=1e-4
        )
        assert 0 <= int(row["worst_slice"]) < source.shape[2]


def _ct_series(series: Path, num_slices: int = 6) -> Path:
    """A DICOM series folder of ``num_slices`` copies of pydicom's CT_small.dcm, 5 mm apart."""
    series.mkdir()
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    for i in range(num_slices):
        ds = copy.deepcopy(template)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [float(v) for v in template.ImagePositionPatient[:2]] + [float(i) * 5.0]
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.save_as(series / f"slice_{i:02d}.dcm")
    return series


def test_oblique_nifti_and_dicom_series_keep_their_geometry(trained_bundle, tiny_dataset, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # an oblique NIfTI: rotated 20 degrees about z, anisotropic voxels, shifted origin
    volume = nib.load(tiny_dataset / "test_1.nii.gz").get_fdata().astype(np.float32)
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 2.0, 3.0])
    affine[:3, 3] = [-20.0, 15.0, 7.0]
    nib.save(nib.Nifti1Image(volume, affine), inputs / "oblique.nii.gz")
    series = _ct_series(inputs / "ct_series")  # a DICOM series folder made from pydicom's CT_small.dcm
    out = tmp_path / "out"
    _, run = _infer(trained_bundle, inputs, out)
    run()
    rows = {r["input"]: r for r in _rows(out)}
    assert {r["status"] for r in rows.values()} == {"ok"}, rows
    heatmap = nib.load(out / "oblique_heatmap.nii.gz")
    assert heatmap.shape == volume.shape
    np.testing.assert_allclose(heatmap.affine, affine, atol=1e-4)
    loaded = LoadImage(image_only=True)(str(series))
    dicom_heatmap = nib.load(out / "ct_series_heatmap.nii.gz")
    assert dicom_heatmap.shape == tuple(loaded.shape)
    np.testing.assert_allclose(dicom_heatmap.affine, np.asarray(loaded.affine), atol=1e-3)


def test_bad_inputs_get_error_rows_and_the_rest_is_scored(trained_bundle, tiny_dataset, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(tiny_dataset / "test_0.nii.gz", inputs / "good.nii.gz")
    (inputs / "corrupt.nii.gz").write_bytes(b"this is not a nifti file")
    nan_volume = np.full((12, 12, 8), np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan_volume, np.eye(4)), inputs / "nans.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 8), np.float32), np.eye(4)), inputs / "empty.nii.gz")
    nib.save(nib.Nifti1Image(np.random.rand(12, 12, 8, 3).astype(np.float32), np.eye(4)), inputs / "four_d.nii.gz")
    # links that cannot be followed must not stop the batch before anything is scored
    (inputs / "loop.nii.gz").symlink_to(inputs / "loop.nii.gz")
    (inputs / "dangling.nii.gz").symlink_to(inputs / "gone.nii.gz")
    out = tmp_path / "out"
    _, run = _infer(trained_bundle, inputs, out)
    with pytest.raises(RuntimeError) as info:
        run()
    assert "6 of 7 inputs could not be scored" in _chain_text(info.value)
    rows = {r["input"].split("/")[-1]: r for r in _rows(out)}
    assert rows["good.nii.gz"]["status"] == "ok" and (out / "good_heatmap.nii.gz").is_file()
    expected = {
        "corrupt.nii.gz": "corrupt.nii.gz",
        "nans.nii.gz": "NaN",
        "empty.nii.gz": "constant",
        "four_d.nii.gz": "4D series",
        "loop.nii.gz": "symbolic link loop",
        "dangling.nii.gz": "broken symbolic link",
    }
    for name, words in expected.items():
        assert rows[name]["status"] == "error"
        assert name in rows[name]["message"] and words in rows[name]["message"], rows[name]["message"]
    assert not list(out.glob(".*")), "temporary files left behind"
    assert not list(inputs.glob("*_heatmap*")), "nothing may be written into the input folder"


def test_refuses_to_write_into_the_input_folder(trained_bundle, tiny_dataset):
    with pytest.raises(Exception) as info:
        _, run = _infer(trained_bundle, tiny_dataset, tiny_dataset)
        run()
    assert "input folders" in _chain_text(info.value)


def test_missing_model_says_train_first(tiny_dataset, tmp_path):
    with pytest.raises(Exception) as info:
        _infer(tmp_path / "empty_bundle", tiny_dataset, tmp_path / "out")
    assert "model.pt not found: train the model first" in _chain_text(info.value)


def test_cli_exit_status_reports_failures(trained_bundle, tmp_path, tiny_dataset):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(tiny_dataset / "test_0.nii.gz", inputs / "good.nii.gz")
    (inputs / "broken.nii.gz").write_bytes(b"\x00" * 10)
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        INFERENCE,
        "--bundle_root",
        str(trained_bundle),
    ]
    cmd += ["--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "out"), "--device", "cpu"]
    for key, value in TINY_INFER.items():
        cmd += [f"--{key}", json.dumps(value)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "broken.nii.gz" in proc.stdout + proc.stderr
    assert (tmp_path / "out" / "good_heatmap.nii.gz").is_file()


def test_outputs_stay_in_the_output_folder_for_inputs_outside_the_dataset(trained_bundle, tiny_dataset, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tiny_dataset / "test_0.nii.gz", outside / "scan.nii.gz")
    data = tmp_path / "data"
    data.mkdir()
    (data / "datalist.json").write_text(json.dumps({"test": [{"image": "../outside/scan.nii.gz"}]}))
    out = tmp_path / "out"
    _, run = _infer(trained_bundle, data, out)
    run()
    assert (out / "scan_heatmap.nii.gz").is_file()
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {outside / "scan.nii.gz", data / "datalist.json"}
    assert all(out in p.parents for p in written), written
    assert sorted(p.name for p in outside.iterdir()) == ["scan.nii.gz"]


def test_dicom_outputs_for_dicom_series_and_on_request_for_nifti(trained_bundle, tiny_dataset, tmp_path):
    from monai_bigan.io.dicom import read_series, volume_to_frames
    from tests.io.test_dicom import dciodvfy_report, seg_frames_by_source

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(tiny_dataset / "test_1.nii.gz", inputs / "scan.nii.gz")
    series = _ct_series(inputs / "ct_series")
    out = tmp_path / "auto"
    _, run = _infer(trained_bundle, inputs, out)
    run()
    assert {r["status"] for r in _rows(out)} == {"ok"}
    names = ("seg", "pmap", "sr")
    assert all((out / f"ct_series_{name}.dcm").is_file() for name in names)
    assert not list(out.glob("scan_*.dcm")) and not (out / "scan_series").exists()
    # the SEG's frames are the mask NIfTI sampled on the source instances
    sources = read_series(series, stop_before_pixels=True)
    mask = LoadImage(image_only=True)(str(out / "ct_series_mask.nii.gz"))
    seg = pydicom.dcmread(out / "ct_series_seg.dcm")
    expected = (volume_to_frames(mask, mask.affine, sources) > 0).astype(np.uint8)
    np.testing.assert_array_equal(seg_frames_by_source(seg, sources), expected)
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert "ct_series_sr.dcm" in (out / "records" / "ct_series.json").read_text()
    errors, _ = dciodvfy_report(out / "ct_series_sr.dcm")
    assert errors == []

    always = tmp_path / "always"
    _, run = _infer(trained_bundle, inputs, always, dicom_outputs="always")
    run()
    assert {r["status"] for r in _rows(always)} == {"ok"}
    assert all((always / f"{stem}_{name}.dcm").is_file() for stem in ("scan", "ct_series") for name in names)
    written_series = sorted((always / "scan_series").iterdir())
    assert len(written_series) == nib.load(inputs / "scan.nii.gz").shape[2]
    assert "scan_series/IM0001.dcm" in (always / "records" / "scan.json").read_text()
