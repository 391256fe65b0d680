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
MONAI Label app of the BiGAN anomaly detector::

    monailabel start_server --app monai_bigan/label --studies /data/scans --conf models bigan

``--conf`` options:

* ``models``: comma-separated infer models: ``bigan`` (uint8 anomaly mask, labels ``{"anomaly": 1}``; registers
  ``bigan_heatmap`` too, the float32 heatmap), ``bigan_heatmap`` alone, or ``all``. Default ``bigan``.
* ``bundle_root``: the model folder (``models/model.pt``, ``models/calibration.json``); default
  ``<app>/model/bigan``, created at start-up. Point it at a trained bundle root, e.g. ``bundles/bigan`` after the
  README's training command.
* ``config_dir``: folder of ``inference.json``/``train.json``; default the bundle root when it holds them, else
  the repository's ``bundles/bigan``.
* ``preset``: comma-separated config files layered on both configs, e.g. ``configs/brain_3d.json``.
* ``overrides``: JSON object of config overrides applied to both configs (network hyper-parameters...); they take
  precedence over ``<bundle_root>/models/configs_override.json``, which the train task writes.
* ``skip_trainers``: ``true`` for an infer-only app.
* ``modality``: the series a DICOMweb datastore lists (``--studies http://host:8042/dicom-web``); default ``MR``,
  empty for every series (it replaces MONAI Label's ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``, whose default is CT).

With a DICOMweb datastore (a PACS such as Orthanc), each series is read as its DICOM files, and every ``/infer`` of a
series writes its DICOM SEG, Parametric Map and Comprehensive 3D SR with highdicom and stores them in the PACS
(STOW-RS); their UIDs are in the result JSON under ``dicom``. ``/infer/bigan?output=dicom_seg`` returns the SEG.

The app is confined to its datastore (:py:mod:`monai_bigan.label.confinement`): ``/infer`` takes datastore image ids
only (a path, ``..``, a separator or an encoded one: 400; an id the datastore does not list: 404), checks its
parameters (400), and no upload or session is scored. Bad train parameters get 400 before a training process starts.
Clients never receive a traceback: failures answer with one line and a reference, and the tracebacks go to
``<app>/logs/errors.log`` (:py:mod:`monai_bigan.label.error_log`), which no endpoint serves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool
from monailabel.utils.sessions import Sessions

import monai_bigan
from monai_bigan.data.dicomweb import upload
from monai_bigan.exceptions import TrainingLockedError
from monai_bigan.label.confinement import (
    DisabledSessions,
    check_image_id,
    check_infer_params,
    guard_train_endpoints,
    infer_save_label,
    resolve_image,
)
from monai_bigan.label.dicom import (
    DICOM_DIR_KEY,
    dicom_output_summary,
    new_request_folder,
    remove_request_folder,
    route_dicom_seg,
    seg_file,
)
from monai_bigan.label.error_log import ErrorLog, first_line
from monai_bigan.label.infer import BiGANInferTask
from monai_bigan.label.train import BiGANTrainTask, TrainRequestError
from monai_bigan.label.workflow import DICOM_FILES_KEY, InferenceModel, LabelBundle, ModelNotTrainedError

logger = logging.getLogger(__name__)

MODEL_NAMES = ("bigan", "bigan_heatmap")
#: ``--conf`` key of the modality a DICOMweb datastore lists (empty: every series)
CONF_MODALITY = "modality"
DEFAULT_MODALITY = "MR"


def _requested_models(value: str | None) -> list[str]:
    """Infer model names from ``--conf models``; ``bigan`` brings ``bigan_heatmap`` along."""
    names = [n.strip() for n in (value or "bigan").split(",") if n.strip()]
    if "all" in names:
        return list(MODEL_NAMES)
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"--conf models: unknown model(s) {unknown}; available: {', '.join(MODEL_NAMES)} or all.")
    if "bigan" in names and "bigan_heatmap" not in names:
        names.append("bigan_heatmap")
    return names


class BiGANApp(MONAILabelApp):
    """
    MONAI Label app serving the BiGAN bundle: infer models ``bigan`` (anomaly mask) and ``bigan_heatmap`` (float
    heatmap), and the unsupervised train task ``bigan``.

    Args:
        app_dir: the app folder (``monai_bigan/label``).
        studies: the datastore (folder of NIfTI files, or a DICOMweb URL).
        conf: the ``--conf`` options (see the module docstring).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        # first, so that even a failing start-up reports one line, not a traceback, to the training status
        self.error_log = ErrorLog.for_app(app_dir)
        self.error_log.install()
        self._no_sessions: DisabledSessions | None = None
        self.bundle = LabelBundle.from_conf(app_dir, conf)
        self.model_names = _requested_models(conf.get("models"))
        self.inference_model = InferenceModel(self.bundle)
        logger.info(
            f"BiGAN app: models {self.model_names}; bundle_root {self.bundle.bundle_root}; configs "
            f"{self.bundle.config_dir}; presets {self.bundle.presets}; overrides {self.bundle.effective_overrides()}"
        )
        if not self.bundle.ckpt_file.is_file():
            logger.warning(f"No trained model yet ({self.bundle.ckpt_file}): train first (POST /train/bigan).")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_bigan",
            description="BiGAN unsupervised anomaly detection (research use only)",
            version=monai_bigan.__version__,
            labels={"anomaly": 1},
        )

    def init_remote_datastore(self) -> Datastore:
        """
        MONAI Label's remote datastore; a DICOMweb one hands over each series as its DICOM files, not converted to
        NIfTI, so that the scan is read as the inference bundle reads it and the SEG, Parametric Map and SR
        reference the very instances that were scored.
        """
        if settings.MONAI_LABEL_DATASTORE.lower() not in ("xnat", "dsa"):
            settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI = False
            # MONAI Label lists CT series by default; this model scores the modality it was trained on
            modality = self.conf.get(CONF_MODALITY, DEFAULT_MODALITY)
            settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER = {"Modality": modality} if modality else {}
            logger.info(f"DICOMweb datastore: series matching {settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER}")
        return super().init_remote_datastore()

    def _download_dcmqi_tools(self) -> None:
        """
        Nothing to fetch: MONAI Label downloads dcmqi from GitHub for a DICOMweb datastore (its own DICOM SEG
        writer), which fails offline; this app writes its DICOM SEG, Parametric Map and SR with highdicom.
        """
        logger.info("DICOM outputs are written with highdicom: MONAI Label's dcmqi download is not needed.")

    def init_infers(self) -> dict[str, InferTask]:
        outputs = {"bigan": "mask", "bigan_heatmap": "heatmap"}
        return {name: BiGANInferTask(self.inference_model, output=outputs[name]) for name in self.model_names}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {"bigan": BiGANTrainTask(self.bundle)}

    def on_init_complete(self) -> None:
        """Server start: train parameters are checked before MONAI Label starts a training process."""
        server = sys.modules.get("monailabel.app")  # the FastAPI app of `monailabel start_server`
        if server is not None and hasattr(server, "app"):
            guard_train_endpoints(server.app, self.check_train_request)
            route_dicom_seg(server.app, self.infer, list(self._infers))
        else:
            logger.warning("Not served by monailabel.app: train parameters are checked by the training task only.")
        super().on_init_complete()

    def sessions(self) -> Sessions | None:
        """No sessions (uploads kept on the server): the app scores datastore images only."""
        if not settings.MONAI_LABEL_SESSIONS:
            return None
        if self._no_sessions is None:
            self._no_sessions = DisabledSessions(settings.MONAI_LABEL_SESSION_PATH, settings.MONAI_LABEL_SESSION_EXPIRY)
        return self._no_sessions

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """
        Scores the datastore image ``request["image"]`` (an id, never a path) with model ``request["model"]``.

        Raises:
            HTTPException: 400 bad image id or parameter; 404 unknown model or image; 503 no trained model yet;
                500 any other failure, with a reference to the traceback in the error log.
        """
        model, image_id = request.get("model"), request.get("image")
        try:
            if not isinstance(model, str) or model not in self._infers:
                raise HTTPException(
                    status_code=404,
                    detail=f"model {first_line(repr(model))} is not served by this app "
                    f"(models: {', '.join(self._infers)})",
                )
            check_infer_params(request)
            image_id = check_image_id(image_id)
            datastore = datastore or self.datastore()
            image_uri = resolve_image(datastore, image_id)
            wants_seg = request.pop("output", None) == "dicom_seg"
            dicom_dir = new_request_folder()
            try:
                # MONAI Label's infer takes an existing path as is: hand it the datastore's file, save the label here
                result = super().infer(
                    {**request, "image": image_uri, "save_label": False, DICOM_DIR_KEY: dicom_dir}, datastore
                )
                self._store_dicom_outputs(result, datastore, image_id, wants_seg)
            finally:
                remove_request_folder(dicom_dir)
            if infer_save_label(request) and result.get("file"):
                tag = request.get("label_tag", DefaultLabelTag.ORIGINAL)
                result["label"] = datastore.save_label(
                    image_id, result["file"], tag, {"model": model, "params": result["params"]}
                )
            return result
        except HTTPException:
            raise
        except ModelNotTrainedError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        except Exception as e:
            shown = first_line(repr(image_id))
            ref = self.error_log.report(logger, f"inference of image {shown} with model {model!r} failed", e)
            raise HTTPException(
                status_code=500,
                detail=f"inference of image {shown} failed (error ref {ref}; details in the server's error log)",
            ) from None

    def _store_dicom_outputs(self, result: dict[str, Any], datastore: Any, image_id: str, wants_seg: bool) -> None:
        """
        Replaces the paths of the request's DICOM objects in the result JSON by their UIDs (``params["dicom"]``),
        sends them to the DICOMweb datastore (STOW-RS), and puts the SEG's bytes in ``result["dicom_seg"]`` when the
        client asked for ``output=dicom_seg``.

        Raises:
            HTTPException: 400 when ``output=dicom_seg`` is asked for an image that is not a DICOM series.
        """
        params = result.get("params") if isinstance(result.get("params"), dict) else {}
        files = params.pop(DICOM_FILES_KEY, None) or []
        if wants_seg:
            seg = seg_file(files)
            if seg is None:
                raise HTTPException(
                    status_code=400,
                    detail=f"image {first_line(repr(image_id))} is not a DICOM series: no DICOM SEG (use output=image)",
                )
            result["dicom_seg"] = Path(seg).read_bytes()
        if not files:
            return
        summary: dict[str, Any] = dict(dicom_output_summary(files))
        summary["stored"] = False
        if isinstance(datastore, DICOMWebDatastore):
            upload(self.studies, files)
            summary["stored"] = True
            logger.info(f"Stored the SEG, Parametric Map and SR of {image_id} in {self.studies}.")
        params["dicom"] = summary

    def check_train_request(self, model: str, params: Mapping[str, Any]) -> None:
        """
        Checks the parameters of a train request for ``model`` (none of this app's trainers: nothing to check).

        Raises:
            HTTPException: 400 naming the bad parameter.
        """
        task = self._trainers.get(model)
        if isinstance(task, BiGANTrainTask):
            try:
                task.check_request(params)
            except TrainRequestError as e:
                raise HTTPException(status_code=400, detail=str(e)) from None

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """
        Runs the train task (in MONAI Label's training process, or in the server with ``run_sync``).

        Raises:
            HTTPException: 400 bad parameter; 409 another training holds the model folder; 500 any other failure, with a reference to the traceback in the error
                log. In the training process, the exception hook prints the detail as the last status line.
        """
        model = request.get("model")
        # `POST /train/` merges every model's parameter block into the request: keep the task's own keys only
        own = {k: v for k, v in request.items() if k not in self._trainers}
        try:
            return super().train(own)
        except HTTPException:
            raise
        except TrainRequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        except TrainingLockedError as e:  # another training holds the model folder: a conflict, not a server fault
            raise HTTPException(status_code=409, detail=first_line(e)) from None
        except Exception as e:
            ref = self.error_log.report(logger, f"training of model {model!r} failed", e)
            raise HTTPException(
                status_code=500,
                detail=f"training of model {model!r} failed: {first_line(e) or type(e).__name__} (error ref {ref}; "
                "details in the server's error log)",
            ) from None
