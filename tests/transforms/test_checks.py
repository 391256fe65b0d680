from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.transforms import CheckImaged, CheckInputd, InvalidImageError


def _series(folder, n, series_uid=None):
    folder.mkdir(exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = series_uid or generate_uid()
    for i in range(n):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"{uid[-6:]}_{i}.dcm")
    return folder


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
