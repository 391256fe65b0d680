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
"""The one loader of trained models: weights (with the EMA fallback), residual statistics, calibration and settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_bigan.exceptions import ModelMismatchError
from monai_bigan.inferers import ResidualStatistics
from monai_bigan.utils.calibration import ScoreCalibration
from monai_bigan.utils.checkpoint import (
    MODEL_IDENTITY_KEY,
    calibration_model_record,
    load_checkpoint,
    scoring_network_key,
    state_dict_digest,
)

from .scoring import ScoringSettings

__all__ = [
    "EXPORTED_STATISTICS_FILE",
    "TrainedModel",
    "check_model_identity",
    "load_exported_model",
    "load_state",
    "load_trained_model",
]

logger = logging.getLogger(__name__)

#: what to do when the model files are missing, for the messages
TRAIN_HINT = (
    "train the model first (python -m monai.bundle run training --config_file bundles/bigan/train.json), or pass "
    "--bundle_root DIR naming the folder a training wrote"
)


@dataclass
class TrainedModel:
    """
    A trained model as :py:func:`load_trained_model` returns it.

    Attributes:
        network: the scoring network with the trained weights, in eval mode.
        checkpoint_key: the checkpoint entry the weights came from (``"ema_network"``, or ``"network"`` for a model
            trained without EMA).
        statistics: the healthy residual statistics stored with the weights, or None without heatmap normalization.
        calibration: the score calibration, or None when not asked for.
        scoring: the settings the model scores with.
        checkpoint_file: the checkpoint.
    """

    network: torch.nn.Module
    checkpoint_key: str
    statistics: ResidualStatistics | None
    calibration: ScoreCalibration | None
    scoring: ScoringSettings
    checkpoint_file: Path


#: what to run when a calibration or statistics do not belong to the weights, for the messages
REFIT_HINT = (
    "resume the training that wrote them to finish it (re-run the same python -m monai.bundle run training command), "
    "or refit the calibration and statistics for this model (python -m monai.bundle run calibrating --config_file "
    "bundles/bigan/train.json, with the same --bundle_root, preset and keys)"
)


def _describe(record: Mapping[str, Any]) -> str:
    """``epoch 6 of training run 3fa2c1d09e2b (weights 1a2b3c4d5e6f)``, from an identity record."""
    epoch = "an unknown epoch" if record.get("epoch") is None else f"epoch {record['epoch']}"
    run = f" of training run {record['run_id']}" if record.get("run_id") else ""
    return f"{epoch}{run} (weights {str(record.get('weights_sha256'))[:12]})"


def _checkpoint_identity(checkpoint: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The identity of the weights ``checkpoint[key]``: their digest, and the epoch and run id when recorded."""
    stored = checkpoint.get(MODEL_IDENTITY_KEY) or {}
    trainer = checkpoint.get("trainer") or {}
    return {
        "weights_sha256": state_dict_digest(checkpoint[key]),
        "epoch": stored.get("epoch", trainer.get("epoch")),
        "run_id": stored.get("run_id"),
    }


def _check_identity(
    checkpoint: Mapping[str, Any],
    checkpoint_file: Path,
    key: str,
    statistics: bool,
    calibration: ScoreCalibration | None,
    calibration_file: str | os.PathLike | None,
) -> None:
    """
    Refuse residual statistics (in the checkpoint, checked when ``statistics``) or a calibration fitted for other
    weights than ``checkpoint[key]``; files written without an identity (older versions) only get a warning.
    """
    model = _checkpoint_identity(checkpoint, key)
    if statistics and "residual_statistics" in checkpoint:
        fitted_for = (checkpoint.get(MODEL_IDENTITY_KEY) or {}).get("statistics_fitted_for")
        if fitted_for is None:
            logger.warning(
                f"{checkpoint_file} does not record which weights its residual statistics were fitted for (written by "
                "an older version): they cannot be checked against its weights."
            )
        elif fitted_for.get("weights_sha256") != model["weights_sha256"]:
            raise ModelMismatchError(
                f"{checkpoint_file}: its residual statistics were fitted for {_describe(fitted_for)}, not for the "
                f"{key!r} weights it holds ({_describe(model)}): {REFIT_HINT}."
            )
    if calibration is None:
        return
    recorded = calibration_model_record(calibration)
    if recorded is None:
        logger.warning(
            f"{calibration_file} does not record which model it was fitted for (written by an older version): it "
            f"cannot be checked against {checkpoint_file}."
        )
        return
    if recorded.get("weights_sha256") != model["weights_sha256"]:
        raise ModelMismatchError(
            f"{calibration_file} was fitted for {_describe(recorded)}, but {checkpoint_file} holds "
            f"{_describe(model)}, e.g. after a training was killed between writing the two: {REFIT_HINT}."
        )
    stored = recorded.get("statistics_sha256")
    if statistics and stored is not None and "residual_statistics" in checkpoint:
        if state_dict_digest(checkpoint["residual_statistics"]) != stored:
            raise ModelMismatchError(
                f"{calibration_file} was fitted with other residual statistics than those in {checkpoint_file} (both "
                f"for {_describe(model)}), e.g. after a recalibration was killed before it stored them: {REFIT_HINT}."
            )


def check_model_identity(
    checkpoint_file: str | os.PathLike,
    calibration_file: str | os.PathLike | None = None,
    checkpoint_key: str = "ema_network",
    statistics: bool = True,
) -> None:
    """
    Check that the residual statistics in ``checkpoint_file`` and the calibration in ``calibration_file`` were fitted
    for the weights the checkpoint holds (see :py:class:`monai_bigan.utils.ModelIdentity`), as
    :py:func:`load_trained_model` does, without building the network.

    Args:
        checkpoint_file: ``models/model.pt`` of a training.
        calibration_file: ``models/calibration.json``, or None to check the statistics only.
        checkpoint_key: the checkpoint entry scored with (``"network"`` for a model trained without EMA).
        statistics: check the residual statistics (they are only used with heatmap normalization).

    Raises:
        FileNotFoundError: a file does not exist.
        ModelMismatchError: the statistics or the calibration belong to other weights; one line naming the files and
            saying what to run.
    """
    checkpoint = load_checkpoint(checkpoint_file, map_location="cpu")
    key = scoring_network_key(checkpoint, checkpoint_key)
    if key not in checkpoint:
        raise KeyError(f"{checkpoint_file}: no {key!r} entry to score with (it holds {sorted(checkpoint)}).")
    calibration = None if calibration_file is None else ScoreCalibration.load(calibration_file)
    _check_identity(checkpoint, Path(checkpoint_file), key, statistics, calibration, calibration_file)


#: fewer healthy validation scans than this make percentiles and the flag threshold coarse
MIN_HEALTHY_CALIBRATION_SCANS = 20


def _load_calibration(calibration_file: str | os.PathLike, scoring: ScoringSettings) -> ScoreCalibration:
    """The calibration, compared with ``scoring``, with a warning when it rests on few healthy scans."""
    calibration = ScoreCalibration.load(calibration_file)
    scoring.check(calibration.scoring, source=str(calibration_file))
    healthy = len(calibration.healthy_scores)
    if healthy < MIN_HEALTHY_CALIBRATION_SCANS:
        logger.warning(
            f"{calibration_file}: percentiles and the flag threshold rest on only {healthy} healthy validation scans "
            f"(percentiles in steps of {100 / healthy:.1f}; at a {calibration.target_fpr:.0%} false-positive rate the "
            f"threshold is in effect their maximum): calibrate on at least {MIN_HEALTHY_CALIBRATION_SCANS}."
        )
    return calibration


def _statistics_and_calibration(
    scoring: ScoringSettings,
    read_statistics: Callable[[], Mapping[str, Any]],
    statistics: ResidualStatistics | None,
    calibration_file: str | os.PathLike | None,
    map_location: str | torch.device,
) -> tuple[ResidualStatistics | None, ScoreCalibration | None]:
    """What every loaded model carries beside its scorer: the statistics (with normalization) and the calibration."""
    if scoring.heatmap_normalize:
        statistics = scoring.residual_statistics(map_location) if statistics is None else statistics
        statistics.load_state_dict(read_statistics())
    else:
        statistics = None
    calibration = None if calibration_file is None else _load_calibration(calibration_file, scoring)
    return statistics, calibration


def load_state(module: torch.nn.Module, state: Mapping[str, Any], source: str, what: str) -> None:
    """
    ``module.load_state_dict(state)``, with a one-line error naming ``source`` when the shapes or keys do not fit.

    Raises:
        ModelMismatchError: the state was written for another architecture.
    """
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        details = [line.strip() for line in str(e).splitlines() if line.strip()][1:2]
        raise ModelMismatchError(
            f"{source}: its {what} does not fit the network this config builds: it was trained with another mode, "
            "preset or network keys (channels, strides, latent_size, ...). Pass the same preset and keys as at "
            f"training, or a --bundle_root of its own per preset. {' '.join(details)}"
        ) from None


def load_trained_model(
    checkpoint_file: str | os.PathLike,
    network: torch.nn.Module,
    scoring: ScoringSettings | None = None,
    statistics: ResidualStatistics | None = None,
    calibration_file: str | os.PathLike | None = None,
    checkpoint_key: str = "ema_network",
    map_location: str | torch.device = "cpu",
) -> TrainedModel:
    """
    Load a trained model safely into ``network`` (and ``statistics``), with its calibration, for every consumer:
    inference, evaluation, MONAI Label, export and recalibration.

    - The checkpoint is read with ``torch.load(weights_only=True)``: a file holding arbitrary pickled objects is
      refused (:py:func:`monai_bigan.utils.load_checkpoint`).
    - Weights come from ``checkpoint_key``; a model trained without EMA has no ``"ema_network"`` and its
      ``"network"`` is used, with a warning.
    - A checkpoint of another architecture is refused with one line that says what to do.
    - With heatmap normalization (``scoring.heatmap_normalize``), the statistics stored with the weights are loaded
      into ``statistics`` (built from ``scoring`` when None).
    - With a ``calibration_file``, the calibration is read and ``scoring`` is compared with the settings it was fitted
      with (a warning names each difference).
    - The residual statistics (with normalization) and the calibration must have been fitted for the weights loaded:
      each records the identity of its model (:py:class:`monai_bigan.utils.ModelIdentity`), and files that belong to
      another epoch or run are refused, e.g. after a continuation killed between rewriting the calibration and
      writing ``model.pt``. Files written by older versions, without an identity, get a warning.

    Args:
        checkpoint_file: ``models/model.pt`` of a training.
        network: the network the config builds; the weights are loaded into it in place.
        scoring: the scoring settings; default :py:class:`ScoringSettings()`.
        statistics: the statistics object to load into (e.g. the one the post-processing holds).
        calibration_file: ``models/calibration.json``, or None not to load one.
        checkpoint_key: the checkpoint entry to score with.
        map_location: where to load the tensors.

    Raises:
        FileNotFoundError: the checkpoint or the calibration file does not exist (the message says how to make it).
        KeyError: the checkpoint has no weights to score with, or no statistics while normalization is on.
        ModelMismatchError: the weights do not fit ``network``, or the statistics or the calibration were fitted for other
            weights (the message names the files and what to run).

    Example::

        model = load_trained_model("models/model.pt", network, ScoringSettings(), calibration_file="models/calibration.json")
        scorer = model.scoring.scorer(model.network)
    """
    checkpoint_file = Path(checkpoint_file)
    scoring = ScoringSettings() if scoring is None else scoring
    if not checkpoint_file.is_file():
        raise FileNotFoundError(f"{checkpoint_file} not found: {TRAIN_HINT}.")
    checkpoint = load_checkpoint(checkpoint_file, map_location=map_location)
    key = scoring_network_key(checkpoint, checkpoint_key)
    if key not in checkpoint:
        raise KeyError(
            f"{checkpoint_file}: no {key!r} entry to score with (it holds {sorted(checkpoint)}); was it written by the "
            "monai_bigan training bundle?"
        )
    if key != checkpoint_key:
        logger.warning(f"{checkpoint_file} has no {checkpoint_key!r} (trained with ema_decay 0): loading {key!r}.")
    load_state(network, checkpoint[key], str(checkpoint_file), f"{key!r} entry")
    network.eval()
    if scoring.heatmap_normalize and "residual_statistics" not in checkpoint:
        raise KeyError(
            f"{checkpoint_file}: no 'residual_statistics' in this checkpoint: the model was trained without heatmap "
            "normalization (or by an older version): pass --heatmap_normalize false, or retrain."
        )
    statistics, calibration = _statistics_and_calibration(
        scoring, lambda: checkpoint["residual_statistics"], statistics, calibration_file, map_location
    )
    _check_identity(checkpoint, checkpoint_file, key, scoring.heatmap_normalize, calibration, calibration_file)
    logger.info(f"loaded {checkpoint_file} ({key})")
    return TrainedModel(
        network=network,
        checkpoint_key=key,
        statistics=statistics,
        calibration=calibration,
        scoring=scoring,
        checkpoint_file=checkpoint_file,
    )


#: the healthy residual statistics an export writes beside ``model.ts``/``model.onnx``
EXPORTED_STATISTICS_FILE = "residual_statistics.pt"


def load_exported_model(
    exported_file: str | os.PathLike,
    scoring: ScoringSettings | None = None,
    statistics: ResidualStatistics | None = None,
    calibration_file: str | os.PathLike | None = None,
    map_location: str | torch.device = "cpu",
) -> TrainedModel:
    """
    Load a TorchScript scorer written by ``python -m monai_bigan.export`` with what travels beside it: the healthy
    residual statistics (``residual_statistics.pt``, read safely like a checkpoint) and the calibration. The returned
    ``network`` is the scripted scorer itself (maps out, no refinement).

    Args:
        exported_file: ``models/model.ts``.
        scoring: the scoring settings (refinement must be off: exported scorers cannot refine).
        statistics: the statistics object to load into; built from ``scoring`` when None.
        calibration_file: ``models/calibration.json``, or None.
        map_location: where to load the scorer and the statistics.

    Raises:
        FileNotFoundError: the exported file, its statistics or the calibration do not exist.
        ValueError: ``scoring`` asks for what an exported scorer cannot compute.
    """
    exported_file = Path(exported_file)
    scoring = ScoringSettings() if scoring is None else scoring
    problems = scoring.export_problems()
    if problems:
        raise ValueError(
            f"{exported_file}: an exported scorer cannot score with these settings: {'; '.join(problems)}."
        )
    if not exported_file.is_file():
        raise FileNotFoundError(
            f"{exported_file} not found: export the model first (python -m monai_bigan.export --bundle_root DIR)."
        )
    scorer = torch.jit.load(str(exported_file), map_location=map_location)
    scorer.eval()
    statistics_file = exported_file.parent / EXPORTED_STATISTICS_FILE
    if scoring.heatmap_normalize and not statistics_file.is_file():
        raise FileNotFoundError(
            f"{statistics_file} not found: the export writes it beside {exported_file.name} for models with heatmap "
            "normalization; export again, or pass --heatmap_normalize false."
        )
    statistics, calibration = _statistics_and_calibration(
        scoring,
        lambda: load_checkpoint(statistics_file, map_location=map_location),
        statistics,
        calibration_file,
        map_location,
    )
    logger.info(f"loaded exported scorer {exported_file}")
    return TrainedModel(scorer, "exported", statistics, calibration, scoring, exported_file)
