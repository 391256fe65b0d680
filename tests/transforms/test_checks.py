from __future__ import annotations

import builtins
import copy
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.transforms import DEFAULT_MAX_INPUT_VOXELS, CheckImaged, CheckInputd, InvalidImageError


def _series(folder, n, series_uid=None, spacing=5.0):
    """``n`` copies of CT_small.dcm (128 x 128) as one series, ``spacing`` mm apart, named ``<uid>_<i>.dcm``."""
    folder.mkdir(exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = series_uid or generate_uid()
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    for i in range(n):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [x, y, z + spacing * i]
        ds.save_as(folder / f"{uid[-6:]}_{i}.dcm")
    return folder


def _slices(folder):
    return sorted(folder.glob("*.dcm"))


def _error(path, **kwargs) -> str:
    with pytest.raises(InvalidImageError) as info:
        CheckInputd("image", **kwargs)({"image": str(path)})
    return str(info.value)


def test_check_input_paths(tmp_path):
    with pytest.raises(InvalidImageError, match="missing.nii.gz: file or folder not found"):
        CheckInputd("image")({"image": str(tmp_path / "missing.nii.gz")})
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty.nii.gz: empty file"):
        CheckInputd("image")({"image": str(tmp_path / "empty.nii.gz")})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(InvalidImageError, match="notes: folder holds no DICOM files"):
        CheckInputd("image")({"image": str(tmp_path / "notes")})
    good = _series(tmp_path / "one_series", 3)
    assert CheckInputd("image")({"image": str(good)})["image"] == str(good)
    mixed = _series(tmp_path / "mixed", 2)
    _series(mixed, 3)
    with pytest.raises(InvalidImageError, match="mixed: folder mixes 2 DICOM series"):
        CheckInputd("image")({"image": str(mixed)})


def test_links_special_files_and_folders_named_like_images(tmp_path):
    os.symlink("gone.nii.gz", tmp_path / "dangling.nii.gz")
    assert _error(tmp_path / "dangling.nii.gz") == (
        f"{tmp_path / 'dangling.nii.gz'}: broken symbolic link to 'gone.nii.gz', which does not exist."
    )
    os.symlink("loop.nii.gz", tmp_path / "loop.nii.gz")
    assert _error(tmp_path / "loop.nii.gz") == f"{tmp_path / 'loop.nii.gz'}: symbolic link loop."
    (tmp_path / "scan.nii.gz").mkdir()
    assert "scan.nii.gz: folder holds no DICOM files (it is named like a NIfTI file but is a folder)" in _error(
        tmp_path / "scan.nii.gz"
    )
    os.mkfifo(tmp_path / "pipe.nii.gz")  # reading it would block forever
    assert "pipe.nii.gz: not a regular file or folder" in _error(tmp_path / "pipe.nii.gz")


def test_unreadable_file_is_named_with_the_problem(tmp_path, monkeypatch):
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(4, 4, 4).astype(np.float32), np.eye(4)), scan)
    real_open = builtins.open

    def open_denied(file, *args, **kwargs):  # tests run as root: chmod cannot take the permission away
        if os.fspath(file) == str(scan):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_denied)
    assert _error(scan) == f"{scan}: cannot be read (permission denied)."


def test_dicom_series_instance_problems_name_the_instance_file(tmp_path):
    missing = _series(tmp_path / "missing", 5)
    gap = _slices(missing)
    gap[2].unlink()
    message = _error(missing)
    assert message.startswith(f"{gap[3]}: 1 DICOM instance(s) missing before this file"), message
    assert "10 mm from" in message and "5 mm apart" in message

    copied = _series(tmp_path / "copied", 3)
    shutil.copy(_slices(copied)[1], copied / "zz_copy.dcm")
    message = _error(copied)
    assert message.startswith(f"{copied / 'zz_copy.dcm'}: duplicated DICOM instance, same SOPInstanceUID")
    assert str(_slices(copied)[1]) in message

    same_position = _series(tmp_path / "same_position", 3)
    twin = pydicom.dcmread(_slices(same_position)[1])
    twin.SOPInstanceUID = generate_uid()
    twin.save_as(same_position / "zz_twin.dcm")
    message = _error(same_position)
    assert "zz_twin.dcm" in message and "duplicated DICOM instance, same slice position" in message

    uneven = _series(tmp_path / "uneven", 5)
    moved = pydicom.dcmread(_slices(uneven)[2])
    moved.ImagePositionPatient[2] = float(moved.ImagePositionPatient[2]) + 1.5
    moved.save_as(_slices(uneven)[2])
    message = _error(uneven)
    assert message.startswith(f"{_slices(uneven)[2]}: non-uniform slice spacing"), message
    assert "6.5 mm from" in message and "tolerance 5%" in message
    # within the tolerance, and with a custom tolerance, the same series passes
    CheckInputd("image", spacing_tolerance=0.4)({"image": str(uneven)})


def test_truncated_dicom_instance_is_an_error_not_a_missing_slice(tmp_path):
    series = _series(tmp_path / "series", 4)
    victim = _slices(series)[2]
    victim.write_bytes(victim.read_bytes()[:-1000])
    message = _error(series)
    assert message.startswith(f"{victim}: undecodable DICOM instance: truncated pixel data (")
    assert "of 32,768 bytes); the file is incomplete or damaged." in message
    # a single DICOM file is checked the same way
    assert _error(victim).startswith(f"{victim}: undecodable DICOM instance")


def test_unreadable_instance_of_a_series(tmp_path):
    series = _series(tmp_path / "series", 3)
    os.symlink("gone.dcm", series / "zz_link.dcm")
    message = _error(series)
    assert message == (
        f"{series / 'zz_link.dcm'}: cannot be read (broken symbolic link to 'gone.dcm', which does not exist); a slice"
        f" of the DICOM series in {series} may be missing."
    )


def test_huge_inputs_are_refused_from_the_header_without_loading(tmp_path, monkeypatch):
    # a NIfTI whose header claims 144 million voxels (the tester's 3.7 GB volume) that the file does not hold
    header = nib.Nifti1Header()
    header.set_data_shape((1200, 1200, 100))
    header.set_data_dtype(np.float32)
    huge = tmp_path / "huge.nii"
    huge.write_bytes(header.binaryblock + b"\0" * 4)
    monkeypatch.setattr(
        nib.arrayproxy.ArrayProxy, "__array__", lambda *a, **k: pytest.fail("the data must not be read")
    )
    message = _error(huge)
    assert message == (
        f"{huge}: image of 1200 x 1200 x 100 = 144,000,000 voxels is larger than the limit of "
        f"{DEFAULT_MAX_INPUT_VOXELS:,} voxels; if this is the right file, raise the limit with the bundle key "
        "max_input_voxels (e.g. --max_input_voxels 144000000)."
    )

    png = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(png)
    assert "wide.png: image of 30 x 20 = 600 voxels is larger than the limit of 500 voxels" in _error(
        png, max_voxels=500
    )
    series = _series(tmp_path / "series", 3)
    assert f"{series}: image of 128 x 128 x 3 = 49,152 voxels" in _error(series, max_voxels=40000)
    CheckInputd("image", max_voxels=None)({"image": str(series)})
    with pytest.raises(ValueError, match="max_voxels must be a positive number"):
        CheckInputd("image", max_voxels=0)


def test_unreadable_nifti_header(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    assert _error(bad).startswith(f"{bad}: not a readable NIfTI file")


def test_check_image_spacing_and_size_limits():
    affine = np.diag([1e-4, 1.0, 1.0, 1.0])
    img = MetaTensor(torch.rand(1, 8, 8, 8), affine=torch.as_tensor(affine), meta={"filename_or_obj": "tiny_mm.nii"})
    with pytest.raises(InvalidImageError, match="tiny_mm.nii: voxel spacing"):
        CheckImaged("image")({"image": img})
    img = MetaTensor(torch.rand(1, 8, 8, 8), meta={"filename_or_obj": "huge.nii"})
    with pytest.raises(InvalidImageError, match="huge.nii: image has 512 voxels"):
        CheckImaged("image", max_voxels=100)({"image": img})
    ok = MetaTensor(torch.rand(1, 8, 8, 8), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    assert CheckImaged("image")({"image": ok})["image"] is ok
