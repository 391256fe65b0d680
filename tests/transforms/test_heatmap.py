"""Tests of the residual heatmap post-processing."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_bigan.inferers import ResidualStatistics
from monai_bigan.transforms import HeatmapPostprocessd


def _item(grid, seed=0):
    torch.manual_seed(seed)
    image = -torch.ones(1, *grid)
    inner = tuple(slice(2, s - 2) for s in grid)
    image[(slice(None),) + inner] = 0.5  # foreground box inside a -1 background
    maps = torch.rand(3, *grid)
    return {"pred": MetaTensor(maps.clone(), affine=torch.eye(4)), "image": image}, maps


@pytest.mark.parametrize("grid", [(12, 12), (12, 12, 8)])
def test_normalization_uses_the_stored_statistics(grid):
    item, maps = _item(grid)
    stats = ResidualStatistics().fit(torch.rand(10, 2, *grid))
    out = HeatmapPostprocessd("pred", statistics=stats)(item)
    torch.testing.assert_close(out["pred"][:1].as_tensor(), stats.normalize(maps[:2]))
    torch.testing.assert_close(out["pred"][1:].as_tensor(), maps[1:])  # reconstruction and L_D untouched
    assert isinstance(out["pred"], MetaTensor) and torch.equal(out["pred"].affine, item["pred"].affine)


@pytest.mark.parametrize("grid", [(12, 12), (12, 12, 8)])
def test_mask_zeroes_the_background_only(grid):
    item, maps = _item(grid)
    out = HeatmapPostprocessd("pred", mask=True)(item)["pred"][0]
    foreground = item["image"][0] > -0.9
    assert out[~foreground].abs().max() == 0
    torch.testing.assert_close(out[foreground], maps[0][foreground])


def test_smoothing_spreads_a_spike_over_all_spatial_dims():
    item, _ = _item((12, 12, 8))
    item["pred"][0] = 0
    item["pred"][0, 6, 6, 4] = 1.0
    out = HeatmapPostprocessd("pred", sigma=1.0)(item)["pred"][0]
    assert out[6, 6, 4] < 0.2
    assert out[6, 6, 3] > 0 and out[6, 5, 4] > 0 and out[5, 6, 4] > 0  # all three axes
    torch.testing.assert_close(out.sum(), torch.tensor(1.0), rtol=1e-3, atol=1e-3)


def test_errors_name_the_problem():
    item, _ = _item((12, 12))
    with pytest.raises(RuntimeError, match="not fitted"):
        HeatmapPostprocessd("pred", statistics=ResidualStatistics())(item)
    with pytest.raises(ValueError, match="sigma"):
        HeatmapPostprocessd("pred", sigma=-1.0)
    with pytest.raises(ValueError, match="image"):
        HeatmapPostprocessd("pred", mask=True)({"pred": item["pred"]})
