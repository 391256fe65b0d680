from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_bigan.handlers import SafeCheckpointLoader
from monai_bigan.utils import UnsafeCheckpointError, load_checkpoint, scoring_network_key


class Payload:
    """An arbitrary object: unpickling it could run code, so it must be refused."""

    def __init__(self) -> None:
        self.value = 1


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"network": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt: refusing to load"):
        load_checkpoint(path)
    net = torch.nn.Linear(1, 1)
    loader = SafeCheckpointLoader(str(path), {"network": net})
    with pytest.raises(UnsafeCheckpointError):
        loader(Engine(lambda e, b: None))


def test_truncated_missing_and_wrong_checkpoints(tmp_path):
    net = torch.nn.Linear(2, 2)
    good = tmp_path / "good.pt"
    torch.save({"network": net.state_dict()}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"generator": net.state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(KeyError, match="no \\['ema_network'\\]"):
        SafeCheckpointLoader(str(tmp_path / "wrong.pt"), {"ema_network": net})(Engine(lambda e, b: None))
    # trained without EMA (ema_decay 0): the plain networks are loaded instead
    no_ema = torch.nn.Linear(2, 2)
    SafeCheckpointLoader(str(good), {"ema_network": no_ema})(Engine(lambda e, b: None))
    torch.testing.assert_close(no_ema.weight, net.weight)
    other = torch.nn.Linear(2, 2)
    SafeCheckpointLoader(str(good), {"network": other})(Engine(lambda e, b: None))
    torch.testing.assert_close(other.weight, net.weight)


def test_scoring_network_key_falls_back_to_the_plain_networks_without_ema():
    assert scoring_network_key({"ema_network": {}, "network": {}}) == "ema_network"
    assert scoring_network_key({"network": {}}) == "network"  # trained with ema_decay 0
    assert scoring_network_key({"network": {}}, "network") == "network"
    assert scoring_network_key({"generator": {}}) == "ema_network"  # nothing to fall back to: the caller reports it
