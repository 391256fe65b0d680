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
The bundle side of the MONAI Label app, without importing MONAI Label: where the model lives, which configs and
overrides apply, the inference workflow's transforms, inferer and network parsed from ``inference.json``, and the
data set folder that training runs on.

Everything here reuses the bundle configs (``bundles/bigan/inference.json`` and ``train.json``) through
:py:class:`monai.bundle.ConfigParser` and :py:class:`monai.bundle.ConfigWorkflow`, so the app scores a scan exactly as
``python -m monai.bundle run --config_file bundles/bigan/inference.json`` does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from monai_bigan.bundle import ModelMismatchError, bundle_config_parser
from monai_bigan.data.datalist import DATALIST_FILENAME
from monai_bigan.io.atomic import atomic_write_text

__all__ = [
    "DICOM_FILES_KEY",
    "OVERRIDES_FILENAME",
    "SKIPPED_POSTPROCESSING",
    "ModelNotTrainedError",
    "LabelBundle",
    "InferenceWorkflow",
    "InferenceModel",
    "LabelResultd",
    "write_training_datalist",
]

logger = logging.getLogger(__name__)

#: result key of the DICOM objects written for a request (the app uploads them and reports their UIDs instead)
DICOM_FILES_KEY = "dicom_files"
#: file beside the checkpoint holding the config overrides (network hyper-parameters...) the model was trained with
OVERRIDES_FILENAME = "configs_override.json"
#: post-processing transforms of ``inference.json`` that write files: MONAI Label writes the result itself, and the
#: infer task adds its own DICOM writer (monai_bigan.label.infer)
SKIPPED_POSTPROCESSING = ("SaveImaged", "SaveImage", "ReviewSheetd", "SaveDicomResultsd")
#: ``--conf`` keys the app understands
CONF_BUNDLE_ROOT = "bundle_root"
CONF_CONFIG_DIR = "config_dir"
CONF_PRESET = "preset"
CONF_OVERRIDES = "overrides"
DEFAULT_MODEL_NAME = "bigan"


class ModelNotTrainedError(FileNotFoundError):
    """The model folder holds no trained checkpoint (or no calibration): the app must be trained first."""


def _shipped_bundle() -> Path:
    """``bundles/bigan`` of the source checkout beside the package."""
    return Path(__file__).resolve().parents[2] / "bundles" / "bigan"


def _find_config_dir(bundle_root: Path, config_dir: str | None) -> Path:
    """The folder holding ``inference.json`` and ``train.json``: explicit, in the bundle root, or the shipped bundle."""
    if config_dir:
        candidates = [Path(config_dir).expanduser()]
    else:
        candidates = [bundle_root, bundle_root / "configs", _shipped_bundle()]
    for folder in candidates:
        if (folder / "inference.json").is_file() and (folder / "train.json").is_file():
            return folder.resolve()
    raise FileNotFoundError(
        "no bundle configs (inference.json and train.json) found in "
        + ", ".join(str(c) for c in candidates)
        + ": pass --conf config_dir DIR pointing at the folder of the bigan bundle (bundles/bigan in the repository)."
    )


def _parse_overrides(value: str | Mapping | None, where: str) -> dict[str, Any]:
    """Overrides given as a JSON object text (``--conf overrides '{...}'``), a mapping or None."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not valid JSON ({e.msg} at char {e.pos}): {value!r}") from e
    if not isinstance(parsed, dict):
        raise ValueError(f"{where} must be a JSON object of config keys and values, got {type(parsed).__name__}.")
    return parsed


@dataclass
class LabelBundle:
    """
    Where the app's model lives and which configs and overrides build it.

    Attributes:
        bundle_root: the model folder: checkpoints in ``<bundle_root>/models/model.pt``, calibration in
            ``<bundle_root>/models/calibration.json``; training writes there, inference reads there.
        config_dir: folder holding ``inference.json`` and ``train.json``.
        presets: further config files layered on both configs (e.g. ``configs/brain_3d.json``).
        overrides: config overrides given at start-up (``--conf overrides '{...}'``); they take precedence over the
            overrides saved beside the model (``<bundle_root>/models/configs_override.json``).
    """

    bundle_root: Path
    config_dir: Path
    presets: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_conf(cls, app_dir: str | os.PathLike, conf: Mapping[str, str] | None = None) -> LabelBundle:
        """
        Settings from MONAI Label's ``--conf`` options.

        * ``bundle_root``: model folder; default ``<app_dir>/model/bigan`` (created when missing).
        * ``config_dir``: folder of ``inference.json``/``train.json``; default the bundle root when it holds them
          (or its ``configs/``), else the repository's ``bundles/bigan``.
        * ``preset``: comma-separated config files layered on both configs, e.g. ``configs/brain_3d.json``.
        * ``overrides``: a JSON object of config overrides, e.g. ``'{"channels": [4, 8], "strides": [2, 2]}'``.

        Raises:
            FileNotFoundError: a preset or the config folder does not exist.
            ValueError: ``overrides`` is not a JSON object.
        """
        conf = dict(conf or {})
        root = conf.get(CONF_BUNDLE_ROOT) or os.path.join(app_dir, "model", DEFAULT_MODEL_NAME)
        bundle_root = Path(root).expanduser().resolve()
        bundle_root.mkdir(parents=True, exist_ok=True)
        presets = [p.strip() for p in (conf.get(CONF_PRESET) or "").split(",") if p.strip()]
        for preset in presets:
            if not Path(preset).is_file():
                raise FileNotFoundError(f"preset config {preset!r} (--conf {CONF_PRESET}) does not exist.")
        return cls(
            bundle_root=bundle_root,
            config_dir=_find_config_dir(bundle_root, conf.get(CONF_CONFIG_DIR)),
            presets=[str(Path(p).resolve()) for p in presets],
            overrides=_parse_overrides(conf.get(CONF_OVERRIDES), f"--conf {CONF_OVERRIDES}"),
        )

    @property
    def ckpt_dir(self) -> Path:
        return self.bundle_root / "models"

    @property
    def ckpt_file(self) -> Path:
        return self.ckpt_dir / "model.pt"

    @property
    def calibration_file(self) -> Path:
        return self.ckpt_dir / "calibration.json"

    @property
    def overrides_file(self) -> Path:
        return self.ckpt_dir / OVERRIDES_FILENAME

    def config_files(self, name: str) -> list[str]:
        """The config files of ``name`` (``"inference"`` or ``"train"``), presets layered on top."""
        return [str(self.config_dir / f"{name}.json")] + list(self.presets)

    def saved_overrides(self) -> dict[str, Any]:
        """Overrides saved beside the model by the train task (empty when none)."""
        if not self.overrides_file.is_file():
            return {}
        return _parse_overrides(self.overrides_file.read_text(encoding="utf-8"), str(self.overrides_file))

    def effective_overrides(self) -> dict[str, Any]:
        """Saved overrides updated by the start-up overrides."""
        return {**self.saved_overrides(), **self.overrides}

    def save_overrides(self, overrides: Mapping[str, Any]) -> Path:
        """Write ``overrides`` beside the model, so that inference builds the network the model was trained with."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.overrides_file, json.dumps(dict(overrides), indent=2, sort_keys=True))

    def require_model(self) -> None:
        """
        Raise :py:class:`ModelNotTrainedError` naming the missing file when the model folder is not trained.
        """
        for path in (self.ckpt_file, self.calibration_file):
            if not path.is_file():
                raise ModelNotTrainedError(
                    f"train first: {path} not found. Train the app's model (POST /train/bigan with a JSON body such as "
                    f'{{"max_epochs": 20}}; all datastore images are taken as healthy), or start the server with --conf bundle_root DIR naming a '
                    f"trained bundle root (e.g. bundles/bigan after "
                    f"'python -m monai.bundle run training --config_file bundles/bigan/train.json')."
                )

    def model_state(self) -> tuple[float, float, str]:
        """What invalidates a loaded model: checkpoint and calibration times and the overrides in force."""
        return (
            self.ckpt_file.stat().st_mtime if self.ckpt_file.is_file() else -1.0,
            self.calibration_file.stat().st_mtime if self.calibration_file.is_file() else -1.0,
            json.dumps(self.effective_overrides(), sort_keys=True, default=str),
        )

    def parser(self, name: str, **extra: Any) -> ConfigParser:
        """
        A :py:class:`ConfigParser` of config ``name`` with ``bundle_root`` set to the model folder and all overrides
        applied (saved, then start-up, then ``extra``).
        """
        values = {"bundle_root": str(self.bundle_root), **self.effective_overrides(), **extra}
        return bundle_config_parser(self.config_files(name), **values)


@dataclass
class InferenceWorkflow:
    """
    The parts of ``inference.json`` that score one scan, parsed once per device and model version.

    Attributes:
        parser: the parser they come from (one parser, so ``Invertd`` inverts the very pre-processing objects).
        preprocessing: the ``preprocessing`` transforms, in order.
        inferer: the ``inferer`` (slice or simple inferer).
        scorer: the ``scorer`` (an :py:class:`monai_bigan.inferers.AnomalyScorer`) holding the trained network.
        postprocessing: the ``postprocessing`` transforms without those that write files.
        calibration: the model's :py:class:`monai_bigan.utils.ScoreCalibration`.
        threshold_mode: ``"fpr"`` or ``"f1"``, as in the config.
        heatmap_label: what the heatmap's values mean (``ScoringSettings.heatmap_label``), for the DICOM outputs.
    """

    parser: ConfigParser
    preprocessing: list[Callable]
    inferer: Callable
    scorer: torch.nn.Module
    postprocessing: list[Callable]
    calibration: Any
    threshold_mode: str
    heatmap_label: str = "anomaly heatmap"


def _target_name(raw: Any) -> str:
    """The class name a raw transform config instantiates."""
    target = raw.get("_target_", "") if isinstance(raw, Mapping) else ""
    return str(target).rsplit(".", 1)[-1]


def build_inference_workflow(bundle: LabelBundle, device: str | torch.device = "cpu") -> InferenceWorkflow:
    """
    Parse ``inference.json`` (with the bundle's overrides) into the parts MONAI Label runs, and load the weights.

    The ``preprocessing`` and ``inferer`` are used as they are; the ``scorer`` wraps the trained ``network`` (weights
    from ``checkpoint_key`` of ``models/model.pt``, the EMA copy by default); the ``postprocessing`` transforms are
    used in order, except those that write files (:py:data:`SKIPPED_POSTPROCESSING`): ``AnomalyScored``,
    ``ScoreCalibrationd``, ``SplitDimd``, ``Invertd`` (back to the input's geometry), and the mask thresholded at the
    calibration's ``voxel_threshold``.

    Raises:
        ModelNotTrainedError: no checkpoint or calibration in the model folder.
        KeyError: the checkpoint lacks the config's ``checkpoint_key``.
    """
    bundle.require_model()
    device = torch.device(device)
    parser = bundle.parser("inference", device=f"$torch.device('{device}')")
    # the bundle's own loader (config id ``trained_model``): weights, EMA fallback, statistics, calibration, settings
    try:
        trained = parser.get_parsed_content("trained_model")
    except Exception as e:
        cause = e.__cause__ if isinstance(e.__cause__, (ModelMismatchError, KeyError, FileNotFoundError)) else e
        if isinstance(cause, ModelMismatchError):
            raise ModelMismatchError(
                f"{cause} (overrides in force: {bundle.effective_overrides()}; saved overrides file: "
                f"{bundle.overrides_file})"
            ) from None
        raise cause
    preprocessing = list(parser.get_parsed_content("preprocessing").transforms)
    # transforms are parsed one by one: those that write files are skipped unparsed (they would create the output
    # folder of a batch run)
    postprocessing = list(parser.get_parsed_content("scoring_postprocessing")) + [
        parser.get_parsed_content(f"output_transforms#{i}")
        for i, raw in enumerate(parser.get("output_transforms"))
        if _target_name(raw) not in SKIPPED_POSTPROCESSING
    ]
    logger.info(f"Loaded BiGAN model {bundle.ckpt_file} ({trained.checkpoint_key}) on {device}.")
    return InferenceWorkflow(
        parser=parser,
        preprocessing=preprocessing,
        inferer=parser.get_parsed_content("inferer"),
        scorer=parser.get_parsed_content("scorer").eval(),
        postprocessing=postprocessing,
        calibration=trained.calibration,
        threshold_mode=str(parser.get_parsed_content("threshold_mode")) if "threshold_mode" in parser else "fpr",
        heatmap_label=parser.get_parsed_content("scoring").heatmap_label,
    )


class InferenceModel:
    """
    The inference workflow of a :py:class:`LabelBundle`, parsed once per device and reloaded when the checkpoint, the
    calibration or the overrides change (e.g. after the train task wrote a new model).

    Args:
        bundle: where the model lives.
    """

    def __init__(self, bundle: LabelBundle) -> None:
        self.bundle = bundle
        self._cache: dict[str, tuple[tuple, InferenceWorkflow]] = {}
        self._lock = threading.Lock()

    def get(self, device: str | torch.device = "cpu") -> InferenceWorkflow:
        """The workflow for ``device``, (re)built when the model changed."""
        key = str(torch.device(device))
        with self._lock:
            self.bundle.require_model()
            state = self.bundle.model_state()
            cached = self._cache.get(key)
            if cached is None or cached[0] != state:
                if cached is not None:
                    logger.info(f"Model files changed in {self.bundle.ckpt_dir}: reloading.")
                self._cache[key] = (state, build_inference_workflow(self.bundle, key))
            return self._cache[key][1]

    def clear(self) -> None:
        """Forget the loaded workflows."""
        with self._lock:
            self._cache.clear()


def _item(value: Any) -> Any:
    """A JSON-friendly Python value of a scalar tensor, array or number."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0].item() if value.size == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    return value


class LabelResultd:
    """
    Turns the inference workflow's outputs into what MONAI Label writes: ``pred`` (one volume, no channel, in the
    input's geometry) and ``result`` (the JSON returned to the client).

    * ``output="mask"``: ``pred`` is the uint8 anomaly mask (``pred_mask``: the inverted heatmap above the
      calibration's ``voxel_threshold``), label 1 = anomaly.
    * ``output="heatmap"``: ``pred`` is the float32 residual heatmap (``pred_heatmap``) in the input's geometry.

    ``result`` holds ``score``, ``score_residual``, ``score_discriminator``, ``percentile`` (among the healthy
    validation scans), ``flagged``, ``threshold`` (and ``threshold_mode``), ``voxel_threshold``, ``heatmap_vmax``,
    ``mask_voxels`` and ``output``.

    Args:
        output: ``"mask"`` or ``"heatmap"``.
        calibration: the model's calibration, for ``voxel_threshold`` and ``heatmap_vmax``.
        threshold_mode: reported in the result.
        mask_key: key of the thresholded, inverted mask.
        heatmap_key: key of the inverted heatmap.
        pred_key: key MONAI Label writes.
        result_key: key of the result JSON.
        dicom_key: key of the DICOM objects written by :py:class:`monai_bigan.transforms.SaveDicomResultsd`; their
            paths go to ``result["dicom_files"]`` when there are any.
    """

    SCORE_KEYS = ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold")

    def __init__(
        self,
        output: str,
        calibration: Any,
        threshold_mode: str = "fpr",
        mask_key: str = "pred_mask",
        heatmap_key: str = "pred_heatmap",
        pred_key: str = "pred",
        result_key: str = "result",
        dicom_key: str = "dicom_outputs",
    ) -> None:
        if output not in ("mask", "heatmap"):
            raise ValueError(f"output must be 'mask' or 'heatmap', got {output!r}.")
        self.output = output
        self.calibration = calibration
        self.threshold_mode = threshold_mode
        self.mask_key, self.heatmap_key = mask_key, heatmap_key
        self.pred_key, self.result_key = pred_key, result_key
        self.dicom_key = dicom_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in (self.mask_key, self.heatmap_key) + self.SCORE_KEYS if k not in d]
        if missing:
            raise KeyError(
                f"the inference config's postprocessing did not produce {missing}: the MONAI Label app needs "
                f"AnomalyScored, ScoreCalibrationd, Invertd of {self.heatmap_key!r} and {self.mask_key!r}."
            )
        source = d[self.mask_key] if self.output == "mask" else d[self.heatmap_key]
        if not isinstance(source, MetaTensor):
            raise TypeError(f"{self.mask_key!r}/{self.heatmap_key!r} must be MetaTensors carrying the input geometry.")
        volume = source[0] if source.shape[0] == 1 else source  # drop the channel
        dtype = torch.uint8 if self.output == "mask" else torch.float32
        pred = MetaTensor(volume.as_tensor().to(dtype), meta=source.meta)  # meta holds the input's affine
        mask = d[self.mask_key]
        result = dict(d.get(self.result_key) or {})
        result.update({k: _item(d[k]) for k in self.SCORE_KEYS})
        result.update(
            {
                "flagged": bool(result["flagged"]),
                "threshold_mode": self.threshold_mode,
                "voxel_threshold": getattr(self.calibration, "voxel_threshold", None),
                "heatmap_vmax": getattr(self.calibration, "heatmap_vmax", None),
                "mask_voxels": int((torch.as_tensor(mask) > 0).sum()),
                "output": self.output,
            }
        )
        if d.get(self.dicom_key):  # the DICOM objects written for this request, for the app to upload
            result[DICOM_FILES_KEY] = [str(p) for p in d[self.dicom_key]]
        d[self.pred_key] = pred
        d[f"{self.pred_key}_meta_dict"] = {"affine": pred.affine.clone()}
        d[self.result_key] = result
        return d


def write_training_datalist(
    images: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[dict[str, str]]]:
    """
    Write ``<folder>/datalist.json`` for unsupervised training: every image is taken as healthy; a shuffled
    ``val_fraction`` of them (at least 1) is held out for validation and calibration.

    Args:
        images: image paths (NIfTI files or DICOM series folders); stored as absolute paths.
        folder: the data set folder to write (created when missing).
        val_fraction: share of the images held out, in (0, 1).
        seed: seed of the shuffle, so that the split is reproducible.

    Returns:
        The datalist written: ``{"training": [{"image": ...}], "validation": [{"image": ..., "label": 0}]}``.

    Raises:
        ValueError: fewer than 2 images (one for training and one for validation), or ``val_fraction`` out of range.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    paths = sorted({os.path.abspath(os.fspath(p)) for p in images})
    if len(paths) < 2:
        raise ValueError(
            f"training needs at least 2 images (1 for training, 1 for validation/calibration); the datastore has "
            f"{len(paths)}."
        )
    random.Random(seed).shuffle(paths)
    num_val = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
    datalist = {
        "training": [{"image": p} for p in sorted(paths[num_val:])],
        # label 0: healthy, for the calibration (and the training bundle's validation metric, which needs labels)
        "validation": [{"image": p, "label": 0} for p in sorted(paths[:num_val])],
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / DATALIST_FILENAME).write_text(json.dumps(datalist, indent=2), encoding="utf-8")
    return datalist
