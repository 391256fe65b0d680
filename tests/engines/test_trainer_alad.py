# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""BiGANTrainer with ALAD's cycle-consistency discriminators D_xx and D_zz (arXiv:1812.02288)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from monai_bigan.engines import BiGANTrainer
from monai_bigan.losses import BiGANLoss
from monai_bigan.networks import ImagePairDiscriminator, LatentPairDiscriminator
from monai_bigan.utils import BiGANIterationEvents, BiGANKeys
from tests.conftest import tiny_bigan

ALAD_KEYS = (
    BiGANKeys.D_XZ_LOSS,
    BiGANKeys.D_XX_LOSS,
    BiGANKeys.D_ZZ_LOSS,
    BiGANKeys.EG_XZ_LOSS,
    BiGANKeys.CYCLE_X_LOSS,
    BiGANKeys.CYCLE_Z_LOSS,
)


class _Recorder(nn.Module):
    """Calls the wrapped pair discriminator and records its inputs, logits and which step it was called in."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[dict] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.inner(a, b)
        frozen = not any(p.requires_grad for p in self.inner.parameters())
        self.calls.append(
            {
                "a": a.detach().clone(),
                "b": b.detach().clone(),
                "b_requires_grad": b.requires_grad,
                "step": "eg" if frozen else "d",
                "logits": logits.detach().clone(),
                "dtype": logits.dtype,
            }
        )
        return logits, features


def _alad_bigan(spatial_dims: int = 2, dxx: bool = True, dzz: bool = True, record: bool = False):
    net = tiny_bigan(spatial_dims)
    in_shape = (1,) + (16,) * spatial_dims
    if dxx:
        net.discriminator_xx = ImagePairDiscriminator(spatial_dims, in_shape, channels=(4, 8), strides=(2, 2))
    if dzz:
        net.discriminator_zz = LatentPairDiscriminator(net.latent_size, hidden_features=(16, 8))
    if record:
        for name in ("discriminator_xx", "discriminator_zz"):
            if getattr(net, name) is not None:
                setattr(net, name, _Recorder(getattr(net, name)))
    return net


def _images(spatial_dims: int, num_images: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": torch.rand((1,) + (16,) * spatial_dims) * 2 - 1} for _ in range(num_images)]


def _make_trainer(net, spatial_dims=2, num_images=4, batch_size=4, max_epochs=1, ema=True, d_params=None, **kwargs):
    loader = torch.utils.data.DataLoader(_images(spatial_dims, num_images), batch_size=batch_size, shuffle=False)
    eg_opt = torch.optim.Adam(itertools.chain(net.encoder.parameters(), net.generator.parameters()), 1e-3)
    d_opt = torch.optim.Adam(net.discriminator_parameters() if d_params is None else d_params, 1e-3)
    return BiGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        eg_optimizer=eg_opt,
        d_optimizer=d_opt,
        ema_network=copy.deepcopy(net) if ema else None,
        ema_decay=0.9,
        **kwargs,
    )


def test_pair_discriminators_see_the_right_pairs():
    torch.manual_seed(0)
    net = _alad_bigan(record=True)
    before = copy.deepcopy(net).train()  # the weights the forward pass of the first iteration uses
    trainer = _make_trainer(net, num_images=4, ema=False)
    x = torch.stack([d["image"] for d in trainer.data_loader.dataset])
    trainer.run()
    out = trainer.state.output
    z = out[BiGANKeys.LATENTS]
    torch.testing.assert_close(out[BiGANKeys.REALS], x)
    with torch.no_grad():  # train mode: BatchNorm normalizes with the batch statistics, as in the trainer
        recon = before.generator(before.encoder(x))  # G(E(x))
        cycle = before.encoder(before.generator(z))  # E(G(z)) with the same z as G(z)
    assert not torch.allclose(recon, x, atol=1e-3) and not torch.allclose(cycle, z, atol=1e-3)

    xx, zz = net.discriminator_xx.calls, net.discriminator_zz.calls
    assert [c["step"] for c in xx] == ["d", "d", "eg", "eg"]
    assert [c["step"] for c in zz] == ["d", "d", "eg", "eg"]
    for real, fake in (xx[:2], xx[2:]):
        torch.testing.assert_close(real["a"], x)
        torch.testing.assert_close(real["b"], x)  # real pair (x, x)
        torch.testing.assert_close(fake["a"], x)
        torch.testing.assert_close(fake["b"], recon)  # fake pair (x, G(E(x)))
    for real, fake in (zz[:2], zz[2:]):
        torch.testing.assert_close(real["a"], z)
        torch.testing.assert_close(real["b"], z)  # real pair (z, z)
        torch.testing.assert_close(fake["a"], z)
        torch.testing.assert_close(fake["b"], cycle)  # fake pair (z, E(G(z)))
    # detached in the discriminator step, with gradients to E and G in the encoder + generator step
    assert not xx[1]["b_requires_grad"] and not zz[1]["b_requires_grad"]
    assert xx[3]["b_requires_grad"] and zz[3]["b_requires_grad"]

    # the terms are the loss function on these logits, with real labels in the D step and flipped ones in the E+G step
    loss = BiGANLoss()
    torch.testing.assert_close(out[BiGANKeys.D_XX_LOSS], loss(xx[0]["logits"], xx[1]["logits"], True))
    torch.testing.assert_close(out[BiGANKeys.D_ZZ_LOSS], loss(zz[0]["logits"], zz[1]["logits"], True))
    torch.testing.assert_close(out[BiGANKeys.CYCLE_X_LOSS], loss(xx[2]["logits"], xx[3]["logits"], False))
    torch.testing.assert_close(out[BiGANKeys.CYCLE_Z_LOSS], loss(zz[2]["logits"], zz[3]["logits"], False))


@pytest.mark.parametrize("dxx,dzz", [(True, False), (False, True), (True, True)])
def test_loss_totals_are_the_sum_of_the_terms(dxx, dzz):
    torch.manual_seed(1)
    trainer = _make_trainer(_alad_bigan(dxx=dxx, dzz=dzz), num_images=8, batch_size=4, recon_weight=0.5)
    outputs = []
    trainer.add_event_handler(
        BiGANIterationEvents.ENCODER_GENERATOR_COMPLETED, lambda e: outputs.append(dict(e.state.output))
    )
    trainer.run()
    assert len(outputs) == 2
    for out in outputs:
        d_terms = [BiGANKeys.D_XZ_LOSS] + [BiGANKeys.D_XX_LOSS] * dxx + [BiGANKeys.D_ZZ_LOSS] * dzz
        eg_terms = [BiGANKeys.EG_XZ_LOSS] + [BiGANKeys.CYCLE_X_LOSS] * dxx + [BiGANKeys.CYCLE_Z_LOSS] * dzz
        assert {k for k in ALAD_KEYS if k in out} == set(d_terms + eg_terms)
        for key in d_terms + eg_terms:
            assert out[key].ndim == 0 and torch.isfinite(out[key]) and not out[key].requires_grad
            assert out[key] > 0  # BCE terms
        torch.testing.assert_close(out[BiGANKeys.D_LOSS], sum(out[k] for k in d_terms))
        recon = 0.5 * out[BiGANKeys.RECON_LOSS]
        torch.testing.assert_close(out[BiGANKeys.EG_LOSS], sum(out[k] for k in eg_terms) + recon)
        torch.testing.assert_close(out[BiGANKeys.LOSS], out[BiGANKeys.D_LOSS] + out[BiGANKeys.EG_LOSS])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pair_discriminators_train_in_the_d_step_only(spatial_dims):
    torch.manual_seed(2)
    net = _alad_bigan(spatial_dims)
    trainer = _make_trainer(net, spatial_dims, num_images=4)
    extra = {"xx": net.discriminator_xx, "zz": net.discriminator_zz}
    before = {k: copy.deepcopy(m.state_dict()) for k, m in extra.items()}
    grads = {}

    def _after_d(engine):
        grads["d"] = {k: [p.grad.clone() for p in m.parameters()] for k, m in extra.items()}

    def _after_eg(engine):
        grads["eg"] = {k: [p.grad.clone() for p in m.parameters()] for k, m in extra.items()}
        grads["eg_flags"] = [p.requires_grad for m in extra.values() for p in m.parameters()]

    trainer.add_event_handler(BiGANIterationEvents.DISCRIMINATOR_COMPLETED, _after_d)
    trainer.add_event_handler(BiGANIterationEvents.ENCODER_GENERATOR_COMPLETED, _after_eg)
    trainer.run()
    for k, m in extra.items():
        after = m.state_dict()
        assert any(not torch.equal(before[k][n], after[n]) for n in after), f"D_{k} did not change"
        # every parameter got a gradient in the discriminator step ...
        assert all(g.abs().sum() > 0 for g in grads["d"][k])
        # ... and none was added to it in the encoder + generator step: D_xx and D_zz were frozen there
        for g_d, g_eg in zip(grads["d"][k], grads["eg"][k]):
            torch.testing.assert_close(g_eg, g_d, rtol=0, atol=0)
    assert all(grads["eg_flags"])  # unfrozen again after the step
    # the EMA copy averages them too
    ema_xx = trainer.ema_network.discriminator_xx
    assert not torch.equal(ema_xx.logit.weight, before["xx"]["logit.weight"])
    assert not torch.equal(ema_xx.logit.weight, net.discriminator_xx.logit.weight)


class _ZeroLogits(nn.Module):
    """The joint discriminator with its logits multiplied by 0: its loss terms then give no gradient to E and G."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.inner(x, z)
        return logits * 0, features


@pytest.mark.parametrize("dxx,dzz", [(False, False), (True, False), (False, True)])
def test_cycle_terms_reach_encoder_and_generator(dxx, dzz):
    torch.manual_seed(3)
    net = _alad_bigan(dxx=dxx, dzz=dzz)
    net.discriminator = _ZeroLogits(net.discriminator)
    trainer = _make_trainer(net, ema=False)
    grads = {}

    def _grab(engine):
        grads.update({name: [p.grad for p in getattr(net, name).parameters()] for name in ("encoder", "generator")})

    trainer.add_event_handler(BiGANIterationEvents.ENCODER_GENERATOR_COMPLETED, _grab)
    trainer.run()
    for name in ("encoder", "generator"):
        reached = any(g is not None and g.abs().sum() > 0 for g in grads[name])
        # without D_xx and D_zz nothing reaches them (the control); G(E(x)) and E(G(z)) both involve E and G
        assert reached == (dxx or dzz), name


def test_plain_bigan_output_and_state_dict_unchanged():
    torch.manual_seed(4)
    net = tiny_bigan()
    keys = list(net.state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "generator", "discriminator"}
    trainer = _make_trainer(net, num_images=4)
    before = copy.deepcopy(net.discriminator.state_dict())
    trainer.run()
    out = trainer.state.output
    assert not any(k in out for k in ALAD_KEYS)
    assert torch.isfinite(out[BiGANKeys.D_LOSS]) and torch.isfinite(out[BiGANKeys.EG_LOSS])
    assert any(not torch.equal(before[n], v) for n, v in net.discriminator.state_dict().items())
    assert list(net.state_dict()) == keys and list(trainer.ema_network.state_dict()) == keys


def test_d_optimizer_must_hold_the_pair_discriminators():
    net = _alad_bigan()
    with pytest.raises(ValueError, match="discriminator_xx"):
        _make_trainer(net, d_params=net.discriminator.parameters())
    with pytest.raises(ValueError, match="discriminator_zz"):
        _make_trainer(net, d_params=itertools.chain(net.discriminator.parameters(), net.discriminator_xx.parameters()))
    # the config form
    _make_trainer(net, d_params=itertools.chain(*[d.parameters() for d in net.discriminators()]))


def test_seeded_alad_runs_are_reproducible():
    states = []
    for _ in range(2):
        torch.manual_seed(5)
        net = _alad_bigan()
        trainer = _make_trainer(net, num_images=8, batch_size=4)
        trainer.run()
        states.append(net.state_dict())
    for (key, a), b in zip(states[0].items(), states[1].values()):
        torch.testing.assert_close(a, b, msg=key)


def test_pair_discriminators_run_under_autocast():
    # AMP is ignored on CPU by the constructor; force CPU bf16 autocast to check that D_xx and D_zz run inside it
    torch.manual_seed(6)
    net = _alad_bigan(record=True)
    trainer = _make_trainer(net, num_images=4)
    trainer.amp, trainer.amp_kwargs = True, {"dtype": torch.bfloat16}
    trainer.run()
    calls = net.discriminator_xx.calls + net.discriminator_zz.calls
    assert len(calls) == 8 and all(c["dtype"] == torch.bfloat16 for c in calls)
    out = trainer.state.output
    assert all(torch.isfinite(out[k]) for k in ALAD_KEYS)
    assert int(trainer._nonfinite[2]) == 0


def test_compile_networks_compiles_the_pair_discriminators(monkeypatch):
    from monai_bigan.utils import compile_networks

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    compile_networks(_alad_bigan(), enabled=True)
    expected = ["Encoder", "Generator", "JointDiscriminator", "ImagePairDiscriminator", "LatentPairDiscriminator"]
    assert compiled == expected
    compiled.clear()
    compile_networks(_alad_bigan(dzz=False), enabled=True)
    assert compiled == expected[:4]
