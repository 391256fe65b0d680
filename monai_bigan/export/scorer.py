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
"""
An :py:class:`~monai_bigan.inferers.AnomalyScorer` that loads a bare BiGAN state dict, for MONAI's ``ckpt_export``.

``python -m monai.bundle ckpt_export`` loads ``checkpoint[key_in_ckpt]`` into the module named by ``--net_id`` and
then scripts that same module. The training checkpoint holds the BiGAN (``ema_network``: keys ``encoder.*``,
``generator.*``, ``discriminator.*``) while the scorer's keys are prefixed ``network.``; this scorer accepts both, so
``--net_id scorer_def --key_in_ckpt ema_network`` exports the whole scorer. A whole training checkpoint is accepted too
(its ``ema_network`` entry, or ``network`` for a model trained without EMA), so the model zoo's export without
``--key_in_ckpt`` works on ``models/model.pt``; the inference config names this scorer ``network_def``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai_bigan.inferers import AnomalyScorer
from monai_bigan.utils.checkpoint import scoring_network_key

__all__ = ["CheckpointAnomalyScorer"]


class CheckpointAnomalyScorer(AnomalyScorer):
    """
    :py:class:`~monai_bigan.inferers.AnomalyScorer` whose ``load_state_dict`` also takes the state dict of its BiGAN.

    A state dict with no key starting with ``network.`` is loaded into ``self.network``; any other is loaded as usual.
    ``forward`` is the scorer's, unchanged, so the module scripts and exports like an ``AnomalyScorer``.

    Args:
        network: the :py:class:`monai_bigan.networks.BiGAN` to score with.
        residual: ``"l1"`` or ``"l2"``, see :py:class:`~monai_bigan.inferers.AnomalyScorer`.
        discriminator_term: ``"cross_entropy"`` or ``"feature_matching"``.

    Example::

        scorer = CheckpointAnomalyScorer(bigan)
        scorer.load_state_dict(torch.load("models/model.pt", weights_only=True)["ema_network"])
    """

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """
        Load a scorer state dict (``network.*`` keys) or a BiGAN state dict (``encoder.*``, ``generator.*``, ...).

        Args:
            state_dict: the state dict of the scorer or of its BiGAN, or a whole training checkpoint.
            strict: require the keys to match exactly, as :py:meth:`torch.nn.Module.load_state_dict`.
            assign: assign the tensors instead of copying them, as :py:meth:`torch.nn.Module.load_state_dict`.

        Returns:
            the missing and unexpected keys, as :py:meth:`torch.nn.Module.load_state_dict` returns them.
        """
        if isinstance(state_dict.get("ema_network", state_dict.get("network")), Mapping):
            # a whole training checkpoint: score with its EMA copy, as inference does
            state_dict = state_dict[scoring_network_key(state_dict)]
        if not any(str(k).startswith("network.") for k in state_dict):
            return self.network.load_state_dict(state_dict, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
