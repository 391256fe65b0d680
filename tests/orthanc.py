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
A real Orthanc PACS with its DICOMweb plugin for the tests, started the way the README tells users to start one
(``python -m monai_bigan.data.dicomweb orthanc-config``): local access only, no authentication, free ports, storage
in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from monai_bigan.data.dicomweb import DEFAULT_ORTHANC_PLUGIN, orthanc_config

__all__ = ["ORTHANC_BINARY", "OrthancServer", "orthanc_missing", "start_orthanc"]

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "Orthanc")
ORTHANC_PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN", DEFAULT_ORTHANC_PLUGIN)
#: seconds Orthanc may take to open its database and answer /system
STARTUP_TIMEOUT = 60.0


def orthanc_missing() -> str | None:
    """Why Orthanc cannot be started here (the binary or the DICOMweb plugin is missing), or None."""
    binary = shutil.which(ORTHANC_BINARY) or (ORTHANC_BINARY if os.path.isfile(ORTHANC_BINARY) else None)
    if binary is None:
        return f"the Orthanc binary {ORTHANC_BINARY!r} is not installed (Debian/Ubuntu: apt-get install orthanc)"
    if not os.path.isfile(ORTHANC_PLUGIN):
        return (
            f"the Orthanc DICOMweb plugin {ORTHANC_PLUGIN} is missing (Debian/Ubuntu: apt-get install orthanc-dicomweb)"
        )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """
    A running Orthanc: ``url`` (``http://127.0.0.1:PORT``), ``dicomweb_url`` (``url + "/dicom-web"``), ``log_file``.
    """

    def __init__(self, process: subprocess.Popen, http_port: int, log_file: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.log_file = log_file

    def log(self) -> str:
        """The server's log so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.is_file() else "(no log written)"

    def rest(self, path: str) -> object:
        """GET ``url + path`` from Orthanc's own REST API, decoded from JSON."""
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Terminate the server, then kill it if it does not stop within 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start_orthanc(folder: Path) -> OrthancServer:
    """
    Start Orthanc with its storage, index, configuration and log in ``folder`` and wait until it answers ``/system``.

    Raises:
        RuntimeError: the server exits or does not answer in time; the message holds its log.
    """
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    while dicom_port == http_port:
        dicom_port = _free_port()
    # DICOMweb only: RemoteAccessAllowed false keeps the HTTP API to this machine; the DICOM port would be open to all
    config = orthanc_config(
        folder / "storage", http_port=http_port, dicom_port=dicom_port, plugins=[ORTHANC_PLUGIN], dicom_server=False
    )
    config_file = folder / "orthanc.json"
    config_file.write_text(json.dumps(config, indent=2))
    log_file = folder / "orthanc.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen([ORTHANC_BINARY, str(config_file)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = OrthancServer(process, http_port, log_file)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {process.returncode} at start-up; its log:\n{server.log()}")
        try:
            server.rest("/system")
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"Orthanc did not answer {server.url}/system within {STARTUP_TIMEOUT:.0f} s ({e}); its log:\n"
                    f"{server.log()}"
                ) from e
            time.sleep(0.2)
            continue
        if "dicom-web" not in server.rest("/plugins"):  # type: ignore[operator]
            server.stop()
            raise RuntimeError(
                f"Orthanc started without its DICOMweb plugin {ORTHANC_PLUGIN}; its log:\n{server.log()}"
            )
        return server
