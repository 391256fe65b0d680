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
import math
import re
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import torch
from monai.bundle import ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from monai_bigan.bundle import bundle_config_parser, resolve_macro_paths
from monai_bigan.label.workflow import LabelBundle, write_training_datalist

__all__ = ["BiGANTrainTask", "TRAIN_PARAMETERS", "TrainRequestError"]

logger = logging.getLogger(__name__)

#: the parameters of a train request
TRAIN_PARAMETERS = ("max_epochs", "val_split", "device", "seed", "overrides")
#: keys MONAI Label itself puts in a train request
_MONAI_LABEL_KEYS = ("model", "gpus", "local_rank")
_MAX_EPOCHS = 100_000
_MAX_SEED = 2**32 - 1
_INTEGER = re.compile(r"\s*[+-]?\d{1,12}\s*")
_DEVICE = re.compile(r"cpu|cuda(:\d{1,2})?")
_GPUS = re.compile(r"all|\d{1,2}(,\d{1,2})*")
# config values starting with these are expressions, references or macros: code and file access, not data
_CONFIG_SYNTAX = ("$", "@", "%")


class TrainRequestError(ValueError):
    """A train request the task refuses; the app answers it with HTTP 400."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrainRequestError(f"train request: {name} must be an integer, got {_short(value)}.")
    if not low <= value <= high:
        raise TrainRequestError(f"train request: {name} must be between {low} and {high}, got {value}.")
    return value


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TrainRequestError(f"train request: {name} must be a number, got {_short(value)}.")
    if not 0.0 < value < 1.0:
        raise TrainRequestError(f"train request: {name} must be between 0 and 1 (exclusive), got {value}.")
    return float(value)


def _device(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise TrainRequestError(f"train request: device must be 'cpu', 'cuda' or 'cuda:N', got {_short(value)}.")
    if not value.startswith("cuda") or not torch.cuda.is_available():
        return "cpu" if value.startswith("cuda") else value
    index = int(value.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise TrainRequestError(f"train request: device {value} does not exist ({torch.cuda.device_count()} GPUs).")
    return value


def _is_plain(value: Any) -> bool:
    """Whether a config value is plain JSON data (no expression, reference, macro or component)."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return not value.startswith(_CONFIG_SYNTAX)
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and not k.startswith("_") and _is_plain(v) for k, v in value.items())
    return False


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default``: same JSON kind (an integer for a float; anything for null)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    for kind in (int, str, list, dict):
        if isinstance(default, kind):
            return isinstance(value, kind)
    return False


class BiGANTrainTask(TrainTask):
    """
    Trains the BiGAN on all datastore images (taken as healthy) with the training bundle.

    Request keys (``POST /train/bigan`` body or defaults from :py:meth:`config`): ``max_epochs`` (1 to 100000),
    ``val_split`` (share held out for validation and calibration, in (0, 1), at least one image), ``device``
    (``"cpu"``, ``"cuda"`` or ``"cuda:N"``), ``seed`` (of the split) and ``overrides`` (a JSON object, or its text, of
    further ``train.json`` overrides, e.g. network hyper-parameters; saved beside the model so inference builds the
    same network). :py:meth:`check_request` refuses anything else with :py:class:`TrainRequestError`.

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

    def tunable_defaults(self) -> dict[str, Any]:
        """
        The ``train.json`` keys a request may override, with their defaults: those whose value in the config files
        is plain data. Paths (``bundle_root``...), components and expressions are not open to clients.
        """
        parser = bundle_config_parser(self.bundle.config_files("train"))
        parser.resolve_macro_and_relative_ids()  # "%common.json#key" becomes the value; expressions stay text
        return {key: value for key, value in parser.get().items() if _is_plain(value)}

    def check_overrides(self, overrides: Any) -> dict[str, Any]:
        """
        The ``overrides`` of a request as a dict: known tunable keys (:py:meth:`tunable_defaults`) whose new values
        are plain data of the default's kind.

        Raises:
            TrainRequestError: not a JSON object, an unknown or closed key, or a value of the wrong kind.
        """
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides) if overrides.strip() else {}
            except json.JSONDecodeError as e:
                raise TrainRequestError(
                    f"train request: overrides is not valid JSON ({e.msg} at char {e.pos})."
                ) from None
        if overrides is None:
            return {}
        if not isinstance(overrides, Mapping):
            raise TrainRequestError(f"train request: overrides must be a JSON object, got {_short(overrides)}.")
        tunable = self.tunable_defaults()
        for key, value in overrides.items():
            if key not in tunable:
                raise TrainRequestError(
                    f"train request: overrides key {_short(key)} is not a tunable train.json key "
                    "(plain hyper-parameters only; paths, components and expressions are fixed)."
                )
            if not _is_plain(value) or not _same_kind(tunable[key], value):
                raise TrainRequestError(
                    f"train request: overrides {key} must be plain data like its default {_short(tunable[key])}, "
                    f"got {_short(value)}."
                )
        return dict(overrides)

    def check_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """
        The checked parameters of a train request, defaults (:py:meth:`config`) filled in, ``device`` falling back
        to the CPU without CUDA. Looks at values only: no file or datastore access.

        Raises:
            TrainRequestError: an unknown key, a value of the wrong type or out of range, bad ``overrides``.
        """
        unknown = sorted(set(request) - set(TRAIN_PARAMETERS) - set(_MONAI_LABEL_KEYS), key=str)
        if unknown:
            raise TrainRequestError(
                f"train request: unknown parameter(s) {_short(unknown)}; known: {', '.join(TRAIN_PARAMETERS)}."
            )
        gpus = request.get("gpus", "all")
        if not isinstance(gpus, str) or not _GPUS.fullmatch(gpus):
            raise TrainRequestError(f"train request: gpus must be 'all' or GPU indices like '0,1', got {_short(gpus)}.")
        values = {**self.config(), **{k: v for k, v in request.items() if k in TRAIN_PARAMETERS}}
        return {
            "max_epochs": _integer(values["max_epochs"], "max_epochs", 1, _MAX_EPOCHS),
            "val_split": _fraction(values["val_split"], "val_split"),
            "device": _device(values["device"]),
            "seed": _integer(values["seed"], "seed", 0, _MAX_SEED),
            "overrides": self.check_overrides(values["overrides"]),
        }

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        checked = self.check_request(request)
        max_epochs, val_split, seed, device = (checked[k] for k in ("max_epochs", "val_split", "seed", "device"))
        overrides = {**self.bundle.effective_overrides(), **checked["overrides"]}

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
