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
MONAI Label train task of the BiGAN: unsupervised training on all datastore images.

MONAI Label's bundle trainer only trains on images that have a final label, which an anomaly detector never has.
This task takes every datastore image as healthy, holds out a share for validation and calibration, writes a
temporary data set folder with its ``datalist.json`` and runs the training bundle (``train.json``) through
:py:class:`monai.bundle.ConfigWorkflow` with ``bundle_root`` = the app's model folder. The checkpoint
(``models/model.pt``), the calibration (``models/calibration.json``) and the overrides the network was built with
(``models/configs_override.json``) land there, and the infer tasks reload them on their next call.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from monai.bundle import ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from monai_bigan.bundle import resolve_macro_paths
from monai_bigan.label.workflow import LabelBundle, write_training_datalist

__all__ = ["BiGANTrainTask"]

logger = logging.getLogger(__name__)


def _as_number(value: Any, name: str, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"train request: {name} must be a {kind.__name__}, got {value!r}.") from e


class BiGANTrainTask(TrainTask):
    """
    Trains the BiGAN on all datastore images (taken as healthy) with the training bundle.

    Request keys (``POST /train/bigan`` body or defaults from :py:meth:`config`): ``max_epochs``, ``val_split``
    (share held out for validation and calibration, at least one image), ``device`` (``"cpu"``, ``"cuda"``...),
    ``seed`` (of the split) and ``overrides`` (a JSON object, or its text, of further ``train.json`` overrides,
    e.g. network hyper-parameters; saved beside the model so inference builds the same network).

    Args:
        bundle: where the model lives and which configs and overrides build it.
        description: shown by MONAI Label clients.
    """

    def __init__(self, bundle: LabelBundle, description: str = "Unsupervised BiGAN training on all datastore images"):
        super().__init__(description)
        self.bundle = bundle
        self._last: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        parser = self.bundle.parser("train")
        return {
            "max_epochs": int(parser.get("max_epochs", 20)),
            "val_split": 0.2,
            "device": "cuda",
            "seed": 0,
            "overrides": "{}",
        }

    def stats(self) -> dict[str, Any]:
        stats = dict(self._last)
        if self.bundle.calibration_file.is_file():
            calibration = json.loads(self.bundle.calibration_file.read_text(encoding="utf-8"))
            stats.update(
                {
                    "model": str(self.bundle.ckpt_file),
                    "calibrated": calibration.get("created"),
                    "num_healthy_validation": len(calibration.get("healthy_scores", [])),
                    "threshold": calibration.get("threshold"),
                }
            )
        return stats

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        request = {**self.config(), **dict(request)}
        max_epochs = _as_number(request.get("max_epochs"), "max_epochs", int)
        val_split = _as_number(request.get("val_split"), "val_split", float)
        seed = _as_number(request.get("seed"), "seed", int)
        if max_epochs < 1:
            raise ValueError(f"train request: max_epochs must be at least 1, got {max_epochs}.")
        extra = request.get("overrides") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"train request: overrides must be a JSON object, got {extra!r}.")
        overrides = {**self.bundle.effective_overrides(), **extra}
        device = str(request.get("device") or "cpu")
        if device.startswith("cuda"):
            import torch

            device = device if torch.cuda.is_available() else "cpu"

        images = [datastore.get_image_uri(i) for i in datastore.list_images()]
        start = time.time()
        with tempfile.TemporaryDirectory(prefix="bigan_label_train_") as dataset_dir:
            datalist = write_training_datalist(images, dataset_dir, val_fraction=val_split, seed=seed)
            logger.info(
                f"Training BiGAN on {len(datalist['training'])} images, validating on {len(datalist['validation'])} "
                f"(all taken as healthy); bundle_root {self.bundle.bundle_root}; overrides {overrides}."
            )
            workflow = ConfigWorkflow(
                config_file=self.bundle.config_files("train"),
                workflow_type="train",
                run_id="training",
                **{
                    **overrides,
                    "bundle_root": str(self.bundle.bundle_root),
                    "dataset_dir": dataset_dir,
                    "max_epochs": max_epochs,
                    "device": f"$torch.device('{device}')",
                },
            )
            resolve_macro_paths(workflow.parser, self.bundle.config_files("train"))
            workflow.initialize()
            workflow.run()
            workflow.finalize()
        self.bundle.save_overrides(overrides)
        self._last = {
            "max_epochs": max_epochs,
            "num_training": len(datalist["training"]),
            "num_validation": len(datalist["validation"]),
            "device": device,
            "time_s": round(time.time() - start, 1),
            "overrides": overrides,
        }
        return {**self._last, "model": str(self.bundle.ckpt_file), "calibration": str(self.bundle.calibration_file)}
