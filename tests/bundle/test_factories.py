"""The small factories the bundle configs call."""

from __future__ import annotations

import pytest
import torch

from monai_bigan.bundle import (
    ModelGeometry,
    build_bigan,
    checkpoint_objects,
    ema_copy,
    every_n_events,
    gan_training_scans,
    scalar_losses,
    scoring_network,
    split_holdout,
    statistics_scans,
    validation_interval,
)


@pytest.mark.parametrize("mode, shape", [("slices", (1, 1, 16, 16)), ("volume3d", (1, 1, 16, 16, 16))])
def test_build_bigan_in_2d_and_3d_with_alad(mode, shape):
    geometry = ModelGeometry(mode, shape[2:])
    net = build_bigan(geometry, 8, (4, 8), (2, 2), spectral_norm="false", alad_dxx="true", alad_dzz=True)
    assert net.discriminator_xx is not None and net.discriminator_zz is not None
    assert net.reconstruct(torch.zeros(shape)).shape == shape
    assert build_bigan(geometry, 8, (4, 8), (2, 2)).discriminator_xx is None


def test_validation_interval_validates_the_last_epoch():
    for epochs in (1, 7, 10, 36, 100):
        interval = validation_interval(epochs)
        assert epochs % interval == 0 and interval <= max(1, epochs // 10)
    assert validation_interval(100) == 10 and validation_interval(36) == 3


def test_holdout_split():
    scans = [{"image": str(i)} for i in range(5)]
    assert split_holdout(scans, 0) == (scans, scans)
    assert gan_training_scans(scans, 2) == scans[:3] and statistics_scans(scans, 2) == scans[3:]
    assert split_holdout(scans, 9) == (scans, scans)  # too large: no holdout


def test_small_helpers():
    net = torch.nn.Linear(1, 1)
    assert ema_copy(net, 0.0) is None and ema_copy(net, 0.99) is not net
    assert scoring_network(net, None) is net
    assert checkpoint_objects(network=net, ema_network=None) == {"network": net}
    assert every_n_events(None, 20, n=10) and not every_n_events(None, 21, n=10)
    assert scalar_losses({"d_loss": torch.tensor(1.5), "other": torch.tensor(2.0)}) == {"d_loss": 1.5}
