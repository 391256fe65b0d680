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
Base class of the baselines: fitted voxel-wise statistics
(:py:class:`monai_bigan.inferers.voxel_statistics.FittedStatistics`) scored with the output layout of the BiGAN scorer
:py:class:`monai_bigan.inferers.AnomalyScorer`.
"""

from __future__ import annotations

import torch

from monai_bigan.inferers.voxel_statistics import FittedStatistics

__all__ = ["FittedBaseline"]


class FittedBaseline(FittedStatistics):
    """
    Base of the baselines: no trainable parameters, fitted statistics as buffers whose shapes are only known after
    fitting (so that loading a fitted ``state_dict`` into a fresh, unfitted module resizes them), inputs checked
    against the fitted grid ``mean.shape``, and outputs in the layout of :py:class:`monai_bigan.inferers.AnomalyScorer`.
    """

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a fitted state_dict first.")
        if x.dim() != self.mean.dim() + 1 or tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"{type(self).__name__} was fitted on items of shape {tuple(self.mean.shape)} and expects a batch "
                f"(B, {', '.join(str(s) for s in self.mean.shape)}), got {tuple(x.shape)}; resize the input to the "
                "fitted grid."
            )
        return x if x.is_floating_point() else x.float()

    @staticmethod
    def _assemble(score: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
        """
        The BiGAN scorer's output layout from a per-channel score ``(B, C, *spatial)`` and the expected image.

        Returns:
            ``(B, 3, *spatial)``: channel-averaged anomaly map, first channel of the expected image, zeros.
        """
        anomaly = score.mean(dim=1, keepdim=True)
        expected = expected[:, :1].to(anomaly.dtype).expand_as(anomaly)
        # contiguous: the window inferers write into the output buffer and reject expanded views
        return torch.cat([anomaly, expected, torch.zeros_like(anomaly)], dim=1).contiguous()
