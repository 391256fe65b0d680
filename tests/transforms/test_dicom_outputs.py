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
"""SaveDicomResultsd: the SEG, Parametric Map and SR of a scored scan, for DICOM series and (on request) NIfTI input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monai_bigan.io.dicom import read_series, write_dicom_series
from monai_bigan.transforms import SaveDicomResultsd
from tests.io.test_dicom import (
    CORONAL_IOP,
    RAS_CORONAL,
    assert_same_in_world,
    dciodvfy_report,
    in_world_order,
    oblique_affine,
    seg_frames_by_source,
)

SCORES = {"score": 3.0, "score_residual": 2.0, "score_discriminator": 1.0, "percentile": 97.0, "threshold": 2.5}


class Outputs:
    """The naming part of InferenceBatch: ``<out>/<stem>_<postfix><extension>``, recorded."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.given = folder, []

    def output_path(self, source, postfix, extension):
        path = self.folder / f"{Path(str(source)).name.split('.')[0]}_{postfix}{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.given.append(path)
        return path


def _results(source: str, volume: np.ndarray, affine: np.ndarray) -> dict:
    """The post-processing outputs of a scan in its own geometry (as after Invertd)."""
    heatmap = (volume - volume.mean()) / volume.std()
    meta = {"filename_or_obj": source}
    return {
        "image": MetaTensor(np.zeros((1, 2, 2, 2), np.float32), meta=meta),
        "pred_heatmap": MetaTensor(heatmap[None].astype(np.float32), affine=affine, meta=meta),
        "pred_mask": MetaTensor((heatmap > 1.0)[None].astype(np.float32), affine=affine, meta=meta),
        "flagged": True,
        **SCORES,
    }


def frames_of_the_series(volume: np.ndarray, affine: np.ndarray, series: Path) -> np.ndarray:
    """
    ``volume`` as one frame per instance of the series in ``series``, through world space alone (no sampling): the
    series as MONAI reads it has pixel [row, column] of instance k at [column, row, k].
    """
    loaded = LoadImage(image_only=True)(str(series))
    codes = "".join(nib.aff2axcodes(np.asarray(loaded.affine)))
    ordered, ordered_affine = in_world_order(volume, affine, codes)
    np.testing.assert_allclose(ordered_affine, np.asarray(loaded.affine), atol=1e-3)
    return ordered.transpose(2, 1, 0)


@pytest.fixture
def dicom_input(tmp_path):
    volume = (np.random.default_rng(1).normal(size=(10, 9, 6)) * 50 + 100).astype(np.float32)
    folder = tmp_path / "in" / "case_7"
    write_dicom_series(volume, oblique_affine(), folder)
    loaded = LoadImage(image_only=True)(str(folder))  # the input as the bundle reads it
    return folder, np.asarray(loaded), np.asarray(loaded.affine)


@pytest.fixture
def nifti_input(tmp_path):
    volume = (np.random.default_rng(2).normal(size=(8, 7, 5)) * 50).astype(np.float32)
    affine = oblique_affine(spacing=(1.5, 1.0, 2.0), angles=(0, 0, 25))
    path = tmp_path / "in" / "scan.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path, volume, affine


def test_dicom_series_input_gets_seg_pmap_and_sr(dicom_input, tmp_path):
    folder, volume, affine = dicom_input
    outputs = Outputs(tmp_path / "out")
    data = _results(str(folder), volume, affine)
    d = SaveDicomResultsd(outputs, heatmap_label="normalized residual (healthy z)", model_version="9.9")(data)
    names = [Path(p).name for p in d["dicom_outputs"]]
    assert names == ["case_7_seg.dcm", "case_7_pmap.dcm", "case_7_sr.dcm"]
    assert [Path(p) for p in d["dicom_outputs"]] == outputs.given
    sources = read_series(folder, stop_before_pixels=True)
    seg = pydicom.dcmread(d["dicom_outputs"][0])
    expected = np.asarray(data["pred_mask"][0]).transpose(2, 1, 0).astype(np.uint8)
    np.testing.assert_array_equal(seg_frames_by_source(seg, sources), expected)
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "9.9"
    pmap = pydicom.dcmread(d["dicom_outputs"][1])
    heatmap = np.asarray(data["pred_heatmap"][0]).transpose(2, 1, 0)
    np.testing.assert_allclose(pmap.pixel_array.reshape(heatmap.shape), heatmap, atol=1e-5)
    objects = [pydicom.dcmread(p) for p in d["dicom_outputs"]]
    assert {ds.StudyInstanceUID for ds in objects} == {sources[0].StudyInstanceUID}
    assert len({ds.SeriesNumber for ds in objects}) == 3 and len({ds.SeriesDescription for ds in objects}) == 3
    for path in d["dicom_outputs"]:
        errors, _ = dciodvfy_report(path)
        assert errors == [], path


def test_nifti_input_gets_nothing_in_auto_and_never(nifti_input, tmp_path):
    path, volume, affine = nifti_input
    for mode in ("auto", "never", False):
        outputs = Outputs(tmp_path / "out")
        d = SaveDicomResultsd(outputs, mode=mode)(_results(str(path), volume, affine))
        assert d["dicom_outputs"] == [] and outputs.given == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["always", True, "true"])
def test_nifti_input_is_written_as_a_series_in_always(nifti_input, tmp_path, mode):
    path, volume, affine = nifti_input
    outputs = Outputs(tmp_path / "out")
    d = SaveDicomResultsd(outputs, mode=mode)(_results(str(path), volume, affine))
    written = [Path(p) for p in d["dicom_outputs"]]
    series = [p for p in written if p.parent.name == "scan_series"]
    assert [p.name for p in series] == [f"IM{k:04d}.dcm" for k in range(1, volume.shape[2] + 1)]
    assert [p.name for p in written[len(series) :]] == ["scan_seg.dcm", "scan_pmap.dcm", "scan_sr.dcm"]
    assert written == outputs.given  # every file is recorded for the input
    # the series is the input in world space, its SEG the mask
    loaded = LoadImage(image_only=True)(str(series[0].parent))
    assert_same_in_world(loaded, loaded.affine, volume, affine, atol=1e-2)
    sources = read_series(series[0].parent, stop_before_pixels=True)
    seg = pydicom.dcmread(written[-3])
    mask = np.asarray(_results(str(path), volume, affine)["pred_mask"][0]) > 0
    expected = frames_of_the_series(mask.astype(np.uint8), affine, series[0].parent)
    np.testing.assert_array_equal(seg_frames_by_source(seg, sources), expected)
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID


def test_coronal_nifti_is_written_as_a_coronal_series_whose_seg_matches_the_mask(tmp_path):
    # a coronal acquisition in RAS order: thick slices along y, the array's second axis
    volume = (np.random.default_rng(4).normal(size=(8, 5, 9)) * 50).astype(np.float32)
    path = tmp_path / "in" / "coronal.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(volume, RAS_CORONAL), path)
    outputs = Outputs(tmp_path / "out")
    data = _results(str(path), volume, RAS_CORONAL)
    d = SaveDicomResultsd(outputs, mode="always")(data)
    written = [Path(p) for p in d["dicom_outputs"]]
    assert written == outputs.given  # the instances along y are the ones recorded
    folder = tmp_path / "out" / "coronal_series"
    sources = read_series(folder, stop_before_pixels=True)
    assert len(sources) == volume.shape[1] and written[: len(sources)] == sorted(folder.iterdir())
    np.testing.assert_allclose(np.asarray(sources[0].ImageOrientationPatient, dtype=float), CORONAL_IOP, atol=1e-6)
    seg = pydicom.dcmread(written[len(sources)])
    mask = (np.asarray(data["pred_mask"][0]) > 0).astype(np.uint8)
    assert mask.any()
    np.testing.assert_array_equal(seg_frames_by_source(seg, sources), frames_of_the_series(mask, RAS_CORONAL, folder))
    pmap = pydicom.dcmread(written[len(sources) + 1])
    heatmap = frames_of_the_series(np.asarray(data["pred_heatmap"][0]), RAS_CORONAL, folder)
    np.testing.assert_allclose(pmap.pixel_array.reshape(heatmap.shape), heatmap, atol=1e-5)
    for dataset in (written[0], *written[len(sources) :]):
        errors, _ = dciodvfy_report(dataset)
        assert errors == [], dataset


def test_errors_name_the_input(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    data = _results(str(broken), np.ones((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=f"{broken}: DICOM outputs could not be written"):
        SaveDicomResultsd(Outputs(tmp_path / "out"), mode="always")(data)
    with pytest.raises(ValueError, match="dicom_outputs must be one of"):
        SaveDicomResultsd(Outputs(tmp_path / "out"), mode="sometimes")
