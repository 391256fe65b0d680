from __future__ import annotations

import copy

import pytest
import torch

from monai_bigan.utils import ema_decay_at, update_ema


def test_decay_warmup_and_cap():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 10**6) == pytest.approx(0.999)
    assert ema_decay_at(0.999, 0, warmup=False) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="decay"):
        ema_decay_at(1.0, 0)


def test_update_ema_lerps_parameters_and_copies_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = copy.deepcopy(net).requires_grad_(False)
    old = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(5.0)
    update_ema(ema, net, decay=0.75)
    for p_old, p_ema, p_new in zip(old, ema.parameters(), net.parameters()):
        torch.testing.assert_close(p_ema, 0.75 * p_old + 0.25 * p_new)
    torch.testing.assert_close(ema[1].running_mean, torch.full((2,), 5.0))


def test_update_ema_rejects_other_architecture():
    with pytest.raises(ValueError, match="same parameters"):
        update_ema(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)), 0.9)
