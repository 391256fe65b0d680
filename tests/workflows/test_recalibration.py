"""Tests of monai_bigan.workflows.Recalibration: load the scoring weights, run the evaluator, store the statistics."""

from __future__ import annotations

import json
import os

import pytest
import torch
from ignite.engine import Engine, Events

from monai_bigan.bundle.loading import check_model_identity
from monai_bigan.handlers import CalibrationHandler, ResidualStatisticsHandler
from monai_bigan.inferers import ResidualStatistics
from monai_bigan.utils import ModelIdentity, state_dict_digest
from monai_bigan.workflows import Recalibration


class _Evaluator(Engine):
    """An evaluator that, like MONAI's, runs over its own data when called as ``run()``."""

    def __init__(self) -> None:
        super().__init__(lambda engine, batch: batch)

    def run(self) -> None:  # type: ignore[override]
        super().run([0], max_epochs=1)


def _evaluator(statistics: ResidualStatistics, maps: torch.Tensor) -> Engine:
    engine = _Evaluator()
    # stands in for the ResidualStatisticsHandler
    engine.add_event_handler(Events.STARTED, lambda _: statistics.fit(maps))
    return engine


def test_loads_the_ema_weights_and_stores_the_refitted_statistics(tmp_path):
    trained, ema, stale = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), ResidualStatistics().fit(torch.rand(3, 2, 4, 4))
    path = tmp_path / "model.pt"
    torch.save(
        {"network": trained.state_dict(), "ema_network": ema.state_dict(), "residual_statistics": stale.state_dict()},
        path,
    )
    network, statistics, maps = torch.nn.Linear(2, 2), ResidualStatistics(), torch.rand(5, 2, 4, 4)
    Recalibration(_evaluator(statistics, maps), path, network, statistics).run()
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in network.state_dict().items())
    saved = torch.load(path, weights_only=True)
    assert int(saved["residual_statistics"]["num_samples"]) == 5  # refitted, not the stale 3
    assert torch.equal(saved["residual_statistics"]["std"], ResidualStatistics().fit(maps).std)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in saved["network"].items())  # the rest is kept


def test_without_ema_the_plain_network_is_loaded_and_disabled_does_nothing(tmp_path):
    trained = torch.nn.Linear(2, 2)
    path = tmp_path / "model.pt"
    torch.save({"network": trained.state_dict()}, path)
    before = path.read_bytes()
    network, runs = torch.nn.Linear(2, 2), []
    evaluator = _Evaluator()
    evaluator.add_event_handler(Events.STARTED, lambda _: runs.append(1))
    assert Recalibration(evaluator, path, network, enabled=False).run() is None
    assert not runs and path.read_bytes() == before
    Recalibration(evaluator, path, network).run()  # no statistics: only the evaluator's handlers (calibration)
    assert runs == [1] and path.read_bytes() == before
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in network.state_dict().items())


def test_a_checkpoint_without_weights_is_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"residual_statistics": {}}, path)
    with pytest.raises(KeyError, match="model.pt"):
        Recalibration(_Evaluator(), path, torch.nn.Linear(2, 2)).run()


def test_the_refitted_statistics_and_calibration_record_the_model_they_belong_to(tmp_path):
    """A recalibration records the identity of model.pt's weights (run and epoch kept) in both of its outputs."""
    ema, stale = torch.nn.Linear(2, 2), ResidualStatistics().fit(torch.rand(3, 2, 4, 4))
    path = tmp_path / "model.pt"
    trained = ModelIdentity(ema, stale, run_id="run1")
    trained.epoch = 7
    torch.save(
        {
            "ema_network": ema.state_dict(),
            "residual_statistics": stale.state_dict(),
            "trainer": {"epoch": 7},
            "model_identity": {"run_id": "run1", "epoch": 7, "statistics_fitted_for": None},
        },
        path,
    )
    network, statistics = torch.nn.Linear(2, 2), ResidualStatistics()
    identity = ModelIdentity(network, statistics)  # as the bundle builds it: a new run id, epoch 0
    evaluator = _Evaluator()
    locks = []
    evaluator.add_event_handler(Events.STARTED, lambda _: locks.append((tmp_path / ".training.lock").read_text()))
    ResidualStatisticsHandler(
        statistics, torch.nn.Identity(), [torch.rand(4, 2, 4, 4)], model_identity=identity
    ).attach(evaluator)
    # one healthy validation score per pass, for the CalibrationHandler
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: setattr(e.state, "output", [{"score": 0.5}]))
    CalibrationHandler(tmp_path / "calibration.json", model_identity=identity).attach(evaluator)
    Recalibration(evaluator, path, network, statistics, model_identity=identity).run()

    saved = torch.load(path, weights_only=True)
    assert saved["model_identity"]["run_id"] == "run1" and saved["model_identity"]["epoch"] == 7
    assert saved["model_identity"]["statistics_fitted_for"] == trained.record(statistics=False)
    recorded = json.loads((tmp_path / "calibration.json").read_text())["scoring"]["model"]
    assert recorded == dict(
        trained.record(statistics=False), statistics_sha256=state_dict_digest(statistics.state_dict())
    )
    check_model_identity(path, tmp_path / "calibration.json")  # they belong together
    # it held the training lock while it ran, and released it
    assert json.loads(locks[0])["pid"] == os.getpid() and not (tmp_path / ".training.lock").exists()
