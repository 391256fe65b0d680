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
"""Tests of monai_bigan.data.demo: the synthetic brain MRI demo data set."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_bigan.data import (
    DATALIST_FILENAME,
    DEMO_INFO_FILENAME,
    demo,
    ensure_demo_data,
    generate_demo_data,
    load_datalist,
)

SPLITS = ("training", "validation", "test")
# tiny data sets at 4 mm keep the tests fast; one data set at the default 2 mm checks the real geometry
SMALL = {"num_training": 1, "num_validation": 2, "num_test": 0, "spacing": 4.0, "progress": False}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = generate_demo_data(
        tmp_path_factory.mktemp("demo") / "data", seed=0, num_training=2, num_validation=2, num_test=2, progress=False
    )
    assert path.name == DATALIST_FILENAME and path.is_file()
    return path.parent


def _load(path: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img


def _hash_arrays(folder: Path) -> dict[str, str]:
    """sha256 of the voxel arrays (not of the .gz bytes, which hold a time stamp) of every NIfTI file."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(np.ascontiguousarray(nib.load(p).dataobj).tobytes()).hexdigest()
        for p in sorted(folder.rglob("*.nii.gz"))
    }


def test_datalist_is_valid_for_all_splits(demo_dir: Path) -> None:
    entries = {split: load_datalist(demo_dir, split) for split in SPLITS}
    assert {split: len(e) for split, e in entries.items()} == {"training": 2, "validation": 2, "test": 2}
    assert all(set(e) == {"image", "brainmask"} for e in entries["training"])
    for split in ("validation", "test"):
        assert all(set(e) == {"image", "label", "mask", "brainmask"} for e in entries[split])
        # anomaly_fraction=0.5 of 2 subjects: exactly one anomalous subject per split
        assert sorted(e["label"] for e in entries[split]) == [0, 1]
    # paths in the file are relative to the folder
    raw = json.loads((demo_dir / DATALIST_FILENAME).read_text())
    assert not any(Path(e[k]).is_absolute() for split in SPLITS for e in raw[split] for k in ("image", "brainmask"))
    info = json.loads((demo_dir / DEMO_INFO_FILENAME).read_text())
    assert info["format_version"] == demo.DEMO_FORMAT_VERSION
    assert info["parameters"] == {
        "seed": 0,
        "num_training": 2,
        "num_validation": 2,
        "num_test": 2,
        "anomaly_fraction": 0.5,
        "spacing": 2.0,
    }


def test_images_geometry_and_values(demo_dir: Path) -> None:
    expected_affine = np.array([[2, 0, 0, -98], [0, 2, 0, -134], [0, 0, 2, -72], [0, 0, 0, 1]], dtype=float)
    for split in SPLITS:
        for entry in load_datalist(demo_dir, split):
            image, img = _load(entry["image"])
            brain, brain_img = _load(entry["brainmask"])
            assert image.shape == (99, 117, 95) and image.dtype == np.float32
            assert img.get_data_dtype() == np.float32
            np.testing.assert_allclose(img.affine, expected_affine, atol=1e-5)
            np.testing.assert_allclose(brain_img.affine, expected_affine, atol=1e-5)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            assert np.isfinite(image).all() and image.min() >= 0.0
            assert brain.dtype == np.uint8 and set(np.unique(brain)) == {0, 1}
            # a plausible adult brain volume (liters) and a skull-stripped image
            assert 1.3 < brain.sum() * 8e-6 < 2.3
            assert not image[brain == 0].any()
            # white matter near 0.87 times a random scale in [0.85, 1.15], about 1 on average
            assert 0.6 < np.percentile(image[brain > 0], 90) < 1.3


def test_lesion_masks_match_labels(demo_dir: Path) -> None:
    for split in ("validation", "test"):
        for entry in load_datalist(demo_dir, split):
            mask, mask_img = _load(entry["mask"])
            brain, _ = _load(entry["brainmask"])
            image, _ = _load(entry["image"])
            assert mask.dtype == np.uint8 and mask.shape == image.shape
            np.testing.assert_allclose(mask_img.affine, nib.load(entry["image"]).affine)
            assert mask.any() == bool(entry["label"]), entry
            assert not np.any((mask > 0) & (brain == 0)), "lesions must lie inside the brain"
            if entry["label"]:
                # at least a few voxels, at most a few percent of the brain
                assert 10 <= mask.sum() <= 0.05 * brain.sum()
                # hypo-intense lesions: clearly darker than white matter
                assert image[mask > 0].mean() < 0.8 * np.percentile(image[brain > 0], 90)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "a", seed=3, **SMALL)
    generate_demo_data(tmp_path / "b", seed=3, **SMALL)
    generate_demo_data(tmp_path / "c", seed=4, **SMALL)
    hashes_a, hashes_b, hashes_c = (_hash_arrays(tmp_path / n) for n in "abc")
    assert len(hashes_a) == 1 * 2 + 2 * 3  # training: image + brainmask; validation: image + mask + brainmask
    assert hashes_a == hashes_b
    images = [k for k in hashes_a if k.startswith("images")]
    assert all(hashes_a[k] != hashes_c[k] for k in images)
    assert (tmp_path / "a" / DATALIST_FILENAME).read_text() == (tmp_path / "b" / DATALIST_FILENAME).read_text()


def test_subjects_do_not_depend_on_split_sizes(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "small", seed=5, **SMALL)
    generate_demo_data(tmp_path / "large", seed=5, **{**SMALL, "num_training": 2})
    name = "imagesTr/train_000.nii.gz"
    assert _hash_arrays(tmp_path / "small")[name] == _hash_arrays(tmp_path / "large")[name]


def test_ensure_reuses_then_regenerates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "bundle" / "data" / "demo"
    with caplog.at_level(logging.INFO, logger="monai_bigan.data.demo"):
        assert ensure_demo_data(str(folder), **SMALL) == str(folder)
    assert "generated" in caplog.text and str(folder) in caplog.text
    info_file, image_file = folder / DEMO_INFO_FILENAME, folder / "imagesTr" / "train_000.nii.gz"
    stamps = (info_file.stat().st_mtime_ns, image_file.stat().st_mtime_ns)
    before = _hash_arrays(folder)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_bigan.data.demo"):
        assert ensure_demo_data(folder, **SMALL) == str(folder)
    assert "reused" in caplog.text
    assert len(caplog.records) == 1
    assert (info_file.stat().st_mtime_ns, image_file.stat().st_mtime_ns) == stamps

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_bigan.data.demo"):
        ensure_demo_data(folder, **{**SMALL, "seed": 1})
    assert "regenerated" in caplog.text
    assert json.loads(info_file.read_text())["parameters"]["seed"] == 1
    assert _hash_arrays(folder)["imagesTr/train_000.nii.gz"] != before["imagesTr/train_000.nii.gz"]
    # no temporary or old copies are left next to the data set
    assert [p.name for p in folder.parent.iterdir()] == ["demo"]


def test_ensure_regenerates_incomplete_data_set(tmp_path: Path) -> None:
    folder = Path(ensure_demo_data(tmp_path / "demo", **SMALL))
    (folder / "imagesVal" / "val_001.nii.gz").unlink()
    ensure_demo_data(folder, **SMALL)
    assert len(load_datalist(folder, "validation")) == 2


def test_never_deletes_foreign_folders(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("user data")
    for call in (
        lambda: generate_demo_data(folder, overwrite=True, **SMALL),
        lambda: ensure_demo_data(folder, **SMALL),
    ):
        with pytest.raises(FileExistsError, match="demo_info.json"):
            call()
        assert (folder / "precious.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_overwrite_and_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    generate_demo_data(folder, **SMALL)  # an existing empty folder is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_demo_data(folder, **SMALL)
    path = generate_demo_data(folder, overwrite=True, **{**SMALL, "num_validation": 1})
    assert len(load_datalist(path.parent, "validation")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_save(*args: object) -> None:
        calls.append(args)
        if len(calls) > 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_save_nifti", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_data(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_training": 0}, ValueError),
        ({"num_test": -1}, ValueError),
        ({"seed": -1}, ValueError),
        ({"seed": 1.5}, ValueError),
        ({"anomaly_fraction": 1.5}, ValueError),
        ({"spacing": 0.1}, ValueError),
        ({"overwrite": True}, TypeError),
        ({"unknown": 1}, TypeError),
    ],
)
def test_invalid_parameters(tmp_path: Path, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        ensure_demo_data(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()


def test_missing_nilearn(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_nilearn(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", no_nilearn)
    with pytest.raises(ImportError, match="pip install nilearn"):
        demo._template_paths()


def test_missing_template_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo.TEMPLATE_FILES, "t1", "no_such_template.nii.gz")
    with pytest.raises(FileNotFoundError, match="no_such_template.nii.gz.*nilearn"):
        demo._template_paths()


def test_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "cli"
    args = ["--output_dir", str(folder), "--num_training", "1", "--num_validation", "1", "--num_test", "1"]
    assert demo.main([*args, "--spacing", "4", "--seed", "7", "--no_progress"]) == 0
    info = json.loads((folder / DEMO_INFO_FILENAME).read_text())
    assert info["parameters"]["seed"] == 7 and info["shape"] == [50, 59, 48]
    assert all(len(load_datalist(folder, split)) == 1 for split in SPLITS)
