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
"""Fixtures of the MONAI Label app tests: a tiny BiGAN trained once with the training bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_bigan.label.workflow import LabelBundle
from tests.bundle.test_train_bundle import TINY_2D, TRAIN
from tests.conftest import train_tiny_bundle

#: network settings of the tiny model, as the app's train task saves them beside the model
TINY_NETWORK = {k: v for k, v in TINY_2D.items() if k not in ("slices_per_volume", "batch_size")}


@pytest.fixture(scope="session")
def trained_label_bundle(tmp_path_factory, tiny_dataset) -> Path:
    """A bundle root with a tiny model trained 1 epoch, and its network overrides in models/configs_override.json."""
    root = tmp_path_factory.mktemp("label_bundle")
    train_tiny_bundle(root, tiny_dataset, TRAIN, device="$torch.device('cpu')", **TINY_2D)
    LabelBundle.from_conf(root, {"bundle_root": str(root)}).save_overrides(TINY_NETWORK)
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "calibration.json").is_file()
    return root
