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
"""The MONAI Label infer and train tasks called directly, without a server (needs monailabel)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from monai_bigan.label.infer import BiGANInferTask  # noqa: E402
from monai_bigan.label.train import BiGANTrainTask  # noqa: E402
from monai_bigan.label.workflow import InferenceModel, LabelBundle, ModelNotTrainedError  # noqa: E402
from tests.label.conftest import TINY_NETWORK  # noqa: E402

SCORE_KEYS = ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold")


class FolderDatastore:
    """The two datastore methods the train task uses, over a list of files."""

    def __init__(self, paths):
        self.paths = {p.name: str(p) for p in paths}

    def list_images(self):
        return sorted(self.paths)

    def get_image_uri(self, image_id):
        return self.paths[image_id]


def _model(root):
    return InferenceModel(LabelBundle.from_conf(root, {"bundle_root": str(root)}))


@pytest.mark.parametrize("output", ["mask", "heatmap"])
def test_infer_task_returns_label_in_input_geometry_and_scores(trained_label_bundle, tiny_dataset, output):
    task = BiGANInferTask(_model(trained_label_bundle), output=output)
    image = str(tiny_dataset / "test_1.nii.gz")
    label_file, result = task({"image": image, "device": "cpu"})
    reference, written = nib.load(image), nib.load(label_file)
    assert written.shape == reference.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    data = np.asanyarray(written.dataobj)
    if output == "mask":
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
        assert result["label_names"] == {"anomaly": 1} and result["mask_voxels"] == int(data.sum())
    else:
        assert data.dtype == np.float32 and float(data.max()) > 0.0
    for key in SCORE_KEYS:
        assert key in result, key
    json.dumps(result)  # what the server sends


def test_infer_task_without_model_says_train_first(tmp_path, tiny_dataset):
    task = BiGANInferTask(_model(tmp_path / "untrained"))
    assert task.is_valid()  # listed, so that clients see it and get the message
    with pytest.raises(ModelNotTrainedError, match="train first"):
        task({"image": str(tiny_dataset / "test_0.nii.gz"), "device": "cpu"})


def test_train_task_trains_on_all_images_then_infer_reloads(tmp_path, tiny_dataset):
    root = tmp_path / "app_model"
    bundle = LabelBundle.from_conf(tmp_path, {"bundle_root": str(root), "overrides": json.dumps(TINY_NETWORK)})
    infer = BiGANInferTask(InferenceModel(bundle))
    images = sorted(tiny_dataset.glob("training_*.nii.gz")) + sorted(tiny_dataset.glob("validation_?.nii.gz"))
    trainer = BiGANTrainTask(bundle)
    assert trainer.config()["max_epochs"] >= 1
    stats = trainer(
        {"max_epochs": 1, "device": "cpu", "overrides": {"slices_per_volume": 2, "batch_size": 2}},
        FolderDatastore(images),
    )
    assert stats["num_training"] + stats["num_validation"] == len(images) and stats["num_validation"] >= 1
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "calibration.json").is_file()
    saved = json.loads((root / "models" / "configs_override.json").read_text())
    assert saved["channels"] == TINY_NETWORK["channels"] and saved["batch_size"] == 2
    assert trainer.stats()["num_healthy_validation"] == stats["num_validation"]
    # a fresh app without --conf overrides builds the trained network from the saved overrides
    fresh = BiGANInferTask(InferenceModel(LabelBundle.from_conf(tmp_path, {"bundle_root": str(root)})))
    for task in (infer, fresh):
        _, result = task({"image": str(tiny_dataset / "test_0.nii.gz"), "device": "cpu"})
        assert all(k in result for k in SCORE_KEYS)
