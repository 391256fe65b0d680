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

import email.parser
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from tests.conftest import REPO_ROOT  # noqa: E402

APP_DIR = REPO_ROOT / "monai_bigan" / "label"
START_TIMEOUT_S = 180
SCORE_KEYS = ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _monailabel_command() -> list[str]:
    """The `monailabel` script of this interpreter's environment (it runs `python -m monailabel.main`)."""
    script = Path(sys.executable).parent / "monailabel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]


def _request(url: str, data: bytes | None = None, timeout: float = 300) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _multipart(headers: dict, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart response, by form field name."""
    content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    return {part.get_param("name", header="content-disposition"): part.get_content() for part in message.iter_parts()}


def _logs(log_file: Path) -> str:
    return log_file.read_text(errors="replace")[-8000:] if log_file.is_file() else "(no server log)"


@pytest.fixture
def server(tmp_path, tiny_dataset, trained_label_bundle):
    """A running server with two studies and the tiny trained model; yields (base url, studies folder, log file)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("test_0.nii.gz", "test_1.nii.gz"):
        shutil.copy(tiny_dataset / name, studies / name)
    port = _free_port()
    log_file = tmp_path / "server.log"
    cmd = _monailabel_command() + ["start_server", "--app", str(APP_DIR), "--studies", str(studies)]
    cmd += ["--conf", "models", "bigan", "--conf", "bundle_root", str(trained_label_bundle)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ)
    env.update(
        {
            "MONAILABEL_PYEXE": sys.executable,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_TRACKING_ENABLED": "false",
            "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions"),
        }
    )
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{_logs(log_file)}")
            try:
                status, _, _ = _request(f"{base}/info/", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /info/ within {START_TIMEOUT_S} s:\n{_logs(log_file)}")
            time.sleep(1)
        yield base, studies, log_file
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


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
