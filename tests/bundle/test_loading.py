"""The one loader of trained models: safe reading, EMA fallback, statistics, calibration, settings, clear errors."""

from __future__ import annotations

import logging

import pytest
import torch

from monai_bigan.bundle import (
    ModelGeometry,
    ModelMismatchError,
    ScoringSettings,
    build_bigan,
    load_exported_model,
    load_trained_model,
)
from monai_bigan.bundle.loading import check_model_identity
from monai_bigan.inferers import ResidualStatistics
from monai_bigan.utils import (
    ModelIdentity,
    ScoreCalibration,
    UnsafeCheckpointError,
    load_checkpoint,
    scoring_network_key,
)


class Payload:
    """An arbitrary object: unpickling it could run code, so it must be refused."""

    def __init__(self) -> None:
        self.value = 1


def _net(mode: str = "slices", channels=(4, 8)):
    size = (16, 16, 16) if mode == "volume3d" else (16, 16)
    return build_bigan(ModelGeometry(mode, size), latent_size=8, channels=channels, strides=(2, 2))


def _statistics(net, spatial_shape):
    stats = ResidualStatistics()
    image = torch.rand((1, 1, *spatial_shape))
    stats.fit([torch.cat([image - net.reconstruct(image).detach(), image], dim=1)[0] for _ in range(3)])
    return stats


def _checkpoint(path, net, statistics=None, ema=True):
    state = {"network": net.state_dict()}
    if ema:
        state["ema_network"] = net.state_dict()
    if statistics is not None:
        state["residual_statistics"] = statistics.state_dict()
    torch.save(state, path)
    return path


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"network": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt: refusing to load"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_trained_model(path, _net(), ScoringSettings(heatmap_normalize=False))


def test_truncated_missing_and_wrong_checkpoints(tmp_path):
    good = _checkpoint(tmp_path / "good.pt", _net(), ema=False)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt not found: train the model first"):
        load_trained_model(tmp_path / "nothing.pt", _net())
    torch.save({"generator": {}}, tmp_path / "wrong.pt")
    with pytest.raises(KeyError, match="no 'ema_network' entry"):
        load_trained_model(tmp_path / "wrong.pt", _net(), ScoringSettings(heatmap_normalize=False))


@pytest.mark.parametrize("mode, shape", [("slices", (16, 16)), ("volume3d", (16, 16, 16))])
def test_weights_statistics_and_calibration_are_loaded(tmp_path, mode, shape):
    trained = _net(mode)
    stats = _statistics(trained, shape)
    path = _checkpoint(tmp_path / "model.pt", trained, stats)
    settings = ScoringSettings(heatmap_sigma=1.0)
    calibration_file = ScoreCalibration.fit([0.1, 0.2], scoring=settings).save(tmp_path / "calibration.json")
    model = load_trained_model(path, _net(mode), settings, calibration_file=calibration_file)
    assert model.checkpoint_key == "ema_network" and not model.network.training
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key], value)
    torch.testing.assert_close(model.statistics.mean, stats.mean)
    assert model.calibration.scoring == settings.to_dict()


def test_model_without_ema_scores_with_its_plain_networks(tmp_path, caplog):
    trained = _net()
    path = _checkpoint(tmp_path / "model.pt", trained, ema=False)
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.loading"):
        model = load_trained_model(path, _net(), ScoringSettings(heatmap_normalize=False))
    assert model.checkpoint_key == "network" and "ema_decay 0" in caplog.text
    torch.testing.assert_close(model.network.encoder.state_dict(), trained.encoder.state_dict())
    assert scoring_network_key({"ema_network": {}, "network": {}}) == "ema_network"
    assert scoring_network_key({"generator": {}}) == "ema_network"  # nothing to fall back to: the caller reports it


def test_another_architecture_is_refused_in_one_line(tmp_path):
    path = _checkpoint(tmp_path / "model.pt", _net("volume3d"))
    with pytest.raises(ModelMismatchError) as info:
        load_trained_model(path, _net("slices"), ScoringSettings(heatmap_normalize=False))
    message = str(info.value)
    assert "model.pt" in message and "preset" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no state-dict traceback


def test_missing_statistics_and_calibration_say_what_to_do(tmp_path):
    path = _checkpoint(tmp_path / "model.pt", _net())
    with pytest.raises(KeyError, match="heatmap_normalize false"):
        load_trained_model(path, _net(), ScoringSettings())
    with pytest.raises(FileNotFoundError, match="calibration file"):
        load_trained_model(path, _net(), ScoringSettings(heatmap_normalize=False), calibration_file=tmp_path / "c.json")


def test_calibration_of_other_settings_is_warned_about(tmp_path, caplog):
    path = _checkpoint(tmp_path / "model.pt", _net())
    file = ScoreCalibration.fit([0.1], scoring=ScoringSettings(heatmap_normalize=False, alpha=0.5)).save(
        tmp_path / "calibration.json"
    )
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.scoring"):
        load_trained_model(path, _net(), ScoringSettings(heatmap_normalize=False), calibration_file=file)
    assert "alpha 0.5 -> 0.9" in caplog.text


def test_exported_scorer_loads_with_its_statistics(tmp_path):
    net = _net()
    stats = _statistics(net, (16, 16))
    scorer = ScoringSettings().scorer(net).eval()
    torch.jit.script(scorer).save(str(tmp_path / "model.ts"))
    torch.save(stats.state_dict(), tmp_path / "residual_statistics.pt")
    model = load_exported_model(tmp_path / "model.ts")
    torch.testing.assert_close(model.statistics.std, stats.std)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.network(x), scorer(x))
    with pytest.raises(ValueError, match="refine_steps"):
        load_exported_model(tmp_path / "model.ts", ScoringSettings(refine_steps=5))
    (tmp_path / "residual_statistics.pt").unlink()
    with pytest.raises(FileNotFoundError, match="residual_statistics.pt not found"):
        load_exported_model(tmp_path / "model.ts")


def test_a_small_calibration_set_is_warned_about(tmp_path, caplog):
    net = _net()
    path = _checkpoint(tmp_path / "model.pt", net)
    settings = ScoringSettings(heatmap_normalize=False)
    record = dict(settings.to_dict(), model=ModelIdentity(net).record())
    small = ScoreCalibration.fit([0.1 * i for i in range(6)], scoring=record).save(tmp_path / "small.json")
    large = ScoreCalibration.fit([0.01 * i for i in range(25)], scoring=record).save(tmp_path / "large.json")
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.loading"):
        load_trained_model(path, _net(), settings, calibration_file=large)
        assert not caplog.records
        load_trained_model(path, _net(), settings, calibration_file=small)
    assert "only 6 healthy validation scans" in caplog.text and "steps of 16.7" in caplog.text


def _identified_model(folder, epoch=3):
    """model.pt and calibration.json of a training at ``epoch``, each recording the model's identity as training does."""
    net = _net()
    stats = _statistics(net, (16, 16))
    identity = ModelIdentity(net, stats, run_id="run1")
    identity.epoch = epoch
    identity.statistics_fitted()
    torch.save(
        {
            "network": net.state_dict(),
            "ema_network": net.state_dict(),
            "residual_statistics": stats.state_dict(),
            "model_identity": identity.state_dict(),
        },
        folder / "model.pt",
    )
    scoring = dict(ScoringSettings().to_dict(), model=identity.record())
    ScoreCalibration.fit([0.01 * i for i in range(25)], scoring=scoring).save(folder / "calibration.json")
    return net, stats, identity


def test_files_of_one_model_load_without_a_word(tmp_path, caplog):
    _identified_model(tmp_path)
    with caplog.at_level(logging.WARNING):
        load_trained_model(tmp_path / "model.pt", _net(), calibration_file=tmp_path / "calibration.json")
        check_model_identity(tmp_path / "model.pt", tmp_path / "calibration.json")
    assert not caplog.records


def test_a_calibration_of_another_epoch_is_refused_naming_both_files(tmp_path):
    """A continuation killed after its validation rewrote calibration.json, before it wrote model.pt."""
    net, stats, identity = _identified_model(tmp_path, epoch=3)
    with torch.no_grad():
        next(net.parameters()).add_(0.1)  # epoch 4 trained on
    identity.epoch = 4
    scoring = dict(ScoringSettings().to_dict(), model=identity.record())
    ScoreCalibration.fit([0.01 * i for i in range(25)], scoring=scoring).save(tmp_path / "calibration.json")
    for load in (
        lambda: load_trained_model(tmp_path / "model.pt", _net(), calibration_file=tmp_path / "calibration.json"),
        lambda: check_model_identity(tmp_path / "model.pt", tmp_path / "calibration.json"),
    ):
        with pytest.raises(ModelMismatchError) as info:
            load()
        message = str(info.value)
        assert "\n" not in message
        assert f"{tmp_path / 'calibration.json'} was fitted for epoch 4 of training run run1" in message
        assert f"{tmp_path / 'model.pt'} holds epoch 3 of training run run1" in message
        assert "run training" in message and "run calibrating" in message
    # without a calibration the model itself is consistent
    load_trained_model(tmp_path / "model.pt", _net())


def test_statistics_fitted_for_other_weights_are_refused(tmp_path):
    net, stats, identity = _identified_model(tmp_path)
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    # statistics from a validation of earlier weights (e.g. a last epoch without validation)
    checkpoint["model_identity"]["statistics_fitted_for"]["weights_sha256"] = "0" * 64
    checkpoint["model_identity"]["statistics_fitted_for"]["epoch"] = 2
    torch.save(checkpoint, tmp_path / "model.pt")
    with pytest.raises(ModelMismatchError, match=r"model.pt: its residual statistics were fitted for epoch 2 .*"):
        load_trained_model(tmp_path / "model.pt", _net())
    load_trained_model(tmp_path / "model.pt", _net(), ScoringSettings(heatmap_normalize=False))  # not used: fine


def test_a_calibration_of_other_statistics_is_refused(tmp_path):
    """A recalibration killed after writing calibration.json, before storing its statistics in model.pt."""
    net, stats, identity = _identified_model(tmp_path)
    identity.statistics = _statistics(_net(), (16, 16))  # other statistics, for the same weights
    scoring = dict(ScoringSettings().to_dict(), model=identity.record())
    ScoreCalibration.fit([0.01 * i for i in range(25)], scoring=scoring).save(tmp_path / "calibration.json")
    with pytest.raises(ModelMismatchError, match="fitted with other residual statistics than those in"):
        load_trained_model(tmp_path / "model.pt", _net(), calibration_file=tmp_path / "calibration.json")


def test_files_of_older_versions_only_get_a_warning(tmp_path, caplog):
    net = _net()
    _checkpoint(tmp_path / "model.pt", net, _statistics(net, (16, 16)))
    file = ScoreCalibration.fit([0.01 * i for i in range(25)], scoring=ScoringSettings()).save(tmp_path / "c.json")
    with caplog.at_level(logging.WARNING, logger="monai_bigan.bundle.loading"):
        load_trained_model(tmp_path / "model.pt", _net(), calibration_file=file)
    assert "model.pt does not record which weights its residual statistics were fitted for" in caplog.text
    assert "c.json does not record which model it was fitted for (written by an older version)" in caplog.text
