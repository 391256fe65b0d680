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
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

import monai_bigan
from monai_bigan.label.infer import BiGANInferTask
from monai_bigan.label.train import BiGANTrainTask
from monai_bigan.label.workflow import InferenceModel, LabelBundle, ModelNotTrainedError

logger = logging.getLogger(__name__)

MODEL_NAMES = ("bigan", "bigan_heatmap")


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

    def init_infers(self) -> dict[str, InferTask]:
        outputs = {"bigan": "mask", "bigan_heatmap": "heatmap"}
        return {name: BiGANInferTask(self.inference_model, output=outputs[name]) for name in self.model_names}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {"bigan": BiGANTrainTask(self.bundle)}

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """Runs the infer task; a missing model is answered with HTTP 503 and the 'train first' message."""
        try:
            return super().infer(request, datastore)
        except ModelNotTrainedError as e:
            from fastapi import HTTPException

            raise HTTPException(status_code=503, detail=str(e)) from e
