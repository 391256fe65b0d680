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
"""Handler that sends the DICOM results of each scored input back to the PACS (DICOMweb STOW-RS)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from monai_bigan.data.guarded import ERROR_KEY, SOURCE_KEY, item_source
from monai_bigan.utils.bundle import as_bool

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["StowHandler"]


class StowHandler:
    """
    After each iteration, send the DICOM files listed under ``outputs_key`` of every scored item (the SEG, Parametric
    Map and SR written by the bundle's DICOM writer) to a DICOMweb server with STOW-RS.

    A failed STOW turns that item into an error item (``{"error": message, "source": input}``, the message naming the
    server's answer) without stopping the run: the report gives the input an error row, and its completion record is
    not "ok", so a rerun into the same output folder scores and sends it again. Attach it BEFORE
    :py:class:`monai_bigan.handlers.AnomalyReportHandler` (ignite runs the handlers of an event in the order they were
    attached), so that the report sees the error.

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        enabled: send the outputs (strings such as ``"false"`` from a command line are accepted); when False the
            handler attaches nothing, so a bundle can list it unconditionally.
        outputs_key: key of the list of DICOM files of an item.
        image_key: key of the image whose metadata names the input.

    Raises:
        ValueError: when enabled without a ``url``.

    Example::

        StowHandler("http://127.0.0.1:8042/dicom-web").attach(evaluator)   # before the AnomalyReportHandler
    """

    def __init__(
        self,
        url: str | None,
        enabled: bool | str = True,
        outputs_key: str = "dicom_outputs",
        image_key: str = "image",
    ) -> None:
        self.enabled = as_bool(enabled)
        if self.enabled and not url:
            raise ValueError("stow true sends the DICOM results to a PACS: set --dicomweb_url too.")
        self.url = str(url or "").rstrip("/")
        self.outputs_key = outputs_key
        self.image_key = image_key
        self.num_sent = 0
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def send(self, paths: Sequence[str | Path]) -> list[str]:
        """STOW-RS ``paths`` to the server; their SOP Instance UIDs."""
        from monai_bigan.data.dicomweb import upload  # on use: `python -m monai_bigan.data.dicomweb` runs the module

        return upload(self.url, paths)

    def __call__(self, engine: Engine) -> None:
        from monai_bigan.data.dicomweb import DICOMwebError

        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            if not isinstance(item, dict) or ERROR_KEY in item:
                continue
            source = item_source(item, self.image_key)
            paths = item.get(self.outputs_key)
            try:
                if not paths:
                    raise ValueError(
                        f"no DICOM results to send ({self.outputs_key!r} is empty or missing): the bundle writes them "
                        "for DICOM series inputs unless its dicom_outputs setting is 'never'."
                    )
                uids = self.send([Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)])
            except (DICOMwebError, ValueError, OSError, ImportError) as e:
                message = f"{source}: sending its DICOM results to {self.url} failed: {e}"
                self.logger.error(message)
                # the report writes an error row and a record that a rerun retries
                item[ERROR_KEY], item[SOURCE_KEY] = message, source
                continue
            self.num_sent += len(uids)
            self.logger.info(f"{source}: sent {len(uids)} DICOM results to {self.url}.")
            item["stow_instances"] = uids
