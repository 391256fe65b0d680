"""Tests of the handler that refits the healthy residual statistics before each validation."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from monai_bigan.handlers import ResidualStatisticsHandler
from monai_bigan.inferers import AnomalyScorer, ResidualStatistics
from tests.conftest import tiny_bigan


def test_refits_with_the_current_weights_at_each_run():
    torch.manual_seed(0)
    net = tiny_bigan(2)
    scorer = AnomalyScorer(net, residual="signed")
    healthy = [{"image": torch.rand(2, 1, 16, 16) * 2 - 1} for _ in range(3)]
    stats = ResidualStatistics()
    evaluator = Engine(lambda engine, batch: None)
    ResidualStatisticsHandler(stats, scorer, healthy).attach(evaluator)

    evaluator.run([0])
    assert int(stats.num_samples) == 6 and stats.mean.shape == (1, 16, 16) and stats.slope.shape == (1, 16, 16)
    first = stats.mean.clone()
    with torch.no_grad():  # new weights, as after a training epoch
        net.generator.parameters().__next__().add_(0.5)
    evaluator.run([0])
    assert not torch.allclose(stats.mean, first)


def test_disabled_handler_does_nothing():
    stats = ResidualStatistics()
    evaluator = Engine(lambda engine, batch: None)
    ResidualStatisticsHandler(stats, AnomalyScorer(tiny_bigan(2)), [], enabled=False).attach(evaluator)
    evaluator.run([0])
    assert not stats.is_fitted
