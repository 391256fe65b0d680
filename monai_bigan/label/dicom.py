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
DICOM outputs of the MONAI Label app: the SEG, Parametric Map and SR of a scored DICOM series
(:py:class:`monai_bigan.transforms.SaveDicomResultsd`, the inference bundle's writer), stored back into the DICOMweb
datastore by STOW-RS, and ``/infer/{model}?output=dicom_seg`` answered with this app's SEG.

MONAI Label's own ``dicom_seg`` output converts the NIfTI label with dcmqi, which it downloads from GitHub at start-up
and which needs a ``label_info`` parameter; this app answers ``output=dicom_seg`` for its models itself, with the
highdicom SEG written by the same transform as the batch outputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pydicom
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User

__all__ = [
    "DICOM_DIR_KEY",
    "DicomOutputFolder",
    "dicom_output_summary",
    "kind_of",
    "new_request_folder",
    "remove_request_folder",
    "route_dicom_seg",
    "seg_file",
]

logger = logging.getLogger(__name__)

#: request key of the temporary folder the DICOM objects of one request are written to (set by the app only)
DICOM_DIR_KEY = "bigan_dicom_dir"
#: the kind of each object, from the postfix of its file name
_KINDS = {"_seg.dcm": "seg", "_pmap.dcm": "pmap", "_sr.dcm": "sr"}
_ROUTE_NAME = "monai_bigan_dicom_seg"


class DicomOutputFolder:
    """
    Names the DICOM objects of one infer request in a folder of its own (the ``outputs`` of
    :py:class:`monai_bigan.transforms.SaveDicomResultsd`): ``<folder>/<input name>_<postfix><extension>``.

    Args:
        folder: an empty folder that belongs to the request (removed by the app after the upload).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def output_path(self, source: str | os.PathLike, postfix: str, extension: str) -> Path:
        """The file of output ``postfix`` of ``source`` (its folder is created)."""
        path = self.folder / f"{Path(str(source).rstrip('/')).name}_{postfix}{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def kind_of(path: str | os.PathLike) -> str | None:
    """``"seg"``, ``"pmap"`` or ``"sr"`` for an object written by SaveDicomResultsd, else None (an input instance)."""
    name = str(path)
    return next((kind for postfix, kind in _KINDS.items() if name.endswith(postfix)), None)


def dicom_output_summary(paths: Sequence[str | os.PathLike]) -> dict[str, dict[str, str]]:
    """
    The UIDs of each DICOM object, for the result JSON: ``{"seg": {"StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID", "SOPClassUID"}, "pmap": ..., "sr": ...}``.
    """
    summary = {}
    for path in paths:
        kind = kind_of(path)
        if kind is None:
            continue
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        summary[kind] = {
            key: str(ds.get(key, ""))
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality")
        }
    return summary


def new_request_folder() -> str:
    """A fresh temporary folder for the DICOM objects of one request."""
    return tempfile.mkdtemp(prefix="monai_bigan_dicom_")


def remove_request_folder(folder: str | os.PathLike | None) -> None:
    """Remove the temporary folder of a request (never fails the request)."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def route_dicom_seg(app: FastAPI, infer: Callable[[dict[str, Any]], dict[str, Any]], models: Sequence[str]) -> None:
    """
    Answers ``POST /infer/{model}?output=dicom_seg`` for this app's ``models`` with the SEG that ``infer`` wrote
    (``application/dicom``; the scores stay in the SEG's study as the SR, and in ``output=json``); every other call goes
    to MONAI Label's own infer endpoint unchanged. Idempotent: an earlier route is replaced.

    Args:
        app: MONAI Label's FastAPI app (``monailabel.app.app``).
        infer: runs a request (the app's ``infer``) and returns its result with ``result["dicom_seg"]``, the bytes of
            the SEG, when ``request["output"] == "dicom_seg"``.
        models: the model names answered here.
    """
    user = RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)
    served = set(models)

    async def run(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: Optional[ResultType] = None,
        user: User = Depends(user),
    ) -> Any:
        if output != ResultType.dicom_seg or model not in served:
            return run_inference(background_tasks, model, image, session_id, params, file, label, output)
        if file or label or session_id:
            raise HTTPException(status_code=400, detail="output=dicom_seg scores datastore images only (no upload).")
        try:
            extra = json.loads(params) if params else {}
        except json.JSONDecodeError as e:
            raise HTTPException(status_code=400, detail=f"params is not valid JSON ({e.msg}).") from None
        if not isinstance(extra, dict):
            raise HTTPException(status_code=400, detail="params must be a JSON object.")
        result = infer({**extra, "model": model, "image": image, "output": "dicom_seg"})
        seg = result.get("dicom_seg")
        if not seg:
            raise HTTPException(status_code=500, detail="no DICOM SEG was written for this image.")
        return Response(
            content=seg,
            media_type="application/dicom",
            headers={"Content-Disposition": f'attachment; filename="{image}_seg.dcm"'},
        )

    router = APIRouter(prefix=f"{settings.MONAI_LABEL_API_STR}/infer")
    router.add_api_route(
        "/{model}",
        run,
        methods=["POST"],
        name=_ROUTE_NAME,
        summary=f"{RBAC_USER}Run Inference (DICOM SEG by highdicom)",
    )
    routes = [r for r in app.router.routes if getattr(r, "name", None) != _ROUTE_NAME]
    # Starlette matches routes in order: this one goes before MONAI Label's own infer route
    app.router.routes[:] = list(router.routes) + routes
    logger.info(f"output=dicom_seg of models {sorted(served)} is answered with the app's highdicom SEG.")


def seg_file(paths: Sequence[str | os.PathLike]) -> str | None:
    """The SEG among the written objects."""
    return next((str(p) for p in paths if kind_of(p) == "seg"), None)
