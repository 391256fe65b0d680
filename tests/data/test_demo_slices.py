"""Tests of monai_bigan.data.demo_slices: the 2D-image demo data set cut from the demo volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_bigan.data import generate_demo_data, load_datalist
from monai_bigan.data.demo_slices import SLICES_INFO_FILENAME, ensure_demo_slices, extract_demo_slices


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = generate_demo_data(
        tmp_path_factory.mktemp("demo3d") / "data",
        num_training=2,
        num_validation=2,
        num_test=2,
        anomaly_fraction=1.0,
        spacing=4.0,
        progress=False,
    )
    return path.parent


def test_slices_are_2d_images_with_their_masks_and_labels(volumes: Path, tmp_path: Path) -> None:
    folder = extract_demo_slices(volumes, tmp_path / "demo2d", step=2).parent
    training = load_datalist(folder, "training")
    assert len(training) > 2  # several slices of the band per training subject
    assert len(load_datalist(folder, "validation")) > 2  # validation too, by default
    assert len(load_datalist(folder, "test")) == 2  # one image per subject
    for split in ("validation", "test"):
        for entry in load_datalist(folder, split):
            img = nib.load(entry["image"])
            mask = np.asarray(nib.load(entry["mask"]).dataobj)
            assert img.ndim == 2 and mask.shape == img.shape
            assert entry["label"] == int(mask.any())  # the label is the slice's own
    source = nib.load(load_datalist(volumes, "test")[0]["image"])
    first = nib.load(load_datalist(folder, "test")[0]["image"])
    z = int(Path(first.get_filename()).name.split("_z")[1][:3])
    # the 2D image is the volume's slice, placed where the slice lies
    np.testing.assert_array_equal(np.asarray(first.dataobj), np.asarray(source.dataobj)[..., z])
    np.testing.assert_allclose(first.affine[:3, 3], (source.affine @ [0, 0, z, 1])[:3])


def test_lesion_subjects_give_their_largest_lesion_slice(volumes: Path, tmp_path: Path) -> None:
    folder = extract_demo_slices(volumes, tmp_path / "demo2d", band=(0.0, 1.0), validation_step=0).parent
    for split in ("validation", "test"):
        entries, sources = load_datalist(folder, split), load_datalist(volumes, split)
        assert len(entries) == len(sources)  # one per subject
    for entry, source in zip(load_datalist(folder, "validation"), load_datalist(volumes, "validation")):
        lesion = np.asarray(nib.load(source["mask"]).dataobj) > 0
        z = int(Path(entry["image"]).name.split("_z")[1][:3])
        assert lesion[..., z].sum() == lesion.sum(axis=(0, 1)).max()
        assert entry["label"] == 1


def test_validation_slices_leave_the_test_split_unchanged(volumes: Path, tmp_path: Path) -> None:
    one = extract_demo_slices(volumes, tmp_path / "one", validation_step=0).parent
    band = extract_demo_slices(volumes, tmp_path / "band", step=2, validation_step=1).parent
    per_subject = load_datalist(one, "validation")
    every_slice = load_datalist(band, "validation")
    assert len(every_slice) > 2 * len(per_subject)
    # every band slice: the one-per-subject slice is among them, each labelled by its own lesion mask
    names = {Path(e["image"]).name for e in every_slice}
    assert {Path(e["image"]).name for e in per_subject} <= names
    for entry in every_slice:
        assert entry["label"] == int(np.asarray(nib.load(entry["mask"]).dataobj).any())
    assert [Path(e["image"]).name for e in load_datalist(one, "test")] == [
        Path(e["image"]).name for e in load_datalist(band, "test")
    ]
    with pytest.raises(ValueError, match="validation_step"):
        extract_demo_slices(volumes, tmp_path / "x", validation_step=-1)


def test_ensure_reuses_and_protects_folders(volumes: Path, tmp_path: Path) -> None:
    folder = Path(ensure_demo_slices(tmp_path / "demo2d", volumes))
    stamp = (folder / SLICES_INFO_FILENAME).stat().st_mtime_ns
    assert ensure_demo_slices(tmp_path / "demo2d", volumes) == str(folder)
    assert (folder / SLICES_INFO_FILENAME).stat().st_mtime_ns == stamp  # reused, not rewritten
    assert json.loads((folder / SLICES_INFO_FILENAME).read_text())["step"] == 2
    ensure_demo_slices(tmp_path / "demo2d", volumes, step=3)  # other parameters: rewritten
    assert json.loads((folder / SLICES_INFO_FILENAME).read_text())["step"] == 3
    ensure_demo_slices(tmp_path / "demo2d", volumes, step=3, validation_step=0)
    assert len(load_datalist(folder, "validation")) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="left alone"):
        extract_demo_slices(volumes, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="band"):
        extract_demo_slices(volumes, tmp_path / "x", band=(0.7, 0.2))
