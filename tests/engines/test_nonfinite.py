"""Non-finite losses stop training with a clear message and leave the last good checkpoint untouched."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from monai_bigan.engines import BiGANTrainer, NonFiniteLossError
from monai_bigan.losses import BiGANLoss, BiGANObjective
from monai_bigan.utils.checkpoint import find_checkpoints
from tests.bundle.test_train_bundle import TINY_2D, TRAIN, _chain, _workflow
from tests.conftest import tiny_bigan


class _NaNAfter(nn.Module):
    """BiGANLoss whose value becomes NaN (a constant added, so the gradients stay finite) on chosen iterations."""

    def __init__(self, engine_ref: list, bad_iterations) -> None:
        super().__init__()
        self.loss, self.engine_ref, self.bad = BiGANLoss(), engine_ref, bad_iterations

    def forward(self, real_logits, fake_logits, for_discriminator):
        loss = self.loss(real_logits, fake_logits, for_discriminator=for_discriminator)
        if self.engine_ref and self.bad(self.engine_ref[0].state.iteration):
            loss = loss + float("nan")
        return loss


def _trainer(bad_iterations, max_epochs=2, **kwargs):
    net = tiny_bigan()
    data = [torch.randn(2, 1, 16, 16) for _ in range(4)]
    ref: list = []
    trainer = BiGANTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=data,
        network=net,
        eg_optimizer=torch.optim.Adam(itertools.chain(net.encoder.parameters(), net.generator.parameters()), 1e-4),
        d_optimizer=torch.optim.Adam(net.discriminator.parameters(), 1e-4),
        loss_function=BiGANObjective(adversarial_loss=_NaNAfter(ref, bad_iterations)),
        ema_network=copy.deepcopy(net),
        **kwargs,
    )
    ref.append(trainer)
    return trainer


def test_nan_loss_stops_at_next_check_without_syncing_every_step():
    trainer = _trainer(lambda it: it == 2, check_finite_every=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite discriminator and encoder-generator loss at iteration 2"):
        trainer.run()
    assert trainer.state.iteration == 3  # detected at the first check after the NaN, not before
    assert trainer._nonfinite.device.type == "cpu" and trainer._nonfinite.tolist()[:3] == [1, 1, 1]


def test_nan_loss_detected_at_epoch_end_and_tolerated_steps():
    trainer = _trainer(lambda it: it == 2, check_finite_every=0)
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        trainer.run()
    assert trainer.state.iteration == 4
    # one tolerated non-finite step (what a GradScaler skips under AMP): training completes
    trainer = _trainer(lambda it: it == 2, max_nonfinite_steps=1)
    trainer.run()
    assert trainer.state.epoch == 2
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        _trainer(lambda it: False, max_nonfinite_steps=-1)


def test_bundle_stops_on_nan_and_keeps_last_good_checkpoint(tmp_path, tiny_dataset):
    """A NaN in epoch 2 stops the bundle; checkpoint_epoch=1.pt stays the last checkpoint, finite and loadable."""
    wf = _workflow(TRAIN, tmp_path / "b", tiny_dataset, **dict(TINY_2D, num_workers=0))
    wf.parser["max_epochs"] = 3
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    epoch_length = trainer.state.epoch_length
    # the bundle's objective, with an adversarial loss that turns NaN in epoch 2
    trainer.loss_function.adversarial_loss = _NaNAfter([trainer], lambda it: it > epoch_length + 1)
    with pytest.raises(Exception) as info:
        wf.run()
    errors = [e for e in _chain(info.value) if isinstance(e, NonFiniteLossError)]
    assert errors, info.value
    models = tmp_path / "b" / "models"
    message = str(errors[0])
    assert f"non-finite discriminator and encoder-generator loss at iteration {epoch_length + 2}" in message
    assert f"last good checkpoint is {models / 'checkpoint_epoch=1.pt'}" in message
    assert [e for e, _ in find_checkpoints(models)] == [1]
    assert not (models / "model.pt").exists()  # no final checkpoint after the NaN
    ckpt = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == epoch_length
    assert all(torch.isfinite(v).all() for v in ckpt["network"].values() if v.is_floating_point())
