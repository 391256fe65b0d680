from __future__ import annotations

import pytest
import torch

from monai_bigan.transforms import AnomalyScored


def _maps(spatial):
    torch.manual_seed(1)
    return torch.rand(3, *spatial)


def test_whole_image_score_is_weighted_mean():
    maps = _maps((8, 8))
    out = AnomalyScored("pred", alpha=0.7, slice_dim=None)({"pred": maps})
    expected = 0.7 * maps[0].mean() + 0.3 * maps[2].mean()
    torch.testing.assert_close(out["score"], expected.reshape(1))
    torch.testing.assert_close(out["score_residual"], maps[0].mean().reshape(1))
    torch.testing.assert_close(out["score_discriminator"], maps[2].mean().reshape(1))
    assert int(out["worst_slice"]) == -1
    # a volume scored whole is still localized along its last axis
    vol = torch.zeros(3, 4, 4, 5)
    vol[0, :, :, 3] = 1.0
    out = AnomalyScored("pred", slice_dim=None)({"pred": vol})
    assert int(out["worst_slice"]) == 3 and out["slice_map"].shape == (1, 4, 4, 5)
    torch.testing.assert_close(out["score_residual"], vol[0].mean().reshape(1))


@pytest.mark.parametrize("slice_dim", [0, 1, 2])
def test_slice_scores_take_top_k_over_the_right_axis(slice_dim):
    maps = torch.zeros(3, 6, 7, 5)
    index = [slice(None)] * 3
    index[slice_dim] = 1
    maps[0][tuple(index)] = 1.0  # one anomalous slice along slice_dim
    out = AnomalyScored("pred", alpha=1.0, slice_dim=slice_dim, top_k=1)({"pred": maps})
    assert int(out["worst_slice"]) == 1
    torch.testing.assert_close(out["score"], torch.ones(1))
    out2 = AnomalyScored("pred", alpha=1.0, slice_dim=slice_dim, top_k=2)({"pred": maps})
    torch.testing.assert_close(out2["score"], torch.tensor([0.5]))


def test_invalid_arguments_and_inputs():
    with pytest.raises(ValueError, match="alpha"):
        AnomalyScored("pred", alpha=1.5)
    with pytest.raises(ValueError, match="top_k"):
        AnomalyScored("pred", top_k=0)
    with pytest.raises(ValueError, match="3 channels"):
        AnomalyScored("pred")({"pred": torch.rand(1, 4, 4)})
    with pytest.raises(ValueError, match="slice_dim"):
        AnomalyScored("pred", slice_dim=3)({"pred": torch.rand(3, 4, 4)})


def test_near_empty_slices_are_not_scored():
    maps = torch.zeros(3, 8, 8, 6)
    maps[0, ..., 0] = 5.0  # an end slice with a huge residual but no anatomy
    maps[0, ..., 3] = 1.0
    image = -torch.ones(1, 8, 8, 6)
    image[0, 2:6, 2:6, 1:5] = 0.5
    out = AnomalyScored("pred", alpha=1.0, slice_dim=2, top_k=1)({"pred": maps, "image": image})
    assert int(out["worst_slice"]) == 3
    # without the image every slice counts
    out = AnomalyScored("pred", alpha=1.0, slice_dim=2, top_k=1, image_key=None)({"pred": maps, "image": image})
    assert int(out["worst_slice"]) == 0


def test_top_fraction_scores_the_largest_foreground_voxels():
    maps = torch.zeros(3, 10, 10, 4)
    maps[0, 2:4, 2:4, 1] = 5.0  # a small focal anomaly: 4 of the 400 voxels
    image = torch.ones(1, 10, 10, 4)
    sliced = AnomalyScored("pred", alpha=1.0, slice_dim=2, top_k=1)({"pred": maps, "image": image})
    focal = AnomalyScored("pred", alpha=1.0, slice_dim=2, top_k=1, top_fraction=0.01)({"pred": maps, "image": image})
    torch.testing.assert_close(sliced["score"], torch.tensor([5.0 * 4 / 100]))  # diluted over its slice
    torch.testing.assert_close(focal["score"], torch.tensor([5.0]))  # the top 1 % = the 4 anomalous voxels
    assert int(focal["worst_slice"]) == 1
    with pytest.raises(ValueError, match="top_fraction"):
        AnomalyScored("pred", top_fraction=0.0)
