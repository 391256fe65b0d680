"""One ``mode`` key: what the networks see, how scans are resampled, stitched and sampled in training."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SliceInferer
from monai.transforms import Compose, RandAffined

from monai_bigan.bundle import ModelGeometry


@pytest.mark.parametrize(
    "mode, expected",
    [
        (
            "slices",
            dict(spatial_dims=2, input_spatial_dims=3, in_shape=[1, 64, 64], resize_to=[64, 64, 48], axcodes="RAS"),
        ),
        ("image2d", dict(spatial_dims=2, input_spatial_dims=2, in_shape=[1, 64, 64], resize_to=[64, 64], axcodes="RA")),
        (
            "volume3d",
            dict(spatial_dims=3, input_spatial_dims=3, in_shape=[1, 32, 32, 32], resize_to=[32] * 3, axcodes="RAS"),
        ),
    ],
)
def test_everything_derives_from_the_mode(mode, expected):
    geometry = ModelGeometry(mode)
    for name, value in expected.items():
        assert getattr(geometry, name) == value, name
    assert isinstance(geometry.inferer(), SliceInferer if mode == "slices" else SimpleInferer)


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="mode must be one of"):
        ModelGeometry("slice")
    with pytest.raises(ValueError, match="image_size .* must have 3 values"):
        ModelGeometry("volume3d", image_size=(64, 64))
    with pytest.raises(ValueError, match="slice_dim"):
        ModelGeometry("slices", slice_dim=3)


@pytest.mark.parametrize("slice_dim", [0, 1, 2])
def test_training_samples_slices_along_slice_dim(slice_dim):
    """Training honours ``slice_dim`` as inference does (it was hard-coded to the last axis)."""
    geometry = ModelGeometry("slices", image_size=(12, 10), slice_dim=slice_dim, num_slices=6)
    assert geometry.resize_to[slice_dim] == 6
    volume = torch.full([1] + geometry.resize_to, -1.0)
    # one bright foreground slab, perpendicular to the slice axis
    index = [slice(None)] * 4
    index[slice_dim + 1] = slice(2, 4)
    volume[tuple(index)] = 1.0
    samples = Compose(geometry.slice_sampling(num_samples=3))({"image": volume})
    assert len(samples) == 3
    for sample in samples:
        assert tuple(sample["image"].shape) == (1, 12, 10) and set(sample) == {"image"}
        assert float(sample["image"].max()) == 1.0  # every slice cut through the foreground
    inferer = geometry.inferer()
    assert inferer.spatial_dim == slice_dim


def test_whole_image_modes_do_not_sample_slices_and_augment_in_their_dims():
    assert ModelGeometry("volume3d").slice_sampling(4) == []
    assert ModelGeometry("image2d").augmentation(0.0) == []
    (affine_2d,) = ModelGeometry("image2d").augmentation(1.0, rotate=0.2)
    (affine_3d,) = ModelGeometry("volume3d").augmentation(1.0, rotate=0.2)
    assert isinstance(affine_2d, RandAffined) and isinstance(affine_3d, RandAffined)
    image = torch.zeros(1, 16, 16, 16)
    image[:, 2:6, 4:9, 3:7] = 1
    affine_3d.set_random_state(0)
    assert affine_3d({"image": image})["image"].shape == image.shape
