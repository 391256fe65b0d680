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
A real MONAI Label server with the BiGAN app: `monailabel start_server` on 127.0.0.1, /info/ and /infer/ over HTTP.

Skipped only when monailabel is not importable (install the `label` extra). Offline: the local datastore and the
app download nothing; the server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from tests.label.server import label_server  # noqa: E402
from tests.label.server import logs as _logs  # noqa: E402
from tests.label.server import multipart as _multipart  # noqa: E402
from tests.label.server import request as _request  # noqa: E402

SCORE_KEYS = ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold")


@pytest.fixture
def server(tmp_path, tiny_dataset, trained_label_bundle):
    """A running server with two studies and the tiny trained model; yields (base url, studies folder, log file)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("test_0.nii.gz", "test_1.nii.gz"):
        shutil.copy(tiny_dataset / name, studies / name)
    with label_server(tmp_path, str(studies), trained_label_bundle) as (base, log_file):
        yield base, studies, log_file


def test_server_serves_mask_heatmap_and_scores(server):
    base, studies, log_file = server
    status, _, body = _request(f"{base}/info/")
    info = json.loads(body)
    assert status == 200 and {"bigan", "bigan_heatmap"} <= set(info["models"]), info
    assert info["models"]["bigan"]["labels"] == {"anomaly": 1} and "bigan" in info["trainers"]

    form = urllib.parse.urlencode({"params": json.dumps({"device": "cpu"})}).encode()
    reference = nib.load(studies / "test_1.nii.gz")

    status, headers, body = _request(f"{base}/infer/bigan?image=test_1&output=all", data=form)
    assert status == 200, f"{status}: {body[:2000]!r}\n{_logs(log_file)}"
    parts = _multipart(headers, body)
    result = json.loads(parts["params"])
    for key in SCORE_KEYS:
        assert key in result, result
    assert isinstance(result["flagged"], bool) and 0.0 <= result["percentile"] <= 100.0
    mask_file = Path(server[1]).parent / "mask.nii.gz"
    mask_file.write_bytes(parts["image"])
    mask = nib.load(mask_file)
    assert mask.shape == reference.shape
    np.testing.assert_allclose(mask.affine, reference.affine, atol=1e-4)
    data = np.asanyarray(mask.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1} and int(data.sum()) == result["mask_voxels"]

    status, _, body = _request(f"{base}/infer/bigan_heatmap?image=test_1&output=image", data=form)
    assert status == 200, f"{status}: {body[:2000]!r}\n{_logs(log_file)}"
    heatmap_file = Path(server[1]).parent / "heatmap.nii.gz"
    heatmap_file.write_bytes(body)
    heatmap = nib.load(heatmap_file)
    assert heatmap.shape == reference.shape and np.asanyarray(heatmap.dataobj).dtype == np.float32
    np.testing.assert_allclose(heatmap.affine, reference.affine, atol=1e-4)
    # the mask is the heatmap above the calibrated voxel threshold
    expected = np.asanyarray(heatmap.dataobj) >= result["voxel_threshold"]
    assert np.mean(expected == (data > 0)) > 0.999
