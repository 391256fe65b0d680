"""``ScoringSettings``: one object builds the scorer and its post-processing and records and checks itself."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from monai_bigan.bundle import ModelGeometry, ScoringSettings, build_bigan
from monai_bigan.inferers import AnomalyScorer
from monai_bigan.transforms import AnomalyScored, HeatmapPostprocessd


def test_command_line_strings_are_coerced_and_bad_values_refused():
    settings = ScoringSettings(heatmap_normalize="false", heatmap_mask="true", top_k_slices="4", alpha="0.5")
    assert settings.heatmap_normalize is False and settings.heatmap_mask is True and settings.top_k_slices == 4
    assert settings.residual == "l1" and settings.residual_statistics() is None
    with pytest.raises(ValueError, match="alpha"):
        ScoringSettings(alpha=2)
    with pytest.raises(ValueError, match="heatmap_polarity"):
        ScoringSettings(heatmap_polarity="both")


def test_every_field_is_recorded_and_compared():
    """A new knob is recorded and checked without touching any other place (the old helper had to list it)."""
    record = ScoringSettings().to_dict()
    assert set(record) == set(ScoringSettings.field_names())
    for field in dataclasses.fields(ScoringSettings):
        changed = {
            bool: lambda v: not v,
            int: lambda v: v + 1,
            float: lambda v: v / 2,
        }
        default = getattr(ScoringSettings(), field.name)
        if field.name == "refine_lr":
            settings = ScoringSettings(refine_steps=1, refine_lr=0.5)
            assert ScoringSettings(refine_steps=1).differences(settings.to_dict()) == {"refine_lr": (0.5, 0.01)}
            continue
        if isinstance(default, str):
            value = {"discriminator_term": "feature_matching", "heatmap_polarity": "negative"}[field.name]
        elif default is None:
            value = 0.01
        else:
            value = changed[type(default)](default)
        other = dataclasses.replace(ScoringSettings(), **{field.name: value})
        assert field.name in ScoringSettings().differences(other.to_dict()), field.name
    assert ScoringSettings().differences(None) == {}


def test_builds_the_scorer_and_the_shared_postprocessing():
    net = build_bigan(ModelGeometry("slices", (16, 16)), latent_size=8, channels=(4, 8), strides=(2, 2))
    settings = ScoringSettings(refine_steps=3, refine_lr=0.2, discriminator_term="feature_matching", heatmap_sigma=1.5)
    scorer = settings.scorer(net)
    assert isinstance(scorer, AnomalyScorer) and scorer.refine_steps == 3 and scorer.residual == "signed"
    assert settings.for_validation().scorer(net).refine_steps == 0
    heatmap, score = settings.postprocessing(statistics=None, slice_dim=2)
    assert isinstance(heatmap, HeatmapPostprocessd) and heatmap.sigma == 1.5
    assert isinstance(score, AnomalyScored) and score.slice_dim == 2 and score.alpha == 0.9
    assert settings.score_transform(None, alpha=1.0).alpha == 1.0  # the baselines have no L_D
    maps = scorer.eval()(torch.rand(2, 1, 16, 16))
    assert maps.shape == (2, 3, 16, 16)


def test_what_cannot_be_exported_is_named():
    assert ScoringSettings().export_problems() == []
    problems = ScoringSettings(refine_steps=2, discriminator_term="feature_matching_xx").export_problems()
    assert len(problems) == 2 and "refine_steps" in problems[0] and "feature_matching_xx" in problems[1]
