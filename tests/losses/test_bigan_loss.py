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
"""Tests of the BiGAN adversarial loss."""

from __future__ import annotations

import math

import pytest
import torch

from monai_bigan.losses import BiGANLoss

REAL = [2.0, -1.0, 0.5, 3.0]
FAKE = [-2.0, 0.0, 1.5, -0.5]


def _bce(logits: list[float], target: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against a constant target, by hand."""
    total = 0.0
    for logit in logits:
        p = 1.0 / (1.0 + math.exp(-logit))
        total -= target * math.log(p) + (1.0 - target) * math.log(1.0 - p)
    return total / len(logits)


def _logits(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25])
def test_discriminator_loss(smoothing: float) -> None:
    loss = BiGANLoss(label_smoothing=smoothing)(_logits(REAL), _logits(FAKE), for_discriminator=True)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_bce(REAL, 1.0 - smoothing) + _bce(FAKE, 0.0), rel=1e-9)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.25])
def test_generator_encoder_loss(smoothing: float) -> None:
    # flipped labels, never smoothed
    loss = BiGANLoss(label_smoothing=smoothing)(_logits(REAL), _logits(FAKE), for_discriminator=False)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_bce(REAL, 0.0) + _bce(FAKE, 1.0), rel=1e-9)


@pytest.mark.parametrize("for_discriminator", [True, False])
def test_zero_logits(for_discriminator: bool) -> None:
    # a discriminator that cannot tell pairs apart costs log(2) per term
    loss = BiGANLoss()(torch.zeros(5, 1), torch.zeros(5, 1), for_discriminator=for_discriminator)
    assert loss.item() == pytest.approx(2 * math.log(2.0), rel=1e-6)


def test_gradient_direction() -> None:
    real = _logits(REAL).requires_grad_()
    fake = _logits(FAKE).requires_grad_()
    BiGANLoss()(real, fake, for_discriminator=True).backward()
    # the discriminator loss decreases when real logits rise and fake logits fall
    assert torch.all(real.grad < 0)
    assert torch.all(fake.grad > 0)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5])
def test_invalid_label_smoothing(smoothing: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        BiGANLoss(label_smoothing=smoothing)
