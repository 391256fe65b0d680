"""ModelIdentity and state_dict_digest: which weights a calibration or residual statistics were fitted for."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events

from monai_bigan.utils import ModelIdentity, state_dict_digest
from tests.conftest import tiny_bigan


def test_digest_of_live_weights_equals_digest_of_saved_weights(tmp_path):
    net = tiny_bigan()
    torch.save({"ema_network": net.state_dict()}, tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["ema_network"]
    assert state_dict_digest(net.state_dict()) == state_dict_digest(saved)
    net.to(memory_format=torch.channels_last)  # the channels_last option changes strides, not weights
    assert state_dict_digest(net.state_dict()) == state_dict_digest(saved)
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-6
    assert state_dict_digest(net.state_dict()) != state_dict_digest(saved)
    renamed = {f"x{k}": v for k, v in saved.items()}
    assert state_dict_digest(renamed) != state_dict_digest(saved)


def test_identity_follows_the_epochs_and_survives_a_checkpoint(tmp_path):
    net, statistics = torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)
    identity = ModelIdentity(net, statistics)
    trainer = Engine(lambda engine, batch: None)
    identity.attach(trainer)
    fitted = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: fitted.append(identity.statistics_fitted()))
    trainer.run([0], max_epochs=3)
    record = identity.record()
    assert record == {
        "weights_sha256": state_dict_digest(net.state_dict()),
        "epoch": 3,
        "run_id": identity.run_id,
        "statistics_sha256": state_dict_digest(statistics.state_dict()),
    }
    assert identity.statistics_fitted_for == {k: record[k] for k in ("weights_sha256", "epoch", "run_id")}

    torch.save({"model_identity": identity.state_dict()}, tmp_path / "checkpoint.pt")
    resumed = ModelIdentity(net, statistics)
    assert resumed.run_id != identity.run_id  # a new training draws its own run id
    resumed.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model_identity"])
    assert (resumed.run_id, resumed.epoch) == (identity.run_id, 3)
    assert resumed.statistics_fitted_for == identity.statistics_fitted_for
    assert ModelIdentity(net).record()["statistics_sha256"] is None  # no heatmap normalization
