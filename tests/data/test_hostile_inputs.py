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
"""
A batch folder full of hostile inputs: each is listed, becomes exactly one error row naming its path and its problem,
and the good inputs beside it still load (inference), or all of them are named at once (training's preflight).
"""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.transforms import Compose, LoadImaged
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.data import GuardedDataset, list_images, preflight_check
from monai_bigan.data.guarded import ERROR_KEY, SOURCE_KEY, item_source
from monai_bigan.transforms import CheckImaged, CheckInputd


def _dicom_series(folder: Path, count: int = 4) -> list[Path]:
    """``count`` slices of CT_small.dcm, 5 mm apart, as one series."""
    folder.mkdir(parents=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    paths = []
    for i in range(count):
        ds = template.copy()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.save_as(folder / f"IM{i:04d}")
        paths.append(folder / f"IM{i:04d}")
    return paths


def _nifti(path: Path, shape=(12, 12, 8)) -> Path:
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32), np.eye(4)), path)
    return path


class RecordingLoader(LoadImaged):
    """``LoadImaged`` that records which paths it was asked to load."""

    def __init__(self, loaded: list[str]) -> None:
        super().__init__("image", image_only=True, ensure_channel_first=True)
        self.loaded = loaded

    def __call__(self, data, reader=None):
        self.loaded.append(str(data["image"]))
        return super().__call__(data, reader)


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A folder of 2 good inputs and hostile ones; returns it with ``{hostile path: words of its error}``."""
    root = tmp_path / "batch"
    root.mkdir()
    _nifti(root / "good.nii.gz")
    _dicom_series(root / "good_series")
    hostile: dict[str, str] = {}

    os.symlink("loop.nii.gz", root / "loop.nii.gz")
    hostile["loop.nii.gz"] = "symbolic link loop"
    os.symlink("gone.nii.gz", root / "dangling.nii.gz")
    hostile["dangling.nii.gz"] = "broken symbolic link to 'gone.nii.gz'"
    (root / "folder.nii.gz").mkdir()
    hostile["folder.nii.gz"] = "named like a NIfTI file but is a folder"
    _nifti(root / "locked.nii.gz")
    hostile["locked.nii.gz"] = "cannot be read (permission denied)"
    header = nib.Nifti1Header()
    header.set_data_shape((1200, 1200, 100))  # 144 million voxels claimed by a 352-byte file
    (root / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4)
    hostile["huge.nii"] = "144,000,000 voxels is larger than the limit of 64,000,000 voxels"

    truncated = _dicom_series(root / "truncated")[2]
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    hostile["truncated"] = f"{truncated}: undecodable DICOM instance: truncated pixel data"
    gap = _dicom_series(root / "gap", 5)
    gap[2].unlink()
    hostile["gap"] = f"{gap[3]}: 1 DICOM instance(s) missing"
    duplicate = _dicom_series(root / "duplicate")
    shutil.copy(duplicate[1], root / "duplicate" / "IM0001_copy")
    hostile["duplicate"] = "IM0001_copy: duplicated DICOM instance, same SOPInstanceUID"
    uneven = _dicom_series(root / "uneven", 5)
    moved = pydicom.dcmread(uneven[3])
    moved.ImagePositionPatient[2] = float(moved.ImagePositionPatient[2]) + 2.0
    moved.save_as(uneven[3])
    hostile["uneven"] = f"{uneven[3]}: non-uniform slice spacing"

    locked, real_open = str(root / "locked.nii.gz"), builtins.open

    def open_denied(file, *args, **kwargs):  # tests run as root: chmod cannot take the permission away
        if os.fspath(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_denied)
    return root, {str(root / name): words for name, words in hostile.items()}


def test_every_hostile_input_is_one_error_row_and_the_rest_loads(batch):
    root, hostile = batch
    items = list_images(root)
    assert sorted(item["image"] for item in items) == sorted(
        [*hostile, str(root / "good.nii.gz"), str(root / "good_series")]
    )
    loaded: list[str] = []
    dataset = GuardedDataset(
        items, Compose([CheckInputd("image"), RecordingLoader(loaded), CheckImaged("image", spatial_dims=3)])
    )
    rows = [dataset[i] for i in range(len(dataset))]
    errors = {row[SOURCE_KEY]: row[ERROR_KEY] for row in rows if ERROR_KEY in row}
    assert set(errors) == set(hostile)
    for path, words in hostile.items():
        assert errors[path].startswith(path) and words in errors[path], errors[path]
        assert "\n" not in errors[path]
    assert [tuple(row["image"].shape) for row in rows if ERROR_KEY not in row] == [(1, 12, 12, 8), (1, 128, 128, 4)]
    # the huge volume, the truncated slice and the other refused inputs were never handed to the loader
    assert sorted(loaded) == [str(root / "good.nii.gz"), str(root / "good_series")]


def test_training_preflight_names_every_hostile_input(batch):
    root, hostile = batch
    transforms = [
        CheckInputd("image"),
        LoadImaged("image", image_only=True, ensure_channel_first=True),
        CheckImaged("image"),
    ]
    with pytest.raises(ValueError) as info:
        preflight_check(list_images(root), transforms, progress=False)
    message = str(info.value)
    assert message.startswith(f"{len(hostile)} of {len(hostile) + 2} input file(s) cannot be used for training")
    assert all(words in message for words in hostile.values()), message


def test_an_item_its_datalist_could_not_fetch_is_reported_not_loaded(tmp_path):
    from monai.data import MetaTensor

    def never(_):
        raise AssertionError("an input whose datalist already failed must not be loaded")

    item = {"image": str(tmp_path / "1.2.3.999"), ERROR_KEY: "series 1.2.3.999: not found on the server"}
    reported = GuardedDataset([item], transform=never)[0]
    assert reported == {ERROR_KEY: item[ERROR_KEY], SOURCE_KEY: item["image"]}
    # handlers name an item's input the same way, error item or scored image
    assert item_source(reported) == item["image"]
    assert item_source({"image": MetaTensor([0.0], meta={"filename_or_obj": "/d/a.nii.gz"})}) == "/d/a.nii.gz"
