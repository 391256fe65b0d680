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
"""DICOM series in and out, volume-to-frame sampling, and the SEG, Parametric Map and SR of a scored scan."""

from __future__ import annotations

import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation
from pydicom.data import get_testdata_file
from scipy.spatial.transform import Rotation

from monai_bigan.io.dicom import (
    CODING_SCHEME,
    RESEARCH_CAVEAT,
    anomaly_segmentation,
    heatmap_parametric_map,
    read_series,
    reorient_for_dicom,
    score_report,
    volume_to_frames,
    write_dataset,
    write_dicom_series,
)

RESULT = {
    "score": 3.25,
    "score_residual": 2.0,
    "score_discriminator": 1.25,
    "percentile": 99.5,
    "threshold": 2.5,
    "flagged": True,
}
MODEL = {"model_name": "monai_bigan BiGAN", "model_version": "0.7.0"}


def dciodvfy_report(path) -> tuple[list[str], list[str]]:
    """The error and warning lines of ``dciodvfy path``; skips (fails in CI) when dicom3tools is missing."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (dicom3tools) is not installed: CI must validate the DICOM outputs.")
        pytest.skip("dciodvfy (dicom3tools) is not installed: apt-get install dicom3tools")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def seg_frames_by_source(seg: pydicom.Dataset, sources) -> np.ndarray:
    """The SEG's segment 1 as one frame per source instance (frames it omitted are empty)."""
    frames = np.zeros((len(sources), int(seg.Rows), int(seg.Columns)), dtype=np.uint8)
    index = {str(ds.SOPInstanceUID): i for i, ds in enumerate(sources)}
    pixels = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        frames[index[str(uid)]] = frame
    return frames


def in_world_order(array, affine, axcodes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """
    ``array`` with its ``affine`` through MONAI's ``Orientation`` to ``axcodes``: two arrays of the same world geometry
    in any axis order give the same array and affine, so round trips compare in world space.
    """
    image = MetaTensor(np.asarray(array)[None], affine=np.asarray(affine, dtype=np.float64))
    oriented = Orientation(axcodes=axcodes)(image)
    return np.asarray(oriented[0]), np.asarray(oriented.affine, dtype=np.float64)


def assert_same_in_world(array, affine, expected, expected_affine, atol: float = 0.0) -> None:
    """Every voxel of ``expected`` is at the same world position with the same value (to ``atol``) in ``array``."""
    got, got_affine = in_world_order(array, affine)
    want, want_affine = in_world_order(expected, expected_affine)
    assert got.shape == want.shape
    np.testing.assert_allclose(got_affine, want_affine, atol=1e-3)
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


def oblique_affine(spacing=(0.8, 1.3, 2.5), angles=(10, -20, 30), origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.fixture
def series(tmp_path):
    """A written oblique anisotropic float series: (folder, volume, affine)."""
    volume = (np.random.default_rng(0).normal(size=(12, 10, 7)) * 100).astype(np.float32)
    affine = oblique_affine()
    folder = tmp_path / "series"
    write_dicom_series(volume, affine, folder, patient_id="P1", series_description="test series")
    return folder, volume, affine


def test_write_dicom_series_reads_back_with_monai(series):
    folder, volume, affine = series
    loaded = LoadImage(image_only=True)(str(folder))
    first = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage and first.BitsAllocated == 16
    assert tuple(loaded.shape) == volume.shape
    # float data survives to the rescale precision (half a stored step), every voxel at its world position
    atol = float(first.RescaleSlope) / 2 + 1e-4
    assert_same_in_world(loaded, loaded.affine, volume, affine, atol=atol)
    # the series is in the reoriented layout, which reads back as it was written
    expected, expected_affine = reorient_for_dicom(volume, affine)
    np.testing.assert_allclose(np.asarray(loaded), expected, atol=atol)
    np.testing.assert_allclose(np.asarray(loaded.affine), expected_affine, atol=1e-3)


def test_write_dicom_series_keeps_integers_exactly(tmp_path):
    volume = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 30
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    write_dicom_series(volume, affine, tmp_path / "s")
    loaded = LoadImage(image_only=True)(str(tmp_path / "s"))
    assert_same_in_world(loaded, loaded.affine, volume, affine)


def _permuted(affine: np.ndarray, axes: tuple[int, int, int]) -> np.ndarray:
    """``affine`` with its array axes in the order ``axes`` (a scan stored in another axis order)."""
    permuted = affine.copy()
    permuted[:3, :3] = affine[:3, list(axes)]
    return permuted


RAS_AXIAL = np.array([[0.9, 0, 0, -50.0], [0, 0.8, 0, -60.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
RAS_CORONAL = np.array([[0.9, 0, 0, -50.0], [0, 3.0, 0, -60.0], [0, 0, 0.8, 10.0], [0, 0, 0, 1]])
RAS_SAGITTAL = np.array([[3.0, 0, 0, -50.0], [0, 0.9, 0, -60.0], [0, 0, 0.8, 10.0], [0, 0, 0, 1]])
AXIAL_IOP, CORONAL_IOP, SAGITTAL_IOP = [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1]


@pytest.mark.parametrize(
    "affine, expected_iop, expected_normal",
    [
        # a NIfTI in RAS order, and the same axial scan as stored by other tools (LPS; slices head to feet)
        (RAS_AXIAL, AXIAL_IOP, [0, 0, 1]),
        (np.diag([-1.0, -1.0, 1.0, 1.0]) @ RAS_AXIAL, AXIAL_IOP, [0, 0, 1]),
        (RAS_AXIAL @ np.diag([1.0, -1.0, -1.0, 1.0]), AXIAL_IOP, [0, 0, 1]),
        # coronal and sagittal acquisitions in RAS order: their thick slices are along y and x
        (RAS_CORONAL, CORONAL_IOP, [0, 1, 0]),
        (RAS_SAGITTAL, SAGITTAL_IOP, [-1, 0, 0]),
        # the same acquisitions stored slice axis last (as dcm2niix writes them)
        (_permuted(RAS_CORONAL, (0, 2, 1)), CORONAL_IOP, [0, 1, 0]),
        (_permuted(RAS_SAGITTAL, (1, 2, 0)), SAGITTAL_IOP, [-1, 0, 0]),
    ],
    ids=["axial-ras", "axial-lps", "axial-flipped", "coronal-ras", "sagittal-ras", "coronal-xzy", "sagittal-yzx"],
)
def test_series_gets_the_orientation_a_scanner_writes(tmp_path, affine, expected_iop, expected_normal):
    volume = np.random.default_rng(3).integers(0, 1000, size=(7, 6, 5)).astype(np.int16)
    files = write_dicom_series(volume, affine, tmp_path / "s")
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for ds in datasets:
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), expected_iop, atol=1e-6)
    # instance numbers, in the order of the files, run along the slice normal (LPS)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, len(files) + 1))
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(steps / np.linalg.norm(steps, axis=1, keepdims=True), [expected_normal] * len(steps))
    # the slices are the thick axis: 3 mm apart, 0.8 and 0.9 mm pixels
    assert float(datasets[0].SliceThickness) == pytest.approx(3.0)
    assert sorted(float(v) for v in datasets[0].PixelSpacing) == pytest.approx([0.8, 0.9])
    # a permutation and flips only: every voxel keeps its world position and its value
    loaded = LoadImage(image_only=True)(str(tmp_path / "s"))
    assert_same_in_world(loaded, loaded.affine, volume, affine)


def test_oblique_series_stays_oblique_near_the_axial_orientation(series):
    folder, volume, affine = series
    first = read_series(folder, stop_before_pixels=True)[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    lps_directions = (np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]) / np.linalg.norm(affine[:3, :3], axis=0)
    # columns and rows run along two of the volume's own axes (up to sign): permuted and flipped, never resampled
    for cosines in (iop[:3], iop[3:]):
        assert np.max(np.abs(lps_directions.T @ cosines)) == pytest.approx(1.0, abs=1e-6)
    # nearest patient left and posterior, not exactly
    assert np.argmax(np.abs(iop[:3])) == 0 and iop[0] > 0 and iop[3 + 1] > 0
    assert not np.allclose(iop, AXIAL_IOP, atol=1e-2)


def test_reorient_keeps_the_third_axis_unless_another_has_clearly_thicker_voxels():
    volume = np.zeros((4, 5, 6))
    # near-isotropic voxels keep the third axis (in-plane 1.2 mm against 1 mm slices)
    assert reorient_for_dicom(volume, np.diag([1.2, 1.2, 1.0, 1.0]))[0].shape == (4, 5, 6)
    assert reorient_for_dicom(volume, np.diag([1.0, 1.2, 1.0, 1.0]))[0].shape == (4, 5, 6)
    # clearly thicker voxels along y: the slice axis (rows then run feet-wards along z)
    assert reorient_for_dicom(volume, np.diag([1.0, 1.3, 1.0, 1.0]))[0].shape == (4, 6, 5)
    # a single slice stays one slice
    assert reorient_for_dicom(volume[..., :1], np.diag([1.0, 3.0, 1.0, 1.0]))[0].shape == (4, 5, 1)
    with pytest.raises(ValueError, match="3D volume"):
        reorient_for_dicom(volume[..., 0], np.eye(4))


def test_written_series_passes_dciodvfy(series, tmp_path):
    folder, _, _ = series
    errors, _ = dciodvfy_report(sorted(folder.iterdir())[0])
    assert errors == []
    # and a reoriented (coronal) one
    files = write_dicom_series(np.ones((4, 5, 6), np.int16), RAS_CORONAL, tmp_path / "coronal")
    errors, _ = dciodvfy_report(files[0])
    assert errors == []


def test_write_dicom_series_refuses_a_used_folder_and_a_non_3d_volume(series, tmp_path):
    folder, volume, affine = series
    with pytest.raises(FileExistsError, match="not empty"):
        write_dicom_series(volume, affine, folder)
    assert len(write_dicom_series(volume, affine, folder, overwrite=True)) == volume.shape[2]
    with pytest.raises(ValueError, match="3D volume"):
        write_dicom_series(volume[..., 0], affine, tmp_path / "flat")


def test_read_series_sorts_along_the_slice_normal(series):
    folder, volume, affine = series
    files = sorted(folder.iterdir())
    # names in reverse slice order: the sort must come from the geometry, not the names
    for i, f in enumerate(files):
        f.rename(folder / f"z{len(files) - i:03d}.dcm")
    datasets = read_series(folder)
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, volume.shape[2] + 1))
    assert datasets[0].filename.endswith(".dcm")


def test_read_series_names_the_folder_on_bad_input(series, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no DICOM here")
    with pytest.raises(ValueError, match=f"{empty}: folder holds no DICOM files"):
        read_series(empty)
    folder, volume, affine = series
    write_dicom_series(volume[..., :2], affine, tmp_path / "other")
    shutil.copy(tmp_path / "other" / "IM0001.dcm", folder / "extra.dcm")
    with pytest.raises(ValueError, match=f"{folder}: folder mixes 2 DICOM series"):
        read_series(folder)


def test_volume_to_frames_is_exact_where_the_grids_coincide(series):
    folder, _, _ = series
    sources = read_series(folder, stop_before_pixels=True)
    loaded = LoadImage(image_only=True)(str(folder))
    frames = volume_to_frames(loaded, loaded.affine, sources, order=0)
    # pixel [row, column] of instance k is voxel [column, row, k] of the reader's array
    np.testing.assert_array_equal(frames, np.asarray(loaded).transpose(2, 1, 0))
    linear = volume_to_frames(loaded, loaded.affine, sources, order=1)
    np.testing.assert_allclose(linear, frames, atol=1e-4)


def test_volume_to_frames_does_not_depend_on_the_volume_axes(series):
    folder, volume, affine = series
    sources = read_series(folder, stop_before_pixels=True)
    loaded = LoadImage(image_only=True)(str(folder))
    reference = volume_to_frames(loaded, loaded.affine, sources)
    # the same image stored with flipped and permuted axes (another reader's convention) gives the same frames
    image = nib.Nifti1Image(np.asarray(loaded), np.asarray(loaded.affine))
    other = image.as_reoriented(np.array([[2, -1], [0, 1], [1, -1]]))
    np.testing.assert_array_equal(volume_to_frames(np.asarray(other.dataobj), other.affine, sources), reference)


def test_volume_to_frames_samples_another_grid_in_world_coordinates(series):
    folder, volume, affine = series
    sources = read_series(folder, stop_before_pixels=True)
    # a volume whose value is its world x coordinate (RAS) gives, at each pixel, the pixel's x
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = [-40.0, -60.0, -40.0]
    grid = np.indices((60, 60, 60)).astype(np.float64)
    world_x = grid[0] * 2.0 - 40.0
    frames = volume_to_frames(world_x, coarse, sources, order=1)
    position = np.asarray(sources[3].ImagePositionPatient, dtype=float)
    assert frames[3, 0, 0] == pytest.approx(-position[0], abs=1e-6)


@pytest.fixture
def objects(series):
    folder, volume, _ = series
    sources = read_series(folder, stop_before_pixels=True)
    loaded = LoadImage(image_only=True)(str(folder))
    heatmap = volume_to_frames(loaded, loaded.affine, sources, order=1) / 100
    mask = heatmap > 1.0
    seg = anomaly_segmentation(mask, sources, **MODEL)
    pmap = heatmap_parametric_map(heatmap, sources, heatmap_label="normalized residual (healthy z)", **MODEL)
    report = score_report(RESULT, sources, segmentation=seg, **MODEL)
    return sources, mask, heatmap, seg, pmap, report


def test_segmentation_is_valid_and_holds_the_mask(objects, tmp_path):
    sources, mask, _, seg, _, _ = objects
    path = write_dataset(seg, tmp_path / "seg.dcm")
    errors, _ = dciodvfy_report(path)
    assert errors == []
    read = pydicom.dcmread(path)
    assert read.SegmentationType == "BINARY" and read.StudyInstanceUID == sources[0].StudyInstanceUID
    segment = read.SegmentSequence[0]
    assert segment.SegmentLabel == "anomaly" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "monai_bigan"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "0.7.0"
    assert segment.RecommendedDisplayCIELabValue[1] > 50000  # a* far to the red side
    assert read.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert RESEARCH_CAVEAT in read.SeriesDescription
    np.testing.assert_array_equal(seg_frames_by_source(read, sources), mask.astype(np.uint8))


def test_empty_mask_gives_a_valid_segmentation(objects, tmp_path):
    sources, mask, _, _, _, _ = objects
    seg = anomaly_segmentation(np.zeros_like(mask), sources, **MODEL)
    path = write_dataset(seg, tmp_path / "empty_seg.dcm")
    errors, _ = dciodvfy_report(path)
    assert errors == []
    assert int(pydicom.dcmread(path).NumberOfFrames) == len(sources)


def test_parametric_map_is_valid_and_says_what_its_values_mean(objects, tmp_path):
    sources, _, heatmap, _, pmap, _ = objects
    path = write_dataset(pmap, tmp_path / "pmap.dcm")
    errors, _ = dciodvfy_report(path)
    assert errors == []
    read = pydicom.dcmread(path)
    mapping = read.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTExplanation == "normalized residual (healthy z)"
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert read.SeriesNumber != 901 and read.StudyInstanceUID == sources[0].StudyInstanceUID
    window = read.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert float(window.WindowWidth) == pytest.approx(float(heatmap.max() - heatmap.min()), rel=1e-4)
    np.testing.assert_allclose(read.pixel_array.reshape(heatmap.shape), heatmap, rtol=1e-6)


def _content_items(item):
    for child in getattr(item, "ContentSequence", []):
        yield child
        yield from _content_items(child)


@pytest.mark.parametrize("with_segmentation", [True, False])
def test_score_report_is_valid_and_holds_the_scores(objects, tmp_path, with_segmentation):
    sources, _, _, seg, _, report = objects
    if not with_segmentation:
        report = score_report({"score": 3.25, "flagged": False}, sources, **MODEL)
    path = write_dataset(report, tmp_path / "sr.dcm")
    errors, _ = dciodvfy_report(path)
    assert errors == []
    read = pydicom.dcmread(path)
    assert read.VerificationFlag == "UNVERIFIED" and read.CompletionFlag == "COMPLETE"
    assert RESEARCH_CAVEAT in read.SeriesDescription and read.StudyInstanceUID == sources[0].StudyInstanceUID
    values = {
        item.ConceptNameCodeSequence[0].CodeValue: float(item.MeasuredValueSequence[0].NumericValue)
        for item in _content_items(read)
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == CODING_SCHEME
    }
    flags = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in _content_items(read)
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "flagged"
    ]
    segments = [
        item
        for item in _content_items(read)
        if item.ValueType == "IMAGE" and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]
    ]
    if with_segmentation:
        assert values == {"score": 3.25, "residual": 2.0, "discrim": 1.25, "pctl": 99.5, "threshold": 2.5}
        assert flags == ["Yes"] and segments[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    else:
        assert values == {"score": 3.25} and flags == ["No"] and segments == []
    texts = [item.TextValue for item in _content_items(read) if item.ValueType == "TEXT"]
    assert any(RESEARCH_CAVEAT in text for text in texts)
    assert len({read.SeriesNumber, seg.SeriesNumber, int(sources[0].SeriesNumber)}) == 3


def test_score_report_needs_a_score(objects):
    sources = objects[0]
    with pytest.raises(ValueError, match="no 'score'"):
        score_report({"percentile": 50.0}, sources, **MODEL)


def test_objects_on_pydicom_test_data_are_valid(tmp_path):
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    heatmap = source.pixel_array[None].astype(np.float32) / 1000
    seg = anomaly_segmentation(heatmap > heatmap.mean(), [source], **MODEL)
    pmap = heatmap_parametric_map(heatmap, [source], heatmap_label="residual |x - G(E(x))|", **MODEL)
    report = score_report(RESULT, [source], segmentation=seg, **MODEL)
    for name, dataset in (("seg", seg), ("pmap", pmap), ("sr", report)):
        errors, _ = dciodvfy_report(write_dataset(dataset, tmp_path / f"{name}.dcm"))
        assert errors == [], name
