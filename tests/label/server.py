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
"""A real `monailabel start_server` with the BiGAN app on 127.0.0.1, and small HTTP helpers, for the server tests."""

from __future__ import annotations

import email.parser
import email.policy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

APP_DIR = REPO_ROOT / "monai_bigan" / "label"
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def monailabel_command() -> list[str]:
    """The `monailabel` script of this interpreter's environment (it runs `python -m monailabel.main`)."""
    script = Path(sys.executable).parent / "monailabel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]


def request(url: str, data: bytes | None = None, timeout: float = 300) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def multipart(headers: dict, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart response, by form field name."""
    content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    return {part.get_param("name", header="content-disposition"): part.get_content() for part in message.iter_parts()}


def logs(log_file: Path) -> str:
    return log_file.read_text(errors="replace")[-8000:] if log_file.is_file() else "(no server log)"


@contextmanager
def label_server(
    workdir: Path, studies: str, bundle_root: Path, conf: Sequence[str] = ()
) -> Iterator[tuple[str, Path]]:
    """
    Runs `monailabel start_server --app monai_bigan/label --studies STUDIES` with the model of ``bundle_root`` on a
    free port of 127.0.0.1 until the block ends; yields (base url, log file). Fails the test, with the server's log,
    when the server exits or does not answer /info/ in time.
    """
    port = free_port()
    log_file = workdir / "server.log"
    cmd = monailabel_command() + ["start_server", "--app", str(APP_DIR), "--studies", str(studies)]
    cmd += ["--conf", "models", "bigan", "--conf", "bundle_root", str(bundle_root), *conf]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ)
    env.update(
        {
            "MONAILABEL_PYEXE": sys.executable,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_TRACKING_ENABLED": "false",
            "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"),
            "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(workdir / "dicomweb_cache"),
        }
    )
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{logs(log_file)}")
            try:
                status, _, _ = request(f"{base}/info/", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /info/ within {START_TIMEOUT_S} s:\n{logs(log_file)}")
            time.sleep(1)
        yield base, log_file
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
