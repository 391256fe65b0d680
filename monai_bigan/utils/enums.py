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
"""String keys and Ignite events used by the BiGAN workflows."""

from __future__ import annotations

from monai.utils import StrEnum, optional_import

EventEnum, _ = optional_import("ignite.engine", name="EventEnum", as_type="base")

__all__ = ["BiGANKeys", "BiGANIterationEvents", "AnomalyKeys"]


class BiGANKeys(StrEnum):
    """
    Keys of the dictionary that :py:class:`monai_bigan.engines.BiGANTrainer` stores in ``engine.state.output``.

    - ``REALS``: the real batch x.
    - ``LATENTS``: the prior samples z ~ N(0, I).
    - ``ENC_LATENTS``: the encoded codes E(x).
    - ``FAKES``: the generated batch G(z).
    - ``REAL_LOGITS`` / ``FAKE_LOGITS``: D(x, E(x)) and D(G(z), z) in the discriminator step.
    - ``D_LOSS``: discriminator loss; ``EG_LOSS``: joint encoder + generator loss (with the optional reconstruction
      term); ``RECON_LOSS``: that term before weighting, when enabled; ``LOSS``: ``D_LOSS + EG_LOSS``.

    Only with ALAD's extra discriminators (``BiGAN.discriminator_xx`` / ``discriminator_zz`` set), the terms summed
    into ``D_LOSS`` and ``EG_LOSS``:

    - ``D_XZ_LOSS`` / ``EG_XZ_LOSS``: the joint discriminator D(x, z) terms of the discriminator and of the
      encoder + generator steps.
    - ``D_XX_LOSS``: D_xx on (x, x) real against (x, G(E(x))) fake, discriminator step; ``CYCLE_X_LOSS``: the same
      with flipped labels, encoder + generator step (ALAD's ``cost_x``). Only with ``discriminator_xx``.
    - ``D_ZZ_LOSS``: D_zz on (z, z) real against (z, E(G(z))) fake, discriminator step; ``CYCLE_Z_LOSS``: the same
      with flipped labels, encoder + generator step (ALAD's ``cost_z``). Only with ``discriminator_zz``.
    """

    REALS = "reals"
    LATENTS = "latents"
    ENC_LATENTS = "enc_latents"
    FAKES = "fakes"
    REAL_LOGITS = "real_logits"
    FAKE_LOGITS = "fake_logits"
    D_LOSS = "d_loss"
    EG_LOSS = "eg_loss"
    #: the adversarial part of the encoder + generator loss (without the weighted reconstruction term)
    EG_ADV_LOSS = "eg_adv_loss"
    RECON_LOSS = "recon_loss"
    LOSS = "loss"
    D_XZ_LOSS = "d_xz_loss"
    D_XX_LOSS = "d_xx_loss"
    D_ZZ_LOSS = "d_zz_loss"
    EG_XZ_LOSS = "eg_xz_loss"
    CYCLE_X_LOSS = "cycle_x_loss"
    CYCLE_Z_LOSS = "cycle_z_loss"


class AnomalyKeys(StrEnum):
    """Keys that the anomaly-scoring transforms write into a data dictionary."""

    SCORE = "score"
    SCORE_RESIDUAL = "score_residual"
    SCORE_DISCRIMINATOR = "score_discriminator"
    WORST_SLICE = "worst_slice"
    SLICE_MAP = "slice_map"
    HEATMAP = "heatmap"
    RECONSTRUCTION = "reconstruction"


class BiGANIterationEvents(EventEnum):
    """
    Fine-grained events fired by :py:class:`monai_bigan.engines.BiGANTrainer` inside one iteration, so handlers can
    hook, e.g., gradient clipping or logging between the discriminator and the encoder/generator steps.
    """

    FORWARD_COMPLETED = "forward_completed"
    DISCRIMINATOR_COMPLETED = "discriminator_completed"
    ENCODER_GENERATOR_COMPLETED = "encoder_generator_completed"
    EMA_COMPLETED = "ema_completed"
