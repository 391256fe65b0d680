from __future__ import annotations

import copy
import itertools

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_bigan.engines import BiGANTrainer
from monai_bigan.utils import BiGANIterationEvents, BiGANKeys
from tests.conftest import tiny_bigan


def _make_trainer(spatial_dims=2, max_epochs=1, num_images=6, batch_size=4, ema=True, seed=0, handlers=None):
    torch.manual_seed(seed)
    net = tiny_bigan(spatial_dims)
    data = [{"image": torch.rand((1,) + (16,) * spatial_dims) * 2 - 1} for _ in range(num_images)]
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    eg_opt = torch.optim.Adam(itertools.chain(net.encoder.parameters(), net.generator.parameters()), 1e-3)
    d_opt = torch.optim.Adam(net.discriminator.parameters(), 1e-3)
    trainer = BiGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        eg_optimizer=eg_opt,
        d_optimizer=d_opt,
        ema_network=copy.deepcopy(net) if ema else None,
        ema_decay=0.9,
        train_handlers=handlers,
    )
    return trainer, net


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_one_iteration_updates_encoder_generator_and_discriminator(spatial_dims):
    trainer, net = _make_trainer(spatial_dims, num_images=4)
    before = {
        name: copy.deepcopy(getattr(net, name).state_dict()) for name in ("encoder", "generator", "discriminator")
    }
    trainer.run()
    assert trainer.state.iteration == 1
    for name, state in before.items():
        after = getattr(net, name).state_dict()
        changed = any(not torch.equal(state[k], after[k]) for k in state if state[k].dtype.is_floating_point)
        assert changed, f"{name} parameters did not change"
    out = trainer.state.output
    for key in (BiGANKeys.D_LOSS, BiGANKeys.EG_LOSS, BiGANKeys.LOSS):
        assert out[key].ndim == 0 and torch.isfinite(out[key]) and not out[key].requires_grad
    assert out[BiGANKeys.FAKES].shape == out[BiGANKeys.REALS].shape
    assert out[BiGANKeys.ENC_LATENTS].shape == (4, net.latent_size)


def test_short_last_batch_uses_real_batch_size():
    trainer, net = _make_trainer(num_images=6, batch_size=4)
    sizes = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sizes.append(e.state.output["latents"].shape[0]))
    trainer.run()
    assert sizes == [4, 2]


def test_fine_grained_events_fire_in_order():
    trainer, _ = _make_trainer(num_images=4)
    fired = []
    for event in BiGANIterationEvents:
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.run()
    assert fired == list(BiGANIterationEvents)


def test_ema_tracks_but_differs_from_online_weights():
    trainer, net = _make_trainer(num_images=8, batch_size=2)
    initial = copy.deepcopy(trainer.ema_network.state_dict())
    trainer.run()
    ema_state, online = trainer.ema_network.state_dict(), net.state_dict()
    key = next(k for k in online if k.endswith("weight") and online[k].dtype.is_floating_point)
    assert not torch.equal(ema_state[key], initial[key])
    assert not torch.equal(ema_state[key], online[key])
    assert all(not p.requires_grad for p in trainer.ema_network.parameters())


def test_seeded_runs_are_reproducible():
    t1, n1 = _make_trainer(seed=3)
    torch.manual_seed(7)
    t1.run()
    t2, n2 = _make_trainer(seed=3)
    torch.manual_seed(7)
    t2.run()
    for (k, a), b in zip(n1.state_dict().items(), n2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_rejects_plain_module():
    with pytest.raises(TypeError, match="BiGAN"):
        BiGANTrainer("cpu", 1, [], torch.nn.Linear(1, 1), None, None)


def test_checkpoint_resume_restores_networks_optimizers_ema_and_epoch(tmp_path):
    trainer, net = _make_trainer(max_epochs=2, num_images=4)
    save_dict = {
        "network": net,
        "ema_network": trainer.ema_network,
        "eg_optimizer": trainer.eg_optimizer,
        "d_optimizer": trainer.d_optimizer,
        "trainer": trainer,
    }
    CheckpointSaver(str(tmp_path), save_dict, save_final=True, final_filename="model.pt").attach(trainer)
    trainer.run()
    saved = {k: copy.deepcopy(v.state_dict()) for k, v in save_dict.items()}

    resumed, net2 = _make_trainer(max_epochs=3, num_images=4, seed=11)
    load_dict = {
        "network": net2,
        "ema_network": resumed.ema_network,
        "eg_optimizer": resumed.eg_optimizer,
        "d_optimizer": resumed.d_optimizer,
        "trainer": resumed,
    }
    checks = {}

    def _check_restored(engine):
        checks["epoch"] = engine.state.epoch
        for key in ("network", "ema_network"):
            for name, value in saved[key].items():
                torch.testing.assert_close(load_dict[key].state_dict()[name], value)
        for key in ("eg_optimizer", "d_optimizer"):
            state = load_dict[key].state_dict()["state"]
            assert state.keys() == saved[key]["state"].keys()
            torch.testing.assert_close(state[0]["exp_avg"], saved[key]["state"][0]["exp_avg"])
        checks["ok"] = True

    CheckpointLoader(str(tmp_path / "model.pt"), load_dict).attach(resumed)
    resumed.add_event_handler(Events.STARTED, _check_restored)
    resumed.run()
    assert checks == {"epoch": 2, "ok": True}
    assert resumed.state.epoch == 3
    assert "d_scaler" in resumed.state_dict() and "eg_scaler" in resumed.state_dict()


def test_reconstruction_term_is_added_to_the_encoder_generator_loss():
    torch.manual_seed(0)
    trainer, net = _make_trainer(num_images=4)
    trainer.recon_weight = 2.0
    seen = {}

    def _capture(engine):
        seen["recon"] = engine.state.output[BiGANKeys.RECON_LOSS]
        seen["eg"] = engine.state.output[BiGANKeys.EG_LOSS]
        seen["adv"] = engine.state.output[BiGANKeys.EG_ADV_LOSS]

    trainer.add_event_handler(BiGANIterationEvents.ENCODER_GENERATOR_COMPLETED, _capture)
    trainer.run()
    assert seen["recon"] > 0
    # the adversarial part of the loss is positive (BCE), so the total exceeds the weighted term alone
    assert seen["eg"] > 2.0 * seen["recon"]
    # the health monitor watches the adversarial part alone, which the reconstruction term does not inflate
    torch.testing.assert_close(seen["adv"], seen["eg"] - 2.0 * seen["recon"])
    with pytest.raises(ValueError, match="recon_weight"):
        BiGANTrainer("cpu", 1, [], net, trainer.eg_optimizer, trainer.d_optimizer, recon_weight=-1.0)
