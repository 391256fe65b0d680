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
"""Tests of monai_bigan.data.datalist: the datalist.json contract and folder listing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.data import DATALIST_FILENAME, list_images, load_datalist


def _write_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4)), path)
    return path


def _write_dicom_series(folder: Path, count: int = 3, suffix: str = "") -> Path:
    """A small DICOM series: copies of CT_small.dcm with distinct instance numbers, positions and UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    for i in range(count):
        ds = source.copy()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        # pydicom 3 says enforce_file_format; pydicom 2 (the MONAI Label extra) says write_like_original=False
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(folder / f"IM{i:04d}{suffix}", enforce_file_format=True)
        else:
            ds.save_as(folder / f"IM{i:04d}{suffix}", write_like_original=False)
    return folder


def _write_datalist(folder: Path, content: object | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    path = folder / DATALIST_FILENAME
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A valid data set with relative and absolute paths, a DICOM series and a null mask."""
    root = tmp_path / "ds"
    _write_nifti(root / "imagesTr" / "a.nii.gz")
    _write_nifti(root / "imagesVal" / "b.nii.gz")
    _write_nifti(root / "masks" / "b.nii.gz")
    outside = _write_nifti(tmp_path / "elsewhere" / "c.nii.gz")
    _write_dicom_series(root / "dicom" / "series1")
    _write_datalist(
        root,
        {
            "training": [{"image": "imagesTr/a.nii.gz"}, {"image": "dicom/series1", "site": "A"}],
            "validation": [{"image": "imagesVal/b.nii.gz", "label": 1, "mask": "masks/b.nii.gz"}],
            "test": [{"image": str(outside), "label": 0.0, "mask": None}],
        },
    )
    return root


def test_load_datalist_resolves_paths_and_labels(dataset: Path) -> None:
    train = load_datalist(dataset, "training")
    assert [e["image"] for e in train] == [str(dataset / "imagesTr" / "a.nii.gz"), str(dataset / "dicom" / "series1")]
    assert all(os.path.isabs(e["image"]) for e in train)
    assert train[1]["site"] == "A"  # other keys are kept

    val = load_datalist(str(dataset), "validation")
    assert val == [
        {"image": str(dataset / "imagesVal" / "b.nii.gz"), "label": 1, "mask": str(dataset / "masks" / "b.nii.gz")}
    ]
    assert type(val[0]["label"]) is int

    test = load_datalist(dataset, "test")
    assert test[0]["image"] == str(dataset.parent / "elsewhere" / "c.nii.gz")  # absolute path kept
    assert test[0]["label"] == 0 and type(test[0]["label"]) is int
    assert "mask" not in test[0]  # a null path is dropped


def test_load_datalist_does_not_modify_the_file(dataset: Path) -> None:
    before = (dataset / DATALIST_FILENAME).read_text()
    entries = load_datalist(dataset, "validation")
    entries[0]["label"] = 0
    assert (dataset / DATALIST_FILENAME).read_text() == before
    assert load_datalist(dataset, "validation")[0]["label"] == 1


@pytest.mark.parametrize(
    "content", [{"training": [{"image": "a.nii.gz"}]}, {"training": [{"image": "a.nii.gz"}], "test": []}]
)
def test_optional_split_gives_empty_list(tmp_path: Path, content: dict) -> None:
    _write_nifti(tmp_path / "a.nii.gz")
    _write_datalist(tmp_path, content)
    assert load_datalist(tmp_path, "test", required=False) == []
    assert len(load_datalist(tmp_path, "training", required=False)) == 1


def test_missing_dataset_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        load_datalist(tmp_path / "no_such_folder", "training")


def test_missing_datalist_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=DATALIST_FILENAME):
        load_datalist(tmp_path, "training")


@pytest.mark.parametrize(
    "content, split, fragment",
    [
        ('{"training": [', "training", "not valid JSON: .* at line 1 column"),
        ("[]", "training", "top level must be a JSON object"),
        ({"validation": [{"image": "a.nii.gz", "label": 0}]}, "training", "has no 'training' entries"),
        ({"training": []}, "training", "has empty 'training' entries"),
        ({"training": {"image": "a.nii.gz"}}, "training", "'training' must be a list"),
        ({"training": ["a.nii.gz"]}, "training", "entry 0 of 'training' must be an object"),
        (
            {"training": [{"image": "a.nii.gz"}, {"mask": "a.nii.gz"}]},
            "training",
            "entry 1 of 'training' has no 'image'",
        ),
        ({"test": [{"image": "a.nii.gz", "label": 2}]}, "test", "label 2; a label must be 0"),
        ({"test": [{"image": "a.nii.gz", "label": "1"}]}, "test", "label '1'; a label must be 0"),
        ({"test": [{"image": "a.nii.gz", "label": 0.5}]}, "test", "label 0.5"),
        ({"test": [{"image": 3}]}, "test", "'image' must be a non-empty path string"),
    ],
)
def test_invalid_datalist(tmp_path: Path, content: object, split: str, fragment: str) -> None:
    _write_nifti(tmp_path / "a.nii.gz")
    _write_datalist(tmp_path, content)
    with pytest.raises(ValueError, match=fragment) as err:
        load_datalist(tmp_path, split)
    assert DATALIST_FILENAME in str(err.value)


def test_missing_referenced_files_are_all_reported(tmp_path: Path) -> None:
    _write_nifti(tmp_path / "ok.nii.gz")
    _write_datalist(
        tmp_path,
        {
            "validation": [
                {"image": "ok.nii.gz", "label": 0},
                {"image": "gone.nii.gz", "label": 1, "mask": "masks/gone_mask.nii.gz"},
                {"image": "ok.nii.gz", "label": 0, "brainmask": "/nonexistent/brain.nii.gz"},
            ]
        },
    )
    with pytest.raises(ValueError) as err:
        load_datalist(tmp_path, "validation")
    message = str(err.value)
    assert DATALIST_FILENAME in message and "3 file(s)" in message
    assert f"entry 1 'image': {tmp_path / 'gone.nii.gz'}" in message
    assert f"entry 1 'mask': {tmp_path / 'masks' / 'gone_mask.nii.gz'}" in message
    assert "entry 2 'brainmask': /nonexistent/brain.nii.gz" in message
    assert "entry 0" not in message


def test_list_images_finds_nifti_png_and_dicom_series(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    _write_nifti(root / "b.nii.gz")
    _write_nifti(root / "sub" / "a.nii")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "c.PNG")
    _write_dicom_series(root / "patient1" / "series_a", suffix=".dcm")
    _write_dicom_series(root / "patient1" / "series_b")  # DICOM files without extension
    (root / "notes.txt").write_text("not an image")
    (root / "patient1" / "fake.dcm").write_bytes(b"not a dicom file")  # a .dcm name alone is not enough
    _write_nifti(root / ".hidden" / "x.nii.gz")

    found = list_images(root)
    expected = [
        root / "b.nii.gz",
        root / "c.PNG",
        root / "patient1" / "series_a",
        root / "patient1" / "series_b",
        root / "sub" / "a.nii",
    ]
    assert found == [{"image": str(p)} for p in sorted(expected)]


def test_list_images_folder_that_is_a_series(tmp_path: Path) -> None:
    series = _write_dicom_series(tmp_path / "series")
    assert list_images(series) == [{"image": str(series)}]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.nii.gz").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file.nii.gz"):
        list_images(tmp_path / "file.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to score")
    with pytest.raises(ValueError, match="No scorable image"):
        list_images(empty)


def test_list_images_keeps_what_cannot_be_read(tmp_path: Path) -> None:
    """Broken links, link loops and folders named like images are listed, so that each becomes one error row."""
    root = tmp_path / "scans"
    good = _write_nifti(root / "good.nii.gz")
    os.symlink("gone.nii.gz", root / "dangling.nii.gz")
    os.symlink("loop.nii.gz", root / "loop.nii.gz")
    os.symlink("IM0001", root / "IM0001")  # a looping link without suffix may be a DICOM file
    (root / "folder.nii.gz").mkdir()
    series = _write_dicom_series(root / "series")
    os.symlink("gone", series / "IM9999")  # reported by the series check, not listed on its own
    found = [item["image"] for item in list_images(root)]
    expected = ["IM0001", "dangling.nii.gz", "folder.nii.gz", "good.nii.gz", "loop.nii.gz", "series"]
    assert found == [str(root / name) for name in expected] and str(good) in found


def test_list_images_keeps_unreadable_folders_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root, where chmod takes no permission away: os.scandir and open refuse instead
    root = tmp_path / "scans"
    _write_nifti(root / "good.nii.gz")
    _write_nifti(root / "locked" / "hidden_scan.nii.gz")
    (root / "other").mkdir()
    (root / "other" / "IM0001").write_bytes(b"unknown")
    locked, unreadable = str(root / "locked"), str(root / "other" / "IM0001")
    real_scandir, real_open = os.scandir, open

    def scandir(path=".", *args):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path, *args)

    def open_denied(file, *args, **kwargs):
        if os.fspath(file) == unreadable:
            raise PermissionError(13, "Permission denied", unreadable)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr("builtins.open", open_denied)
    assert [item["image"] for item in list_images(root)] == [str(root / "good.nii.gz"), locked, unreadable]


def test_list_images_follows_folder_links_once(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    series = _write_dicom_series(tmp_path / "store" / "series")
    _write_nifti(root / "a.nii.gz")
    os.symlink(series, root / "linked_series")  # a folder link: listed, where it was silently skipped
    os.symlink(root / "sub", root / "alias")
    _write_nifti(root / "sub" / "b.nii.gz")
    os.symlink("..", root / "sub" / "up")  # a loop: walked no more
    os.symlink(tmp_path, root / "parent")  # above the root: never walked
    found = [item["image"] for item in list_images(root)]
    assert found == [str(root / "a.nii.gz"), str(root / "linked_series"), str(root / "sub" / "b.nii.gz")]
