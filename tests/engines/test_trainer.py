from __future__ import annotations

import copy
import itertools

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_bigan.engines import BiGANTrainer
from monai_bigan.losses import BiGANLoss, BiGANObjective
from monai_bigan.networks import ImagePairDiscriminator, LatentPairDiscriminator
from monai_bigan.utils import BiGANIterationEvents, BiGANKeys
from tests.conftest import tiny_bigan


def _make_trainer(spatial_dims=2, max_epochs=1, num_images=6, batch_size=4, ema=True, seed=0, handlers=None, **kwargs):
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
        **kwargs,
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


@pytest.mark.parametrize("how", ["objective", "recon_weight"])
def test_reconstruction_term_is_added_to_the_encoder_generator_loss(how):
    torch.manual_seed(0)
    kwargs = {"loss_function": BiGANObjective(recon_weight=2.0)} if how == "objective" else {"recon_weight": 2.0}
    trainer, net = _make_trainer(num_images=4, **kwargs)
    assert isinstance(trainer.loss_function, BiGANObjective) and trainer.loss_function.recon_weight == 2.0
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


def test_output_keys():
    plain, _ = _make_trainer(num_images=4)
    plain.run()
    common = {"reals", "latents", "enc_latents", "fakes", "real_logits", "fake_logits", "d_loss", "eg_loss", "loss"}
    assert set(plain.state.output) == common | {"eg_adv_loss"}
    recon, _ = _make_trainer(num_images=4, recon_weight=1.0)
    recon.run()
    assert set(recon.state.output) == common | {"eg_adv_loss", "recon_loss"}


def test_loss_function_and_recon_weight_arguments():
    trainer, net = _make_trainer(num_images=4)
    args = ("cpu", 1, [], net, trainer.eg_optimizer, trainer.d_optimizer)
    # the default objective: plain BiGAN, no smoothing, no reconstruction term
    assert isinstance(trainer.loss_function, BiGANObjective) and trainer.loss_function.recon_weight == 0
    assert trainer.loss_function.adversarial_loss.label_smoothing == 0
    objective = BiGANObjective(label_smoothing=0.1, recon_weight=3.0)
    assert BiGANTrainer(*args, loss_function=objective).loss_function is objective
    with pytest.raises(ValueError, match="recon_weight"):
        BiGANTrainer(*args, recon_weight=-1.0)
    with pytest.raises(ValueError, match="BiGANObjective"):
        BiGANTrainer(*args, loss_function=objective, recon_weight=2.0)
    # a bare adversarial loss, as older configs pass it, is wrapped with the recon_weight argument
    legacy = BiGANLoss(label_smoothing=0.1)
    with pytest.warns(FutureWarning, match="BiGANObjective"):
        wrapped = BiGANTrainer(*args, loss_function=legacy, recon_weight=2.0).loss_function
    assert isinstance(wrapped, BiGANObjective) and wrapped.adversarial_loss is legacy and wrapped.recon_weight == 2.0


def _alad(net, spatial_dims, dxx, dzz):
    in_shape = (1,) + (16,) * spatial_dims
    if dxx:
        net.discriminator_xx = ImagePairDiscriminator(spatial_dims, in_shape, channels=(4, 8), strides=(2, 2))
    if dzz:
        net.discriminator_zz = LatentPairDiscriminator(net.latent_size, hidden_features=(16, 8))
    return net


def _hand_written_iteration(net, x, eg_opt, d_opt, smoothing, recon_weight):
    """One BiGAN / ALAD iteration written out by hand, the loss sums included; returns the logged losses."""
    bce = BiGANLoss(smoothing)
    dxx, dzz = net.discriminator_xx, net.discriminator_zz
    net.train()
    z = torch.randn(x.shape[0], net.latent_size)
    ex, gz = net.encoder(x), net.generator(z)
    gex = net.generator(ex) if dxx is not None else None
    egz = net.encoder(gz) if dzz is not None else None
    d_opt.zero_grad(set_to_none=True)
    d = {"d_xz_loss": bce(net.discriminator(x, ex.detach())[0], net.discriminator(gz.detach(), z)[0], True)}
    if dxx is not None:
        d["d_xx_loss"] = bce(dxx(x, x)[0], dxx(x, gex.detach())[0], True)
    if dzz is not None:
        d["d_zz_loss"] = bce(dzz(z, z)[0], dzz(z, egz.detach())[0], True)
    d_loss = d["d_xz_loss"]
    for key in ("d_xx_loss", "d_zz_loss"):
        d_loss = d_loss + d[key] if key in d else d_loss
    d_loss.backward()
    d_opt.step()
    eg_opt.zero_grad(set_to_none=True)
    for module in net.discriminators():
        module.requires_grad_(False)
    eg = {"eg_xz_loss": bce(net.discriminator(x, ex)[0], net.discriminator(gz, z)[0], False)}
    if dxx is not None:
        eg["cycle_x_loss"] = bce(dxx(x, x)[0], dxx(x, gex)[0], False)
    if dzz is not None:
        eg["cycle_z_loss"] = bce(dzz(z, z)[0], dzz(z, egz)[0], False)
    adversarial = eg["eg_xz_loss"]
    for key in ("cycle_x_loss", "cycle_z_loss"):
        adversarial = adversarial + eg[key] if key in eg else adversarial
    eg_loss = adversarial
    if recon_weight > 0:
        eg["recon_loss"] = ((net.generator(ex) if gex is None else gex) - x).abs().mean()
        eg_loss = adversarial + recon_weight * eg["recon_loss"]
    eg_loss.backward()
    for module in net.discriminators():
        module.requires_grad_(True)
    eg_opt.step()
    if dxx is None and dzz is None:  # the trainer names the terms only with ALAD
        d, eg = {}, {k: v for k, v in eg.items() if k == "recon_loss"}
    out = {"d_loss": d_loss, "eg_loss": eg_loss, "eg_adv_loss": adversarial, "loss": d_loss + eg_loss, **d, **eg}
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize(
    "spatial_dims,dxx,dzz,smoothing,recon_weight",
    [
        (2, False, False, 0.0, 0.0),
        (2, False, False, 0.1, 2.0),
        (3, False, False, 0.0, 1.5),
        (2, True, False, 0.1, 0.0),
        (2, False, True, 0.0, 2.0),
        (2, True, True, 0.1, 2.0),
        (3, True, True, 0.0, 0.5),
    ],
)
def test_trainer_matches_a_hand_written_iteration(spatial_dims, dxx, dzz, smoothing, recon_weight):
    """Same seed, same data: the trainer's losses and updated weights equal the hand-written sums bit for bit."""
    torch.manual_seed(0)
    net = _alad(tiny_bigan(spatial_dims), spatial_dims, dxx, dzz)
    ref = copy.deepcopy(net)
    batches = [torch.rand((3, 1) + (16,) * spatial_dims) * 2 - 1 for _ in range(2)]

    def _optimizers(bigan):
        eg = torch.optim.Adam(itertools.chain(bigan.encoder.parameters(), bigan.generator.parameters()), 1e-3)
        return eg, torch.optim.Adam(bigan.discriminator_parameters(), 1e-3)

    trainer = BiGANTrainer(
        "cpu",
        1,
        batches,  # plain tensors: no data loader drawing from the global random generator
        net,
        *_optimizers(net),
        loss_function=BiGANObjective(label_smoothing=smoothing, recon_weight=recon_weight),
    )
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    torch.manual_seed(1)
    trainer.run()
    torch.manual_seed(1)
    ref_eg, ref_d = _optimizers(ref)
    expected = [_hand_written_iteration(ref, x, ref_eg, ref_d, smoothing, recon_weight) for x in batches]
    for out, hand in zip(outputs, expected):
        assert set(out) == set(hand) | {"reals", "latents", "enc_latents", "fakes", "real_logits", "fake_logits"}
        for key, value in hand.items():
            torch.testing.assert_close(out[key], value, rtol=0, atol=0, msg=key)
    for (key, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
