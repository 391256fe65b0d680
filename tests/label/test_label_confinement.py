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
Hostile requests to the MONAI Label app (issue #18): MONAI Label's own FastAPI app served in this process with
``fastapi.testclient``, so that the filesystem calls of a request can be watched. No trained model is needed: every
refusal happens before the model loads (an untrained app answers a good request with 503 "train first").
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from fastapi.testclient import TestClient  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.utils.app import app_instance, clear_cache  # noqa: E402
from monailabel.utils.async_tasks.utils import tasks  # noqa: E402

from monai_bigan.exceptions import TrainingLockedError  # noqa: E402
from monai_bigan.label.error_log import ERROR_LOG_NAME, ErrorLog  # noqa: E402
from monai_bigan.label.infer import BiGANInferTask  # noqa: E402
from monai_bigan.label.train import BiGANTrainTask  # noqa: E402
from monai_bigan.label.workflow import InferenceModel  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

APP_DIR = REPO_ROOT / "monai_bigan" / "label"
ERROR_LOG = APP_DIR / "logs" / ERROR_LOG_NAME
TRAIN_TIMEOUT_S = 240


@contextmanager
def _served(studies: Path, workdir: Path):
    """MONAI Label's FastAPI app serving the BiGAN app (untrained) on ``studies``; yields a test client."""
    from monailabel.app import app

    values = {
        "MONAI_LABEL_APP_DIR": str(APP_DIR),
        "MONAI_LABEL_STUDIES": str(studies),
        "MONAI_LABEL_APP_CONF": {"models": "bigan", "bundle_root": str(workdir / "untrained")},
        "MONAI_LABEL_DATASTORE_AUTO_RELOAD": False,
        "MONAI_LABEL_AUTO_UPDATE_SCORING": False,
        "MONAI_LABEL_TRACKING_ENABLED": False,
        "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"),
    }
    hooks = (logging.getLogRecordFactory(), sys.excepthook, threading.excepthook, sys.unraisablehook)
    app_log = None
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setattr(settings, key, value)
            # the training process reads its settings from the environment, as `monailabel start_server` sets it
            mp.setenv(key, value if isinstance(value, str) else json.dumps(value))
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
        clear_cache()
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                app_log = getattr(app_instance(), "error_log", None)
                yield client
        finally:
            # the app diverted this process's tracebacks to its error log: give them back
            if app_log is not None:
                app_log.uninstall()
            clear_cache()
    assert (logging.getLogRecordFactory(), sys.excepthook, threading.excepthook, sys.unraisablehook) == hooks


def _studies(root: Path, tiny_dataset: Path, names: tuple[str, ...]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        shutil.copy(tiny_dataset / f"{name}.nii.gz", root / f"{name}.nii.gz")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("confinement")


@pytest.fixture(scope="module")
def client(workdir, tiny_dataset):
    with _served(_studies(workdir / "studies", tiny_dataset, ("test_0", "test_1")), workdir) as test_client:
        yield test_client


@pytest.fixture
def fs_paths(monkeypatch) -> list[str]:
    """Every path (or fd) handed to a filesystem call of this process, the server's included, during the test."""
    seen: list[str] = []

    def spy(call):
        def watched(*args, **kwargs):
            target = args[0] if args else kwargs.get("path", kwargs.get("file", "."))
            seen.append(os.fsdecode(target) if isinstance(target, (str, bytes, os.PathLike)) else repr(target))
            return call(*args, **kwargs)

        return watched

    for name in ("stat", "lstat", "open", "listdir", "scandir", "access"):
        monkeypatch.setattr(os, name, spy(getattr(os, name)))
    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(io, "open", spy(io.open))
    return seen


def _infer(client, image: str | None = None, params: dict | None = None, **query):
    if image is not None:
        query["image"] = image
    return client.post("/infer/bigan", params={"output": "json", **query}, data={"params": json.dumps(params or {})})


def _short_detail(response) -> str:
    """The JSON detail of a refusal: one short line, no traceback."""
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400, detail
    assert "Traceback" not in detail and 'File "' not in detail, detail
    return detail


def _hostile_ids(marker: str, existing: Path) -> list[str]:
    return [
        str(existing),  # an existing scan outside the datastore
        f"/nonexistent_{marker}/scan.nii.gz",
        f"../{marker}",
        f"{marker}/../test_1",
        f"..\\{marker}",
        f"test_1\x00{marker}",
        f"%2e%2e%2f{marker}",  # arrives percent-encoded once the query is decoded
        f"file:///{marker}",
        f"~/{marker}",
        f"C:\\{marker}",
    ]


def test_path_like_image_ids_get_400_without_touching_the_filesystem(client, workdir, tiny_dataset, fs_paths):
    marker = uuid.uuid4().hex
    existing = workdir / f"secret_{marker}.nii.gz"
    shutil.copy(tiny_dataset / "test_1.nii.gz", existing)
    fs_paths.clear()
    for image_id in _hostile_ids(marker, existing):
        response = _infer(client, image_id)
        assert response.status_code == 400, (image_id, response.text)
        detail = _short_detail(response)
        assert marker not in detail and "datastore image id, not a file path" in detail
    assert not [p for p in fs_paths if marker in p]


def test_refusals_answer_the_same_whether_or_not_the_path_exists(client, workdir, tiny_dataset, fs_paths):
    marker = uuid.uuid4().hex
    existing = workdir / f"present_{marker}.nii.gz"
    shutil.copy(tiny_dataset / "test_0.nii.gz", existing)
    missing = workdir / f"absent_{marker}.nii.gz"
    fs_paths.clear()
    answers = [_infer(client, str(path)) for path in (existing, missing)]
    # by construction: the refusal reads the id only, so its work (and time) cannot depend on the filesystem
    assert not [p for p in fs_paths if marker in p]
    assert [a.status_code for a in answers] == [400, 400] and answers[0].content == answers[1].content


def test_image_in_params_cannot_replace_the_datastore_id(client, workdir, fs_paths):
    marker = uuid.uuid4().hex
    response = _infer(client, "test_1", params={"image": f"/etc/{marker}"})
    assert response.status_code == 400 and "not a file path" in _short_detail(response)
    assert not [p for p in fs_paths if marker in p]


def test_unknown_ids_get_404_without_touching_the_filesystem(client, tmp_path, monkeypatch, fs_paths):
    marker = uuid.uuid4().hex
    # a file of that name in the server's working directory must not be taken for the image
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"cwd_{marker}.nii.gz").write_bytes(b"")
    fs_paths.clear()
    for image_id in (f"unknown_{marker}", f"cwd_{marker}.nii.gz"):
        response = _infer(client, image_id)
        assert response.status_code == 404, response.text
        assert _short_detail(response) == f"image {image_id!r} is not in the datastore"
    assert not [p for p in fs_paths if marker in p]


def test_sessions_are_not_looked_up_on_disk_nor_kept(client, workdir, fs_paths):
    marker = uuid.uuid4().hex
    response = _infer(client, session_id=f"../../{marker}")
    assert response.status_code == 400 and _short_detail(response) == "infer request: no image id given."
    assert client.get(f"/session/{marker}").status_code == 404
    assert client.delete(f"/session/{marker}").status_code == 404
    assert not [p for p in fs_paths if marker in p]
    response = client.put("/session/", files={"files": ("scan.nii.gz", b"uploaded")})
    assert response.status_code == 406 and "sessions are not supported" in _short_detail(response)
    assert not list((workdir / "sessions").glob("*/scan.nii.gz"))  # the upload is not kept


def test_datastore_id_reaches_the_model(client):
    response = _infer(client, "test_1")
    assert response.status_code == 503 and "train first" in response.json()["detail"]
    response = client.post("/infer/nothing", params={"image": "test_1"})
    assert response.status_code == 404 and "not served by this app" in _short_detail(response)


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"device": 5}, "device must be"),
        ({"device": "cpu'); import os; ('"}, "device must be"),
        ({"result_extension": "/../../x.nii.gz"}, "result_extension must be"),
        ({"result_dtype": "object"}, "result_dtype must be"),
        ({"label_tag": "../../labels"}, "label_tag must be"),
        ({"save_label": "maybe"}, "save_label must be"),
        ({"logging": 3}, "logging must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"image_path": "/etc/hostname"}, "'image_path' is set by the server"),
        ({"model_filename": "../../model.pt"}, "'model_filename' is set by the server"),
        # the folder the app writes a request's DICOM objects to: a client must never choose where files go
        ({"bigan_dicom_dir": "/etc"}, "'bigan_dicom_dir' is set by the server"),
        ({"session": {"session_id": "x"}}, "sessions are not supported"),
    ],
)
def test_bad_infer_params_get_400(client, params, expected):
    response = _infer(client, "test_1", params=params)
    assert response.status_code == 400, response.text
    assert expected in _short_detail(response)


def _error_log_entry(ref: str) -> str:
    text = ERROR_LOG.read_text(encoding="utf-8", errors="replace")
    start = text.index(f"[ref {ref}]")
    following = re.search(r"\n\[\d{4}-\d\d-\d\d ", text[start:])
    return text[start : start + following.start()] if following else text[start:]


def test_infer_failure_answers_500_with_a_reference_and_logs_the_traceback(client, monkeypatch):
    marker = uuid.uuid4().hex

    def broken(self, device="cpu"):
        raise RuntimeError(f"boom {marker}")

    monkeypatch.setattr(InferenceModel, "get", broken)
    response = _infer(client, "test_1")
    assert response.status_code == 500, response.text
    detail = _short_detail(response)
    assert marker not in detail and "inference of image 'test_1' failed" in detail
    ref = re.search(r"error ref (\w+)", detail).group(1)
    entry = _error_log_entry(ref)
    assert "Traceback (most recent call last)" in entry and f"boom {marker}" in entry and "'test_1'" in entry


def test_saved_label_goes_to_the_datastore_image(client, monkeypatch, tmp_path):
    seen = {}

    def fake_task(self, request, callbacks=None):
        seen["image"] = request["image"]
        label = tmp_path / "label.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), label)
        return str(label), {"score": 1.0}

    monkeypatch.setattr(BiGANInferTask, "__call__", fake_task)
    response = _infer(client, "test_0", params={"save_label": True, "label_tag": "original"})
    assert response.status_code == 200, response.text
    datastore = app_instance().datastore()
    assert seen["image"] == datastore.get_image_uri("test_0")
    assert datastore.get_label_by_image_id("test_0", "original") == "test_0"


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"max_epochs": 0}, "max_epochs must be between 1 and"),
        ({"max_epochs": "many"}, "max_epochs must be an integer"),
        ({"max_epochs": True}, "max_epochs must be an integer"),
        ({"val_split": 1.5}, "val_split must be between 0 and 1"),
        ({"seed": -1}, "seed must be between 0 and"),
        ({"device": "cpu'); __import__('os').system('id'); ('"}, "device must be"),
        ({"gpus": "0; rm -rf /"}, "gpus must be"),
        ({"bundle_path": "/tmp"}, "unknown parameter(s) ['bundle_path']"),
        ({"epochs": 3}, "unknown parameter(s) ['epochs']"),
        ({"overrides": "{not json"}, "overrides is not valid JSON"),
        ({"overrides": [1, 2]}, "overrides must be a JSON object"),
        ({"overrides": {"bundle_root": "/tmp/elsewhere"}}, "'bundle_root' is not a tunable"),
        ({"overrides": {"learning_rate": "$__import__('os').getcwd()"}}, "learning_rate must be plain data"),
        ({"overrides": {"channels": "%/etc/passwd#x"}}, "channels must be plain data"),
        ({"overrides": {"latent_size": [1]}}, "latent_size must be plain data"),
    ],
)
def test_bad_train_params_get_400_before_a_training_process_starts(client, params, expected):
    started = len(tasks("train"))
    response = client.post("/train/bigan", json=params)
    assert response.status_code == 400, response.text
    assert expected in _short_detail(response)
    assert len(tasks("train")) == started
    response = client.post("/train/bigan", params={"run_sync": True}, json=params)  # the in-process route too
    assert response.status_code == 400 and expected in _short_detail(response)
    response = client.post("/train/", json={"bigan": params})  # MONAI Label's (deprecated) all-models route
    assert response.status_code == 400 and expected in _short_detail(response)
    assert len(tasks("train")) == started


def test_training_while_another_holds_the_model_folder_answers_409(client, monkeypatch):
    def locked(self, request, datastore=None):
        raise TrainingLockedError("/m/.training.lock: another training is running in /m: pid 7 on host h since t")

    monkeypatch.setattr(BiGANTrainTask, "__call__", locked)
    response = client.post("/train/bigan", params={"run_sync": True}, json={"max_epochs": 1})
    assert response.status_code == 409, response.text
    assert "another training is running" in _short_detail(response)


def test_training_status_shows_one_line_not_a_traceback(workdir, tiny_dataset):
    """A training that fails (one image: nothing to validate on) reports one line with a reference."""
    studies = _studies(workdir / "one_study", tiny_dataset, ("test_0",))
    with _served(studies, workdir) as one_image_client:
        response = one_image_client.post("/train/bigan", json={"max_epochs": 1, "device": "cpu"})
        assert response.status_code == 200, response.text
        task_id = response.json()["id"]
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while True:
            status = one_image_client.get("/train/").json()
            if status["id"] == task_id and status["status"] in ("DONE", "ERROR"):
                break
            if time.monotonic() > deadline:  # a hang guard, not a speed check: the failing task ends in seconds
                pytest.fail(f"training task did not end within {TRAIN_TIMEOUT_S} s: {status}")
            time.sleep(1)
    details = "\n".join(status["details"])
    assert status["status"] == "ERROR", details
    assert "Traceback" not in details and 'File "' not in details, details
    assert "at least 2 images" in details, details
    ref = re.search(r"error ref (\w+)", details).group(1)
    assert "Traceback (most recent call last)" in _error_log_entry(ref)


def test_error_log_diverts_tracebacks_of_records_and_threads(tmp_path):
    error_log = ErrorLog(tmp_path / "logs" / ERROR_LOG_NAME)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger("test_error_log"), logging.getLogger("monai_bigan.label.error_log")]
    for log in loggers:
        log.addHandler(handler)
    factory = logging.getLogRecordFactory()
    error_log.install()
    try:
        try:
            raise ValueError("inner failure")
        except ValueError:
            loggers[0].exception("step failed")
        loggers[0].error('worker said:\nTraceback (most recent call last):\n  File "w.py", line 1\nKeyError: 1')
        thread = threading.Thread(target=lambda: 1 / 0)
        thread.start()
        thread.join()
    finally:
        error_log.uninstall()
        for log in loggers:
            log.removeHandler(handler)
    shown = stream.getvalue()
    assert "Traceback" not in shown and 'File "' not in shown, shown
    assert shown.count(f"[traceback in {ERROR_LOG_NAME}, ref ") == 3, shown
    assert "step failed [" in shown and "ZeroDivisionError: division by zero [" in shown
    kept = error_log.path.read_text()
    assert kept.count("Traceback (most recent call last)") == 3 and "inner failure" in kept and "w.py" in kept
    assert logging.getLogRecordFactory() == factory
