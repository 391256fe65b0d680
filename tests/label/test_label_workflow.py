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
"""The bundle side of the MONAI Label app (no MONAI Label needed): settings, overrides, datalist, scoring parts."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_bigan.label.workflow import (
    OVERRIDES_FILENAME,
    InferenceModel,
    LabelBundle,
    LabelResultd,
    ModelNotTrainedError,
    write_training_datalist,
)
from tests.conftest import REPO_ROOT


def test_default_model_folder_is_created_in_the_app(tmp_path):
    bundle = LabelBundle.from_conf(tmp_path / "app", {})
    assert bundle.bundle_root == (tmp_path / "app" / "model" / "bigan").resolve()
    assert bundle.bundle_root.is_dir()
    assert bundle.config_dir == (REPO_ROOT / "bundles" / "bigan").resolve()
    assert bundle.config_files("inference") == [str(bundle.config_dir / "inference.json")]


def test_missing_model_says_train_first(tmp_path):
    bundle = LabelBundle.from_conf(tmp_path, {"bundle_root": str(tmp_path / "empty")})
    with pytest.raises(ModelNotTrainedError, match="train first: .*model.pt"):
        InferenceModel(bundle).get("cpu")


def test_overrides_precedence_and_bad_json(tmp_path):
    root = tmp_path / "root"
    saved = LabelBundle.from_conf(tmp_path, {"bundle_root": str(root)})
    saved.save_overrides({"latent_size": 8, "channels": [4, 8]})
    assert json.loads((root / "models" / OVERRIDES_FILENAME).read_text())["latent_size"] == 8
    bundle = LabelBundle.from_conf(tmp_path, {"bundle_root": str(root), "overrides": '{"latent_size": 16}'})
    assert bundle.effective_overrides() == {"latent_size": 16, "channels": [4, 8]}
    parser = bundle.parser("inference")
    assert parser.get_parsed_content("latent_size") == 16 and parser.get("channels") == [4, 8]
    assert parser.get("bundle_root") == str(root.resolve())
    with pytest.raises(ValueError, match="--conf overrides is not valid JSON"):
        LabelBundle.from_conf(tmp_path, {"bundle_root": str(root), "overrides": "{latent"})
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        LabelBundle.from_conf(tmp_path, {"bundle_root": str(root), "preset": str(tmp_path / "nothing.json")})


def test_training_datalist_holds_out_a_fifth_at_least_one(tmp_path):
    images = [tmp_path / f"{i}.nii.gz" for i in range(10)]
    datalist = write_training_datalist(images, tmp_path / "ds")
    assert len(datalist["validation"]) == 2 and len(datalist["training"]) == 8
    assert json.loads((tmp_path / "ds" / "datalist.json").read_text()) == datalist
    everything = {e["image"] for e in datalist["training"] + datalist["validation"]}
    assert everything == {str(p) for p in images}
    small = write_training_datalist(images[:2], tmp_path / "ds2")
    assert len(small["validation"]) == 1 and len(small["training"]) == 1
    with pytest.raises(ValueError, match="at least 2 images"):
        write_training_datalist(images[:1], tmp_path / "ds3")


def test_workflow_reuses_the_inference_config_and_inverts_to_input_geometry(trained_label_bundle, tiny_dataset):
    """The config's pre-processing, inferer, scorer and post-processing, run as MONAI Label runs them."""
    bundle = LabelBundle.from_conf(trained_label_bundle, {"bundle_root": str(trained_label_bundle)})
    model = InferenceModel(bundle)
    wf = model.get("cpu")
    assert model.get("cpu") is wf  # cached
    names = [type(t).__name__ for t in wf.postprocessing]
    assert "AnomalyScored" in names and "ScoreCalibrationd" in names and "Invertd" in names
    assert "SaveImaged" not in names and "ReviewSheetd" not in names
    path = str(tiny_dataset / "test_1.nii.gz")
    data = {"image": path}
    for t in wf.preprocessing:
        data = t(data)
    with torch.no_grad():
        data["pred"] = wf.inferer(data["image"][None], wf.scorer)[0]
    for t in wf.postprocessing + [LabelResultd("mask", wf.calibration)]:
        data = t(data)
    reference = nib.load(path)
    assert tuple(data["pred"].shape) == reference.shape and data["pred"].dtype == torch.uint8
    np.testing.assert_allclose(data["pred"].affine.numpy(), reference.affine, atol=1e-5)
    mask = data["pred"].numpy() > 0
    heatmap = data["pred_heatmap"][0].numpy()
    np.testing.assert_array_equal(mask, heatmap >= wf.calibration.voxel_threshold)  # AsDiscreted's threshold
    result = data["result"]
    for key in ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold"):
        assert key in result
    assert isinstance(result["flagged"], bool) and 0.0 <= result["percentile"] <= 100.0
    assert result["mask_voxels"] == int(mask.sum())
    # a new checkpoint (as after training) is picked up
    stat = bundle.ckpt_file.stat()
    os.utime(bundle.ckpt_file, (stat.st_atime, stat.st_mtime + 10))
    assert model.get("cpu") is not wf


@pytest.mark.parametrize(
    "kind, words",
    [("nan", "NaN"), ("constant", "constant"), ("truncated", "nan_or_broken.nii.gz"), ("missing", "not found")],
)
def test_bad_input_names_the_file_in_monai_label(trained_label_bundle, tmp_path, kind, words):
    """The app's pre-processing is the bundle's, so a bad scan gets the same clear error naming it."""
    from monai_bigan.transforms import InvalidImageError

    path = tmp_path / "nan_or_broken.nii.gz"
    if kind == "nan":
        nib.save(nib.Nifti1Image(np.full((12, 12, 8), np.nan, np.float32), np.eye(4)), path)
    elif kind == "constant":
        nib.save(nib.Nifti1Image(np.zeros((12, 12, 8), np.float32), np.eye(4)), path)
    elif kind == "truncated":
        nib.save(nib.Nifti1Image(np.random.rand(12, 12, 8).astype(np.float32), np.eye(4)), path)
        path.write_bytes(path.read_bytes()[:60])
    wf = InferenceModel(LabelBundle.from_conf(trained_label_bundle, {"bundle_root": str(trained_label_bundle)})).get(
        "cpu"
    )
    data = {"image": str(path)}
    with pytest.raises(Exception) as info:
        for t in wf.preprocessing:
            data = t(data)
    text, exc = "", info.value
    while exc is not None:
        text, exc = text + str(exc), exc.__cause__ or exc.__context__
    assert str(path) in text and words in text
    if kind in ("nan", "constant", "missing"):
        assert isinstance(info.value, InvalidImageError) or "InvalidImageError" in text
