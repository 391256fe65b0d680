"""Bad training inputs stop the training bundle before anything is trained or written, naming every bad file."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImaged

from monai_bigan.data import preflight_check
from monai_bigan.transforms import CheckImaged
from tests.bundle.test_train_bundle import TINY_2D, TRAIN, _chain, _workflow

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _truncated(path):
    nib.save(nib.Nifti1Image(np.random.rand(24, 28, 20).astype(np.float32), AFFINE), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nifti(array):
    return lambda path: nib.save(nib.Nifti1Image(array.astype(np.float32), AFFINE), path)


BAD = {
    "truncated": (_truncated, ""),
    "all-nan": (_nifti(np.full((24, 28, 20), np.nan)), "NaN"),
    "constant": (_nifti(np.full((24, 28, 20), 7.0)), "constant"),
    "4d": (_nifti(np.random.rand(24, 28, 20, 3)), "channel"),
    "empty-file": (lambda path: path.write_bytes(b""), "empty file"),
    "zero-spacing": (
        lambda path: nib.save(
            nib.Nifti1Image(np.random.rand(24, 28, 20).astype(np.float32), np.diag([1e-5, 2, 2, 1])), path
        ),
        "voxel spacing",
    ),
}


def _dataset_with(tmp_path, tiny_dataset, kinds):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    datalist = json.loads((data / "datalist.json").read_text())
    names = []
    for kind in kinds:
        name = f"bad_{kind}.nii.gz"
        BAD[kind][0](data / name)
        datalist["training"].append({"image": name})
        names.append(name)
    (data / "datalist.json").write_text(json.dumps(datalist))
    return data, names


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_training_file_refuses_to_start(tmp_path, tiny_dataset, kind):
    data, (name,) = _dataset_with(tmp_path, tiny_dataset, [kind])
    wf = _workflow(TRAIN, tmp_path / "bundle", data, **TINY_2D)
    with pytest.raises(Exception) as info:
        wf.run()
    errors = [e for e in _chain(info.value) if isinstance(e, ValueError) and "cannot be used for training" in str(e)]
    assert errors, info.value
    assert name in str(errors[0]) and BAD[kind][1] in str(errors[0])
    assert "applying transform" not in str(errors[0])
    assert not (tmp_path / "bundle" / "models").exists()


def test_preflight_lists_all_bad_files(tmp_path, tiny_dataset):
    data, names = _dataset_with(tmp_path, tiny_dataset, list(BAD))
    datalist = [{"image": str(data / n)} for n in ["training_0.nii.gz"] + names]
    transforms = [LoadImaged("image", image_only=True, ensure_channel_first=True), CheckImaged("image")]
    with pytest.raises(ValueError) as info:
        preflight_check(datalist, transforms)
    message = str(info.value)
    assert message.startswith(f"{len(names)} of {len(datalist)} input file(s)")
    assert all(n in message for n in names) and "training_0" not in message
    assert preflight_check(datalist[:1], transforms) == 1
