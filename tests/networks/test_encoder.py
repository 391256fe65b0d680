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
"""Tests of the BiGAN encoder in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from monai_bigan.networks import Encoder

SMALL = {"channels": (4, 8), "strides": (2, 2)}

SHAPE_CASES = [
    (2, (1, 32, 32), SMALL),
    (3, (1, 16, 16, 16), SMALL),
    (2, (3, 16, 24), {"channels": (4, 8, 8), "strides": (2, 2, 2), "norm": "instance", "dropout": 0.1}),
    (3, (2, 8, 12, 16), {"channels": (4, 8), "strides": (2, 1), "kernel_size": 3, "act": "prelu"}),
]

INVALID_CASES = [
    (2, (1, 32, 32, 32), SMALL),  # 3 spatial sizes for 2D
    (3, (1, 16, 16), SMALL),  # 2 spatial sizes for 3D
    (2, (1, 30, 32), SMALL),  # 30 not divisible by 4
    (3, (1, 16, 16, 18), SMALL),  # 18 not divisible by 4
    (2, (1, 32, 32), {"channels": (4, 8), "strides": (2,)}),  # one stride per layer
    (2, (1, 32, 32), {"channels": (), "strides": ()}),  # no layer
    (2, (1, 32, 32), {"channels": (4, 8), "strides": (2, 1)}),  # even kernel with stride 1
    (1, (1, 32), SMALL),  # only 2D and 3D
]


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", SHAPE_CASES)
def test_shape(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict) -> None:
    net = Encoder(spatial_dims, in_shape, latent_size=8, **kwargs)
    z = net(torch.randn(3, *in_shape))
    assert z.shape == (3, 8)
    assert net.latent_size == 8
    assert net.in_shape == in_shape


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", SHAPE_CASES[:2])
def test_torchscript(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict, tmp_path) -> None:
    net = Encoder(spatial_dims, in_shape, latent_size=8, **kwargs).eval()
    x = torch.randn(2, *in_shape)
    path = tmp_path / "encoder.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", INVALID_CASES)
def test_invalid_shape(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Encoder(spatial_dims, in_shape, latent_size=8, **kwargs)


def test_invalid_latent_size() -> None:
    with pytest.raises(ValueError, match="latent_size"):
        Encoder(2, (1, 32, 32), latent_size=0, **SMALL)


def test_divisibility_message() -> None:
    with pytest.raises(ValueError, match="divisible by the product of strides"):
        Encoder(2, (1, 30, 32), latent_size=8, **SMALL)


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_normal_init(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = Encoder(spatial_dims, in_shape, latent_size=8, channels=(16, 32), strides=(2, 2))
    weight = net.down[1].conv.weight  # 16 * 32 * 4**d values
    assert abs(weight.std().item() - 0.02) < 0.002
    assert abs(weight.mean().item()) < 0.002
    assert torch.all(net.down[1].conv.bias == 0)
    # batch norm scales are drawn around 1
    assert abs(net.down[1].adn.N.weight.mean().item() - 1.0) < 0.02
    # the first layer is not normalized, as in DCGAN
    assert not hasattr(net.down[0].adn, "N")


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_spectral_norm(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = Encoder(spatial_dims, in_shape, latent_size=8, spectral_norm=True, **SMALL).train()
    layers = [block.conv for block in net.down] + [net.fc]
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    # each training forward runs one more power iteration
    for _ in range(10):
        net(torch.randn(2, *in_shape))
    for layer in layers:
        weight = layer.weight.detach()
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05
