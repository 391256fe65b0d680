"""
The calibration and the residual statistics belong to the model.pt of the same training: inference refuses files of
another epoch or run (e.g. after a killed continuation), and training itself ends with a matching calibration.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from monai_bigan.bundle.loading import check_model_identity
from monai_bigan.exceptions import ModelMismatchError
from monai_bigan.handlers.checkpoint import _AtomicDiskSaver
from tests.bundle.test_train_bundle import TINY_2D, TRAIN
from tests.conftest import train_tiny_bundle

TINY = dict(TINY_2D, num_workers=0)


class _Killed(RuntimeError):
    """Stands for a kill -9 that lands while model.pt is written."""


def test_a_calibration_of_a_killed_continuation_is_refused_until_the_training_is_resumed(
    tmp_path, tiny_dataset, monkeypatch
):
    root = tmp_path / "bundle"
    models = root / "models"
    train_tiny_bundle(root, tiny_dataset, TRAIN, **TINY)
    check_model_identity(models / "model.pt", models / "calibration.json")

    # continue to 2 epochs: the validation of epoch 2 rewrites calibration.json, then the process dies in model.pt
    save = _AtomicDiskSaver._save_func

    def killed_in_model_pt(saver, checkpoint, path, func):
        if path.name == "model.pt":
            raise _Killed("killed")
        save(saver, checkpoint, path, func)

    monkeypatch.setattr(_AtomicDiskSaver, "_save_func", killed_in_model_pt)
    with pytest.raises(Exception) as info:
        train_tiny_bundle(root, tiny_dataset, TRAIN, max_epochs=2, **TINY)
    error = info.value
    while not isinstance(error, _Killed) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, _Killed)
    monkeypatch.undo()
    with pytest.raises(ModelMismatchError) as info:
        check_model_identity(models / "model.pt", models / "calibration.json")
    message = str(info.value)
    assert "calibration.json was fitted for epoch 2 of training run" in message
    assert "model.pt holds epoch 1 of training run" in message and "\n" not in message

    # the same command again: resumes from epoch 2 with nothing left to train, writes model.pt, and they match
    train_tiny_bundle(root, tiny_dataset, TRAIN, max_epochs=2, **TINY)
    check_model_identity(models / "model.pt", models / "calibration.json")
    identity = torch.load(models / "model.pt", weights_only=True)["model_identity"]
    recorded = json.loads((models / "calibration.json").read_text())["scoring"]["model"]
    assert identity["epoch"] == recorded["epoch"] == 2 and identity["run_id"] == recorded["run_id"]


def test_a_last_epoch_without_validation_ends_with_a_refitted_calibration(tmp_path, tiny_dataset):
    """Validated at epoch 2 of 3: the calibration and statistics are refitted for the final weights."""
    root = tmp_path / "bundle"
    models = root / "models"
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("monai_bigan.workflows.training")  # the bundle's logging.conf replaces pytest's capture
    logger.addHandler(handler)
    try:
        train_tiny_bundle(root, tiny_dataset, TRAIN, max_epochs=3, val_interval=2, **TINY)
    finally:
        logger.removeHandler(handler)
    (message,) = messages
    assert "fitted for epoch 2 of training run" in message and "epoch 3 of training run" in message
    assert message.endswith("refitting the calibration and statistics for the final model.")
    check_model_identity(models / "model.pt", models / "calibration.json")
    identity = torch.load(models / "model.pt", weights_only=True)["model_identity"]
    assert identity["epoch"] == identity["statistics_fitted_for"]["epoch"] == 3
