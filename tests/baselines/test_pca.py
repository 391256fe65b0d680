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
"""Tests of the PCA reconstruction baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SliceInferer
from sklearn.decomposition import PCA

from monai_bigan.baselines import PCABaseline


def _pattern(spatial: tuple[int, ...]) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij")
    radius = sum(g**2 for g in grids)
    values = 0.5 * torch.cos(3 * sum(grids))
    return torch.where(radius < 0.8, values, torch.full_like(values, -1.0)).unsqueeze(0)


def _healthy(n: int, spatial: tuple[int, ...], seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """Fixed pattern with a random global contrast (a real principal direction) and small noise."""
    gen = torch.Generator().manual_seed(seed)
    base = _pattern(spatial)
    contrast = 1 + 0.2 * torch.randn((n,) + (1,) * base.dim(), generator=gen)
    return contrast * base.unsqueeze(0) + noise * torch.randn((n,) + base.shape, generator=gen)


def _spatial(spatial_dims: int) -> tuple[int, ...]:
    return (12, 10) if spatial_dims == 2 else (8, 10, 6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("residual", ["l1", "l2"])
def test_output_layout_and_residual(spatial_dims, residual):
    spatial = _spatial(spatial_dims)
    pca = PCABaseline(n_components=3, residual=residual).fit(_healthy(10, spatial))
    x = _healthy(2, spatial, seed=1)
    out = pca(x)
    assert out.shape == (2, 3) + spatial
    assert pca.n_components_ == 3 and pca.components.shape == (3, int(np.prod(spatial)))
    recon = pca.reconstruct(x)
    torch.testing.assert_close(out[:, 1:2], recon)
    diff = x - recon
    torch.testing.assert_close(out[:, 0:1], diff.abs() if residual == "l1" else diff**2)
    torch.testing.assert_close(out[:, 2], torch.zeros((2,) + spatial))
    # the rows of W are orthonormal
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(3), atol=1e-5, rtol=0)


def test_matches_sklearn_projection():
    train = torch.rand(9, 2, 5, 4)
    pca = PCABaseline(n_components=4, random_state=0).fit(train)
    ref = PCA(n_components=4, svd_solver="full").fit(train.reshape(9, -1).double().numpy())
    x = torch.rand(3, 2, 5, 4)
    expected = ref.inverse_transform(ref.transform(x.reshape(3, -1).double().numpy())).reshape(x.shape)
    torch.testing.assert_close(pca.reconstruct(x), torch.tensor(expected, dtype=torch.float32), atol=1e-4, rtol=0)
    # two channels: the map is the channel average
    torch.testing.assert_close(pca(x)[:, 0], (x - pca.reconstruct(x)).abs().mean(1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_all_components_reconstruct_training_samples(spatial_dims):
    spatial = _spatial(spatial_dims)
    train = _healthy(6, spatial)
    for n_components in (5, 50):  # n_samples - 1, and more, clamped to it
        pca = PCABaseline(n_components=n_components).fit(train)
        assert pca.n_components_ == 5
        torch.testing.assert_close(pca.reconstruct(train), train, atol=1e-4, rtol=0)
        assert pca(train[2:3])[:, 0].max() < 1e-4


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_one_component_reconstructs_the_first_direction(spatial_dims):
    spatial = _spatial(spatial_dims)
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand((1,) + spatial, generator=gen)
    direction = torch.randn((1,) + spatial, generator=gen)
    direction /= direction.norm()
    coeffs = torch.linspace(-3, 3, 8)
    train = mean + coeffs.reshape(-1, *([1] * direction.dim())) * direction  # rank one after centring
    pca = PCABaseline(n_components=1).fit(train)
    assert pca.n_components_ == 1
    assert float(pca.explained_variance_ratio[0]) > 0.99
    assert abs(float((pca.components[0] * direction.reshape(-1)).sum())) > 0.999
    on_line = (mean + 1.7 * direction).unsqueeze(0)  # a new sample, on the first principal direction
    torch.testing.assert_close(pca.reconstruct(on_line), on_line, atol=1e-4, rtol=0)
    off_line = on_line + 0.5 * torch.randn(on_line.shape, generator=gen)
    assert pca(off_line)[:, 0].mean() > 100 * pca(on_line)[:, 0].mean()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bright_spot_is_detected(spatial_dims):
    spatial = _spatial(spatial_dims)
    pca = PCABaseline(n_components=0.95).fit(_healthy(20, spatial))
    assert 1 <= pca.n_components_ <= 19
    assert float(pca.explained_variance_ratio.sum()) >= 0.95
    clean = _healthy(1, spatial, seed=5)
    spot = tuple(s // 2 for s in spatial)
    lesioned = clean.clone()
    lesioned[(0, 0) + spot] += 1.0
    maps = pca(torch.cat([clean, lesioned]))
    anomaly = maps[1, 0]
    rest = anomaly.clone()
    rest[spot] = 0
    assert anomaly[spot] > 0.5
    assert anomaly[spot] > 3 * rest.max()
    assert maps[1, 0].mean() > maps[0, 0].mean()


def test_errors():
    pca = PCABaseline()
    assert not pca.is_fitted and pca.n_components_ == 0
    with pytest.raises(RuntimeError, match="not fitted"):
        pca(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least two"):
        PCABaseline().fit([torch.rand(1, 4, 4)])
    with pytest.raises(ValueError, match="fixed grid"):
        PCABaseline().fit([torch.rand(1, 4, 4), torch.rand(1, 4, 4, 2)])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        PCABaseline(n_components=1.5)
    with pytest.raises(ValueError, match=">= 1"):
        PCABaseline(n_components=0)
    with pytest.raises(TypeError):
        PCABaseline(n_components="mle")
    with pytest.raises(ValueError, match="residual"):
        PCABaseline(residual="l3")
    pca.fit(torch.rand(4, 1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\(1, 4, 4, 3\)"):
        pca(torch.rand(2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="fitted"):
        pca(torch.rand(1, 4, 4, 3))  # missing batch dimension


def test_state_dict_round_trip():
    spatial = (6, 5, 4)
    pca = PCABaseline(n_components=3, residual="l2").fit(_healthy(8, spatial))
    restored = PCABaseline(residual="l2")
    restored.load_state_dict(pca.state_dict())
    assert restored.is_fitted and restored.n_components_ == 3 and restored.grid_shape == (1,) + spatial
    for name in ("mean", "components", "explained_variance_ratio", "num_samples"):
        torch.testing.assert_close(getattr(restored, name), getattr(pca, name))
    x = _healthy(2, spatial, seed=4)
    torch.testing.assert_close(restored(x), pca(x))
    assert list(pca.parameters()) == []


def test_fit_from_dataloader_of_dicts():
    spatial = (6, 5, 4)
    train = _healthy(7, spatial)
    reference = PCABaseline(n_components=2).fit(train)
    loader = DataLoader(Dataset([{"image": v} for v in train]), batch_size=3, shuffle=False)
    pca = PCABaseline(n_components=2).fit(loader)
    assert int(pca.num_samples) == 7
    torch.testing.assert_close(pca.mean, reference.mean)
    x = _healthy(2, spatial, seed=9)
    torch.testing.assert_close(pca.reconstruct(x), reference.reconstruct(x), atol=1e-5, rtol=0)


def test_slices_as_samples_with_slice_inferer():
    vols = _healthy(4, (8, 8, 5))
    slices = torch.cat([v.movedim(-1, 0) for v in vols])  # (20, 1, 8, 8): slices as samples
    pca = PCABaseline(n_components=0.9).fit(slices)
    assert pca.grid_shape == (1, 8, 8) and int(pca.num_samples) == 20
    out = SliceInferer(roi_size=(8, 8), spatial_dim=2, sw_batch_size=5, progress=False)(vols[:1], pca)
    assert out.shape == (1, 3, 8, 8, 5)
    torch.testing.assert_close(out[0, :, :, :, 3], pca(vols[:1, :, :, :, 3])[0])


def test_solver_choice():
    assert PCABaseline(0.95)._choose_solver(48, 196608) == (0.95, "auto")  # scikit-learn's exact choice
    assert PCABaseline(0.95, svd_solver="randomized")._choose_solver(48, 100) == (0.95, "full")
    assert PCABaseline(10)._choose_solver(48, 196608) == (10, "full")  # few samples: economy SVD
    assert PCABaseline(100)._choose_solver(48, 196608) == (47, "full")  # clamped to n_samples - 1
    assert PCABaseline(50)._choose_solver(2304, 4096) == (50, "randomized")  # many slices, few components
    assert PCABaseline(2000)._choose_solver(2304, 4096) == (2000, "full")
    assert PCABaseline(50, svd_solver="arpack")._choose_solver(2304, 4096) == (50, "arpack")
    # an explicit randomized solver gives the same subspace as the exact one on a low-rank problem
    train = _healthy(12, (6, 5, 4))
    exact = PCABaseline(3, svd_solver="full").fit(train)
    randomized = PCABaseline(3, svd_solver="randomized", random_state=0).fit(train)
    x = _healthy(2, (6, 5, 4), seed=7)
    torch.testing.assert_close(randomized.reconstruct(x), exact.reconstruct(x), atol=1e-3, rtol=0)
