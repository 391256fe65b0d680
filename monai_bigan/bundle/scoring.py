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
The scoring settings as one object: it builds the scorer and its post-processing, records itself in the
calibration, and is compared with the record at load time, so a new scoring knob is a change in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from monai.transforms import MapTransform

from monai_bigan.inferers import AnomalyScorer, ResidualStatistics
from monai_bigan.transforms import AnomalyScored, HeatmapPostprocessd
from monai_bigan.utils.bundle import as_bool

__all__ = ["ScoringSettings"]

logger = logging.getLogger(__name__)

_POLARITIES = ("abs", "negative", "positive")


@dataclass(frozen=True)
class ScoringSettings:
    """
    Every setting that changes a scan's anomaly score or heatmap once the networks are trained.

    Validation, calibration, inference, evaluation, the baselines, MONAI Label and export all build their scorer and
    post-processing from one instance, and :py:class:`monai_bigan.utils.ScoreCalibration` records
    :py:meth:`to_dict` beside the thresholds it fits. A field added here is built, recorded and checked everywhere.

    Args:
        alpha: weight of the residual term L_G in A(x) = alpha * L_G + (1 - alpha) * L_D.
        discriminator_term: L_D, ``"cross_entropy"``, ``"feature_matching"`` or ``"feature_matching_xx"``.
        refine_steps: test-time latent refinement steps (0: off).
        refine_lr: learning rate of the refinement (recorded only when refinement is on).
        heatmap_normalize: normalize the signed residual by healthy residual statistics at each voxel.
        heatmap_sigma: Gaussian smoothing of the heatmap, in voxels of the model grid.
        heatmap_mask: zero the heatmap outside the foreground.
        heatmap_polarity: ``"abs"``, ``"negative"`` or ``"positive"`` deviations count.
        top_k_slices: slices averaged into a volume's score (slice-wise models).
        score_top_fraction: score with the mean of this fraction of the largest heatmap voxels instead.

    Boolean fields accept the strings of a command line (``"false"``), see :py:func:`monai_bigan.utils.as_bool`.

    Example::

        settings = ScoringSettings(alpha=0.9, heatmap_sigma=2.0)
        scorer = settings.scorer(bigan)                   # AnomalyScorer: [B, 1, 64, 64] -> [B, 3, 64, 64]
        post = settings.postprocessing(statistics, slice_dim=2)   # heatmap, then the volume score
        settings.to_dict()                                # what calibration.json records
    """

    alpha: float = 0.9
    discriminator_term: str = "cross_entropy"
    refine_steps: int = 0
    refine_lr: float = 0.01
    heatmap_normalize: bool = True
    heatmap_sigma: float = 2.0
    heatmap_mask: bool = True
    heatmap_polarity: str = "abs"
    top_k_slices: int = 8
    score_top_fraction: float | None = None

    def __post_init__(self) -> None:
        coerce = {
            "alpha": float,
            "discriminator_term": str,
            "refine_steps": int,
            "refine_lr": float,
            "heatmap_normalize": as_bool,
            "heatmap_sigma": float,
            "heatmap_mask": as_bool,
            "heatmap_polarity": str,
            "top_k_slices": int,
        }
        for name, convert in coerce.items():
            object.__setattr__(self, name, convert(getattr(self, name)))
        if self.score_top_fraction is not None:
            object.__setattr__(self, "score_top_fraction", float(self.score_top_fraction))
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if self.heatmap_polarity not in _POLARITIES:
            raise ValueError(f"heatmap_polarity must be one of {_POLARITIES}, got {self.heatmap_polarity!r}.")

    @property
    def residual(self) -> str:
        """Residual of the scorer: signed when it is normalized by healthy statistics, else absolute (L1)."""
        return "signed" if self.heatmap_normalize else "l1"

    @property
    def heatmap_label(self) -> str:
        """What the heatmap's values mean, for review sheets and DICOM value maps."""
        return "normalized residual (healthy z)" if self.heatmap_normalize else "residual |x - G(E(x))|"

    def for_validation(self) -> ScoringSettings:
        """The per-epoch validation settings: the same, without test-time refinement (too costly every epoch)."""
        return replace(self, refine_steps=0)

    def for_baselines(self) -> ScoringSettings:
        """
        The settings the z-score and PCA baselines are scored with, so that every method shares the smoothing, mask,
        polarity and aggregation: no discriminator term (alpha 1), no refinement, and no healthy residual
        normalization (the baselines are their own healthy statistics).
        """
        return replace(self, alpha=1.0, refine_steps=0, heatmap_normalize=False)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values, as the calibration records them (``refine_lr`` only when refining)."""
        record = asdict(self)
        if self.refine_steps == 0:
            record["refine_lr"] = None
        return record

    def differences(self, recorded: Mapping[str, Any] | None) -> dict[str, tuple[Any, Any]]:
        """
        The settings that differ from a record written by :py:meth:`to_dict`, as ``{name: (recorded, now)}``.
        Names missing from the record (files written by older versions) are not compared.
        """
        if not recorded:
            return {}
        return {
            name: (recorded[name], value)
            for name, value in self.to_dict().items()
            if name in recorded and recorded[name] != value
        }

    def check(self, recorded: Mapping[str, Any] | None, source: str = "the calibration") -> dict[str, tuple]:
        """
        Log a warning naming every setting that differs from ``recorded`` (the thresholds, percentiles and flags of
        that record then do not fit these scores); returns the differences.

        Args:
            recorded: the record of :py:meth:`to_dict`, e.g. ``ScoreCalibration.scoring``.
            source: what holds the record, for the message.
        """
        differences = self.differences(recorded)
        if differences:
            listed = ", ".join(f"{k} {was!r} -> {now!r}" for k, (was, now) in sorted(differences.items()))
            logger.warning(
                f"{source} was fitted with other scoring settings ({listed}): thresholds, percentiles and flags will "
                "not fit these scores. Refit them with: python -m monai.bundle run calibrating --config_file "
                "bundles/bigan/train.json (with the same keys and preset)."
            )
        return differences

    def export_problems(self) -> list[str]:
        """
        Why a scripted or ONNX scorer would compute something other than the eager one (empty when it would not):
        latent refinement (optimizer steps) and ALAD's D_xx feature score cannot be exported.
        """
        problems = []
        if self.refine_steps > 0:
            problems.append(
                f"refine_steps={self.refine_steps}: test-time latent refinement runs optimizer steps, which an "
                "exported graph cannot; recalibrate a copy of the model with --refine_steps 0 and export that"
            )
        if self.discriminator_term == "feature_matching_xx":
            problems.append(
                "discriminator_term='feature_matching_xx': ALAD's D_xx feature score cannot be scripted; export with "
                "--discriminator_term feature_matching after recalibrating with it"
            )
        return problems

    def scorer(self, network: torch.nn.Module) -> AnomalyScorer:
        """The scorer of ``network`` (a ``BiGAN``): maps ``[B, 3, *spatial]`` for images ``[B, C, *spatial]``."""
        return AnomalyScorer(
            network,
            residual=self.residual,
            discriminator_term=self.discriminator_term,
            refine_steps=self.refine_steps,
            refine_lr=self.refine_lr,
        )

    def residual_statistics(
        self, device: str | torch.device = "cpu", regress: bool | str = False
    ) -> ResidualStatistics | None:
        """
        Empty healthy residual statistics for the heatmap normalization (to be fitted, or loaded from a checkpoint),
        or None without normalization.

        Args:
            device: where the statistics live.
            regress: fit a per-voxel slope (training only: a loaded slope is used either way).
        """
        if not self.heatmap_normalize:
            return None
        return ResidualStatistics(regress=as_bool(regress), mode=self.heatmap_polarity).to(device)

    def heatmap_postprocessing(self, statistics: ResidualStatistics | None = None) -> HeatmapPostprocessd:
        """Normalization (with ``statistics``), smoothing and masking of the residual channel of ``"pred"``."""
        return HeatmapPostprocessd(
            "pred",
            statistics=statistics if self.heatmap_normalize else None,
            sigma=self.heatmap_sigma,
            mask=self.heatmap_mask,
        )

    def score_transform(self, slice_dim: int | None, alpha: float | None = None) -> AnomalyScored:
        """The volume score A(x) and its components from the post-processed maps of ``"pred"``."""
        return AnomalyScored(
            "pred",
            alpha=self.alpha if alpha is None else alpha,
            slice_dim=slice_dim,
            top_k=self.top_k_slices,
            top_fraction=self.score_top_fraction,
        )

    def postprocessing(
        self, statistics: ResidualStatistics | None, slice_dim: int | None, alpha: float | None = None
    ) -> list[MapTransform]:
        """
        The post-processing every scoring path shares: the heatmap, then the score.

        Args:
            statistics: healthy residual statistics (ignored without normalization).
            slice_dim: slice axis of a slice-wise model, or None.
            alpha: overrides the residual weight (the baselines, which have no L_D, use 1).
        """
        return [self.heatmap_postprocessing(statistics), self.score_transform(slice_dim, alpha)]

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the settings, which are also the bundle's config keys."""
        return [f.name for f in fields(cls)]
