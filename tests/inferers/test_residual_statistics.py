"""Tests of the healthy residual statistics (per-voxel calibration of the reconstruction) and the map iterator."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SliceInferer

from monai_bigan.baselines import ZScoreBaseline
from monai_bigan.inferers import AnomalyScorer, ResidualStatistics, residual_maps
from tests.conftest import tiny_bigan

ZSCORE_MODES = ("abs", "negative", "positive")


def _healthy_maps(n: int, grid: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maps (x - recon, recon) of scans x = 0.2 + 0.8 * recon + noise, with a voxel-dependent noise level."""
    torch.manual_seed(seed)
    recon = torch.rand(n, 1, *grid) * 2 - 1
    noise_level = torch.linspace(0.05, 0.2, grid[0]).reshape(-1, *[1] * (len(grid) - 1))
    image = 0.2 + 0.8 * recon + torch.randn(n, 1, *grid) * noise_level
    return torch.cat([image - recon, recon], dim=1), image, recon


@pytest.mark.parametrize("grid", [(8, 8), (8, 8, 6)])
def test_regression_recovers_the_healthy_line_and_spread(grid):
    maps, _, _ = _healthy_maps(400, grid)
    stats = ResidualStatistics(min_std=0.0).fit(maps)
    torch.testing.assert_close(stats.slope, torch.full_like(stats.slope, 0.8), atol=0.05, rtol=0)
    torch.testing.assert_close(stats.mean, torch.full_like(stats.mean, 0.2), atol=0.05, rtol=0)
    expected_std = torch.linspace(0.05, 0.2, grid[0]).reshape(-1, *[1] * (len(grid) - 1)).expand(grid)
    torch.testing.assert_close(stats.std[0], expected_std, atol=0.02, rtol=0.1)
    # a new scan: the normalized map is |x - a - b recon| / s
    new_maps, image, recon = _healthy_maps(1, grid, seed=1)
    expected = (image[0] - stats.mean - stats.slope * recon[0]).abs() / stats.std
    torch.testing.assert_close(stats.normalize(new_maps[0]), expected, rtol=1e-4, atol=1e-4)
    assert stats.normalize(new_maps[0]).shape == (1, *grid)


def test_without_regression_it_is_the_zscore_of_the_signed_residual():
    maps, _, _ = _healthy_maps(30, (6, 6))
    stats = ResidualStatistics(regress=False, min_std=0.0).fit(maps)
    new = _healthy_maps(1, (6, 6), seed=2)[0][0]
    residual = maps[:, :1]
    expected = (new[:1] - residual.mean(0)).abs() / residual.std(0)
    torch.testing.assert_close(stats.normalize(new), expected, rtol=1e-3, atol=1e-3)


def test_an_uninformative_reconstruction_falls_back_to_the_image_zscore():
    torch.manual_seed(0)
    image = torch.randn(200, 1, 5, 5) * 0.3 + 0.1
    recon = torch.randn(200, 1, 5, 5)  # unrelated to the image
    stats = ResidualStatistics(min_std=0.0).fit(torch.cat([image - recon, recon], dim=1))
    assert stats.slope.abs().max() < 0.1
    x, r = torch.full((1, 5, 5), 1.0), torch.randn(1, 5, 5)
    zscore = (x - image.mean(0)).abs() / image.std(0)
    torch.testing.assert_close(stats.normalize(torch.cat([x - r, r])), zscore, rtol=0.15, atol=0.15)


def test_a_lesion_stands_out_where_the_reconstruction_explains_healthy_variation():
    maps, image, recon = _healthy_maps(100, (6, 6))
    stats = ResidualStatistics().fit(maps)
    lesion_image = 0.2 + 0.8 * recon[0] - 0.5  # darker than the reconstruction predicts by 0.5 everywhere
    z = stats.normalize(torch.cat([lesion_image - recon[0], recon[0]]))
    assert float(z.min()) > 2.0  # far above healthy (|z| ~ 1) although the image itself is within the healthy range


@pytest.mark.parametrize("grid", [(8, 8), (8, 8, 6)])
def test_the_std_floor_is_the_zscore_baselines_floor_on_the_same_images(grid):
    """Both maps share one noise floor in image units, so they differ only in what they subtract."""
    maps, image, _ = _healthy_maps(20, grid)
    image[:, :, :2] = -1.0  # background, constant in every scan and reconstructed exactly: its spread is floored
    maps[:, 1:, :2] = -1.0
    maps[:, :1] = image - maps[:, 1:]
    stats = ResidualStatistics(regress=False, min_std=0.1).fit(maps)
    zscore = ZScoreBaseline(min_std=0.1).fit(image)
    torch.testing.assert_close(stats.global_std, zscore.global_std, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.global_std, image.double().std().float().reshape(1), rtol=1e-5, atol=1e-6)
    floor = 0.1 * float(zscore.global_std)
    assert float(stats.effective_std().min()) == pytest.approx(floor, rel=1e-5)
    torch.testing.assert_close(stats.effective_std(), stats.std.clamp_min(floor))


def test_modes_keep_only_the_deviations_of_their_sign():
    maps = _healthy_maps(50, (6, 6))[0]
    new = _healthy_maps(1, (6, 6), seed=3)[0][0]
    new[0, :3] -= 1.0  # darker than predicted in the first rows, brighter in the last
    new[0, 3:] += 1.0
    out = {mode: ResidualStatistics(regress=False, mode=mode).fit(maps).normalize(new) for mode in ZSCORE_MODES}
    stats = ResidualStatistics(regress=False).fit(maps)
    signed = (new[:1] + new[1:] - stats.mean - stats.slope * new[1:]) / stats.effective_std()
    torch.testing.assert_close(out["abs"], signed.abs())
    torch.testing.assert_close(out["negative"], (-signed).clamp_min(0))
    torch.testing.assert_close(out["positive"], signed.clamp_min(0))
    assert float(out["negative"][0, :3].min()) > 2.0 and float(out["negative"][0, 3:].max()) == 0.0
    assert float(out["positive"][0, 3:].min()) > 2.0 and float(out["positive"][0, :3].max()) == 0.0
    with pytest.raises(ValueError, match="mode"):
        ResidualStatistics(mode="both")


def test_wrong_input_and_unfitted_raise(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        ResidualStatistics().normalize(torch.rand(2, 4, 4))
    stats = ResidualStatistics().fit(torch.rand(3, 2, 4, 4))
    with pytest.raises(ValueError, match="fitted grid"):
        stats.normalize(torch.rand(2, 5, 4))
    with pytest.raises(ValueError, match="fitted grid"):
        stats.normalize(torch.rand(1, 4, 4))  # the reconstruction channel is needed
    with pytest.raises(ValueError, match="at least two"):
        ResidualStatistics().fit(torch.rand(1, 2, 4, 4))


def test_state_dict_round_trip_through_a_file(tmp_path):
    stats = ResidualStatistics().fit(torch.rand(5, 2, 4, 4, 3))
    torch.save(stats.state_dict(), tmp_path / "residual_statistics.pt")
    loaded = ResidualStatistics()
    loaded.load_state_dict(torch.load(tmp_path / "residual_statistics.pt", weights_only=True))
    maps = torch.rand(2, 4, 4, 3)
    torch.testing.assert_close(loaded.normalize(maps), stats.normalize(maps))


def test_residual_maps_stitch_a_2d_model_over_volumes():
    torch.manual_seed(0)
    scorer = AnomalyScorer(tiny_bigan(2, size=16), residual="signed")
    volumes = [{"image": torch.rand(2, 1, 16, 16, 5) * 2 - 1}, {"image": torch.rand(1, 1, 16, 16, 5) * 2 - 1}]
    maps = list(residual_maps(scorer, volumes, SliceInferer(spatial_dim=2, roi_size=(16, 16))))
    assert len(maps) == 3 and all(m.shape == (2, 16, 16, 5) for m in maps)
    with torch.no_grad():
        direct = scorer.eval()(volumes[1]["image"][..., 2])[:, :2]
    torch.testing.assert_close(maps[2][..., 2], direct[0], rtol=1e-5, atol=1e-5)
