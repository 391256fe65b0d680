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
"""Tests of the voxel-wise z-score baseline and the shared input helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer, SliceInferer

from monai_bigan.baselines import ZScoreBaseline
from monai_bigan.inferers.voxel_statistics import iter_images


def _pattern(spatial: tuple[int, ...]) -> torch.Tensor:
    """A fixed smooth pattern in [-1, 1], shape (1, *spatial), with a constant background border."""
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij")
    radius = sum(g**2 for g in grids)
    inside = radius < 0.8
    values = 0.5 * torch.cos(3 * sum(grids))
    return torch.where(inside, values, torch.full_like(values, -1.0)).unsqueeze(0)


def _healthy(n: int, spatial: tuple[int, ...], seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = _pattern(spatial)
    return base.unsqueeze(0) + noise * torch.randn((n,) + base.shape, generator=gen)


def _spatial(spatial_dims: int) -> tuple[int, ...]:
    return (12, 10) if spatial_dims == 2 else (8, 10, 6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_output_layout(spatial_dims):
    spatial = _spatial(spatial_dims)
    train = _healthy(10, spatial)
    zs = ZScoreBaseline().fit(train)
    x = _healthy(3, spatial, seed=1)
    out = zs(x)
    assert out.shape == (3, 3) + spatial
    assert zs.grid_shape == (1,) + spatial
    assert int(zs.num_samples) == 10
    torch.testing.assert_close(out[:, 1:2], zs.mean.expand(3, 1, *spatial))
    torch.testing.assert_close(out[:, 2], torch.zeros((3,) + spatial))
    assert torch.isfinite(out).all() and (out[:, 0] >= 0).all()


def test_hand_computation_three_arrays():
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    b = np.array([[[3.0, 2.0], [5.0, 8.0]]])
    c = np.array([[[2.0, 2.0], [1.0, 6.0]]])
    stack = np.stack([a, b, c])
    zs = ZScoreBaseline(mode="abs", min_std=0.1, eps=1e-6).fit([torch.tensor(v) for v in (a, b, c)])

    mean = stack.mean(axis=0)
    std = stack.std(axis=0, ddof=1)  # voxel (0, 1) is constant: std 0, floored
    global_std = stack.std(ddof=1)
    floor = 0.1 * global_std
    torch.testing.assert_close(zs.mean, torch.tensor(mean, dtype=torch.float32))
    torch.testing.assert_close(zs.std, torch.tensor(std, dtype=torch.float32))
    torch.testing.assert_close(zs.global_std, torch.tensor([global_std], dtype=torch.float32))
    eff = np.maximum(std, floor)
    assert eff[0, 0, 1] == pytest.approx(floor) and eff[0, 1, 1] == pytest.approx(2.0)

    x = np.array([[[[0.0, 2.5], [3.0, 10.0]]]])
    expected = (x - mean) / eff
    out = zs(torch.tensor(x, dtype=torch.float32))
    torch.testing.assert_close(out[:, 0:1], torch.tensor(np.abs(expected), dtype=torch.float32))
    zs.mode = "positive"
    torch.testing.assert_close(zs(torch.tensor(x))[:, 0:1], torch.tensor(np.maximum(expected, 0)))
    zs.mode = "negative"
    torch.testing.assert_close(zs(torch.tensor(x))[:, 0:1], torch.tensor(np.maximum(-expected, 0)))


def test_streaming_matches_batch_statistics_and_channels_average():
    train = torch.rand(7, 2, 5, 4, 3, dtype=torch.float64) * 4 - 2
    zs = ZScoreBaseline(min_std=0.0, eps=0.0).fit(v for v in train)  # a generator: one pass
    torch.testing.assert_close(zs.mean, train.mean(0).float())
    torch.testing.assert_close(zs.std, train.std(0).float())
    torch.testing.assert_close(zs.global_std, train.transpose(0, 1).reshape(2, -1).std(1).float())
    x = torch.rand(2, 2, 5, 4, 3)
    z = ((x - train.mean(0).float()) / train.std(0).float()).abs().mean(1, keepdim=True)
    torch.testing.assert_close(zs(x)[:, 0:1], z)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bright_spot_is_detected(spatial_dims):
    spatial = _spatial(spatial_dims)
    zs = ZScoreBaseline().fit(_healthy(20, spatial))
    clean = _healthy(1, spatial, seed=5)
    spot = tuple(s // 2 for s in spatial)
    lesioned = clean.clone()
    lesioned[(0, 0) + spot] += 1.0
    maps = zs(torch.cat([clean, lesioned]))
    anomaly = maps[1, 0]
    rest = anomaly.clone()
    rest[spot] = 0
    assert anomaly[spot] > 3 * rest.max()
    assert anomaly[spot] > 10
    assert maps[1, 0].mean() > maps[0, 0].mean()
    # the healthy sample stays in the usual z range, the constant background is floored, not divided by ~0
    assert maps[0, 0].max() < 6


def test_errors():
    zs = ZScoreBaseline()
    assert not zs.is_fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        zs(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least two"):
        ZScoreBaseline().fit(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="fixed grid"):
        ZScoreBaseline().fit([torch.rand(1, 4, 4), torch.rand(1, 4, 5)])
    with pytest.raises(ValueError, match="mode"):
        ZScoreBaseline(mode="two_sided")
    with pytest.raises(ValueError, match="non-negative"):
        ZScoreBaseline(min_std=-1.0)
    zs.fit(torch.rand(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        zs(torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="fitted"):
        zs(torch.rand(1, 1, 4, 4, 1))  # 3D input for a 2D grid
    with pytest.raises(ValueError, match="fitted"):
        zs(torch.rand(1, 2, 4, 4))  # channel mismatch
    with pytest.raises(KeyError, match="img"):
        ZScoreBaseline().fit([{"image": torch.rand(1, 4, 4)}], image_key="img")


def test_state_dict_round_trip():
    spatial = (6, 5, 4)
    zs = ZScoreBaseline(mode="positive").fit(_healthy(5, spatial))
    restored = ZScoreBaseline(mode="positive")
    restored.load_state_dict(zs.state_dict())
    assert restored.is_fitted and restored.grid_shape == zs.grid_shape
    for name in ("mean", "std", "global_std", "num_samples"):
        torch.testing.assert_close(getattr(restored, name), getattr(zs, name))
    x = _healthy(2, spatial, seed=3)
    torch.testing.assert_close(restored(x), zs(x))
    assert list(zs.parameters()) == []
    # buffers follow dtype / device moves
    assert zs.to(torch.float64).mean.dtype == torch.float64


def test_fit_from_dataloader_of_dicts_and_other_sources():
    spatial = (6, 5, 4)
    train = _healthy(7, spatial)
    reference = ZScoreBaseline().fit(train)
    items = [{"image": v, "label": 0} for v in train]
    loader = DataLoader(Dataset(items), batch_size=3, shuffle=False)
    from_loader = ZScoreBaseline().fit(loader)
    torch.testing.assert_close(from_loader.mean, reference.mean)
    torch.testing.assert_close(from_loader.std, reference.std)
    assert int(from_loader.num_samples) == 7
    # a data set of unbatched dicts, numpy items, and batches from a plain iterable
    torch.testing.assert_close(ZScoreBaseline().fit(Dataset(items)).std, reference.std)
    torch.testing.assert_close(ZScoreBaseline().fit([v.numpy() for v in train]).std, reference.std)
    torch.testing.assert_close(ZScoreBaseline().fit([train[:4], train[4:]], batched=True).std, reference.std)
    shapes = [tuple(t.shape) for t in iter_images(loader)]
    assert shapes == [(1,) + spatial] * 7


def test_monai_inferers_call_it_like_a_network():
    vol = _healthy(6, (8, 8, 5))
    zs3d = ZScoreBaseline().fit(vol)
    out = SimpleInferer()(vol[:2], zs3d)
    assert out.shape == (2, 3, 8, 8, 5)
    # a 2D baseline fitted on axial slices, stitched over a volume slice by slice
    slices = torch.cat([v.movedim(-1, 0) for v in vol])  # (6 * 5, 1, 8, 8)
    zs2d = ZScoreBaseline().fit(slices)
    assert zs2d.grid_shape == (1, 8, 8)
    out = SliceInferer(roi_size=(8, 8), spatial_dim=2, sw_batch_size=5, progress=False)(vol[:1], zs2d)
    assert out.shape == (1, 3, 8, 8, 5)
    torch.testing.assert_close(out[0, :, :, :, 2], zs2d(vol[:1, :, :, :, 2])[0])
