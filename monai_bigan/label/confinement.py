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
What the MONAI Label app accepts from clients: datastore image ids only, and checked request parameters.

MONAI Label's own ``infer`` takes any image id that names an existing file as a path, and resolves the others with
the datastore. The app resolves ids with the datastore's id list only, and refuses a request before any filesystem
access for the requested id, so a refusal takes the same time whether or not a path of that name exists:

* a malformed id (empty, a path, ``..``, a separator, NUL or control characters, percent-encoding) gets HTTP 400;
* a well-formed id that the datastore does not list gets HTTP 404 (``image 'xyz' is not in the datastore``);
* a bad parameter (wrong type, out of range, or a key the server sets itself) gets HTTP 400.

The train endpoints of MONAI Label start the training process before the task sees its parameters:
:py:func:`guard_train_endpoints` checks them first, so bad ones get HTTP 400 instead of a failed task.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import Datastore
from monailabel.utils.sessions import Sessions

from monai_bigan.label.dicom import DICOM_DIR_KEY

__all__ = [
    "DisabledSessions",
    "check_image_id",
    "check_infer_params",
    "guard_train_endpoints",
    "infer_save_label",
    "resolve_image",
]

logger = logging.getLogger(__name__)

_MAX_ID_LENGTH = 255
# anything that makes an id a path or hides one: separators, drive/URL colons, NUL and control characters
_PATH_CHARACTERS = re.compile(r"[/\\:\x00-\x1f\x7f]")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DEVICE = re.compile(r"(cpu|cuda(:\d{1,2})?)")
_LABEL_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
_RESULT_DTYPES = ("uint8", "int16", "int32", "float32", "float64")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
#: request keys MONAI Label or the task set from server-side files: never taken from clients
_SERVER_KEYS = (
    "image_path",
    "model_filename",
    "skip_writer",
    "result_write_to_file",
    "bundle_path",
    DICOM_DIR_KEY,  # the request's folder of DICOM outputs
)
#: what MONAI Label's infer endpoint adds for uploads (a label file, a session): server paths this app does not serve
_UPLOAD_KEYS = ("label", "session")
_NO_UPLOADS = (
    "uploads and sessions are not supported: this app scores datastore images only (add the scan with "
    "PUT /datastore/ and infer on its id)"
)


def _refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def check_image_id(image_id: Any) -> str:
    """
    ``image_id`` if it is a well-formed datastore id. Looks at the string only: never at the filesystem.

    Raises:
        HTTPException: 400 when the id is missing, not a string, too long, a path or encodes one.
    """
    if image_id is None or image_id == "":
        raise _refuse(400, "infer request: no image id given.")
    if not isinstance(image_id, str):
        raise _refuse(400, "infer request: the image must be a datastore image id (a string).")
    if (
        len(image_id) > _MAX_ID_LENGTH
        or _PATH_CHARACTERS.search(image_id)
        or ".." in image_id
        or image_id.startswith("~")
        or _PERCENT_ESCAPE.search(image_id)
    ):
        # the id is not echoed: it may be a long or binary string, or a server path of an upload
        raise _refuse(400, f"infer request: the image must be a datastore image id, not a file path; {_NO_UPLOADS}.")
    return image_id


def resolve_image(datastore: Datastore, image_id: str) -> str:
    """
    The file (or DICOM series folder) of datastore image ``image_id``, found through the datastore's id list.

    Raises:
        HTTPException: 404 when the datastore does not list ``image_id``.
    """
    uri = datastore.get_image_uri(image_id) if image_id in datastore.list_images() else ""
    if not uri:
        raise _refuse(404, f"image {image_id!r} is not in the datastore")
    return uri


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _is_device(value: Any) -> bool:
    if value is None:
        return True
    values = value if isinstance(value, (list, tuple)) and value else [value]
    return all(isinstance(v, str) and _DEVICE.fullmatch(v) for v in values)


def _is_timeout(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


_INFER_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "device": (_is_device, "'cpu', 'cuda' or 'cuda:N'"),
    "result_extension": (lambda v: v in _RESULT_EXTENSIONS, f"one of {', '.join(_RESULT_EXTENSIONS)}"),
    "result_dtype": (lambda v: v in _RESULT_DTYPES, f"one of {', '.join(_RESULT_DTYPES)}"),
    "result_compress": (lambda v: _as_bool(v) is not None, "true or false"),
    "save_label": (lambda v: _as_bool(v) is not None, "true or false"),
    "label_tag": (lambda v: isinstance(v, str) and _LABEL_TAG.fullmatch(v) is not None, "a plain label tag name"),
    "logging": (lambda v: isinstance(v, str) and v.upper() in _LOG_LEVELS, f"one of {', '.join(_LOG_LEVELS)}"),
    "timeout": (_is_timeout, "a positive number of seconds"),
}


def check_infer_params(request: Mapping[str, Any]) -> None:
    """
    Checks the parameters of an infer request (the ``params`` JSON merged into the request by MONAI Label).

    Keys this app does not use are ignored, except those the server sets itself (``image_path``,
    ``model_filename``...) and the upload keys (``label``, ``session``), which are refused.

    Raises:
        HTTPException: 400 naming the first bad parameter.
    """
    for key in _UPLOAD_KEYS:
        if request.get(key):
            raise _refuse(400, f"infer request: {_NO_UPLOADS}.")
    for key in _SERVER_KEYS:
        if key in request:
            raise _refuse(400, f"infer request: parameter {key!r} is set by the server, not by clients.")
    for key, (is_valid, expected) in _INFER_CHECKS.items():
        if key in request and not is_valid(request[key]):
            raise _refuse(400, f"infer request: {key} must be {expected}, got {_short(request[key])}.")


def infer_save_label(request: Mapping[str, Any]) -> bool:
    """Whether a (checked) infer request asks to save its label in the datastore."""
    return bool(_as_bool(request.get("save_label", False)))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DisabledSessions(Sessions):
    """
    No sessions: MONAI Label sessions keep uploaded images on the server, and this app scores datastore images only.

    Session ids are never looked up on disk (MONAI Label joins them to its session folder unchecked); creating one
    is answered with HTTP 406 after MONAI Label's own clean-up of the upload.
    """

    def get_session(self, session_id: str, update_ts: bool = True, fetch_cache: bool = True) -> None:
        return None

    def add_session(self, data_file: str, expiry: int = 0, uncompress: bool = False, session_id: Any = None) -> Any:
        # let MONAI Label move the upload into a fresh session of its own naming, then drop it
        new_id, _ = super().add_session(data_file, expiry, uncompress)
        super().remove_session(new_id)
        raise _refuse(406, f"session request: {_NO_UPLOADS}.")

    def remove_session(self, session_id: str) -> None:
        return None

    def remove_expired(self) -> int:
        return 0


_GUARD_NAME = "monai_bigan_train_guard"


def guard_train_endpoints(app: FastAPI, check: Callable[[str, Mapping[str, Any]], None]) -> None:
    """
    Puts ``check(model, params)`` in front of MONAI Label's ``POST /train/{model}`` and ``POST /train/``, so that
    bad training parameters are answered with the HTTPException ``check`` raises (400) before a training process
    starts. Idempotent: earlier guards are replaced.

    Args:
        app: MONAI Label's FastAPI app (``monailabel.app.app``).
        check: raises :py:class:`fastapi.HTTPException` for bad parameters of ``model``.
    """
    from monailabel.endpoints import train as train_endpoints

    admin = RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)

    async def run_model(
        model: str,
        params: Optional[dict] = None,
        run_sync: Optional[bool] = False,
        enqueue: Optional[bool] = False,
        user: User = Depends(admin),
    ) -> Any:
        check(model, params or {})
        return train_endpoints.run_model(model, params, run_sync, enqueue)

    async def run_all(
        params: Optional[dict] = None,
        run_sync: Optional[bool] = False,
        user: User = Depends(admin),
    ) -> Any:
        for model, model_params in (params or {}).items():
            if isinstance(model_params, Mapping):
                check(model, model_params)
        return train_endpoints.run(params, run_sync)

    router = APIRouter(prefix=f"{settings.MONAI_LABEL_API_STR}/train")
    router.add_api_route("/{model}", run_model, methods=["POST"], name=_GUARD_NAME, include_in_schema=False)
    router.add_api_route("/", run_all, methods=["POST"], name=_GUARD_NAME, include_in_schema=False)
    routes = [r for r in app.router.routes if getattr(r, "name", None) != _GUARD_NAME]
    # Starlette matches routes in order: the guards go before MONAI Label's own train routes
    app.router.routes[:] = list(router.routes) + routes
    logger.info("Train parameters are checked before the training process starts.")
