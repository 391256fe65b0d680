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
"""Tests of the BiGAN generator in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from monai_bigan.networks import Generator

SMALL = {"channels": (8, 4), "strides": (2, 2)}

SHAPE_CASES = [
    (2, (1, 32, 32), SMALL),
    (3, (1, 16, 16, 16), SMALL),
    (2, (3, 16, 24), {"channels": (8, 8, 4), "strides": (2, 2, 2), "norm": "instance", "act": "prelu"}),
    (3, (2, 8, 12, 16), {"channels": (8, 4), "strides": (2, 1), "kernel_size": 3, "norm": None}),
    (2, (1, 30, 15), {"channels": (8,), "strides": (3,), "kernel_size": 5}),
]

INVALID_CASES = [
    (2, (1, 32, 32, 32), SMALL),  # 3 spatial sizes for 2D
    (3, (1, 16, 16), SMALL),  # 2 spatial sizes for 3D
    (2, (1, 30, 32), SMALL),  # 30 not divisible by 4
    (3, (1, 16, 16, 18), SMALL),  # 18 not divisible by 4
    (2, (1, 32, 32), {"channels": (8, 4), "strides": (2, 2, 2)}),  # one stride per layer
    (2, (1, 32, 32), {"channels": (8, 4), "strides": (1, 2)}),  # even kernel with stride 1
    (2, (0, 32, 32), SMALL),  # no channel
]


@pytest.mark.parametrize("spatial_dims,out_shape,kwargs", SHAPE_CASES)
def test_shape(spatial_dims: int, out_shape: tuple[int, ...], kwargs: dict) -> None:
    net = Generator(spatial_dims, latent_size=8, out_shape=out_shape, **kwargs)
    x = net(torch.randn(3, 8))
    assert x.shape == (3, *out_shape)
    assert net.out_shape == out_shape
    # tanh output, as images are scaled to [-1, 1]
    assert x.abs().max().item() <= 1.0


@pytest.mark.parametrize("spatial_dims,out_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_out_act(spatial_dims: int, out_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = Generator(spatial_dims, 8, out_shape, out_act=None, **SMALL).eval()
    torch.manual_seed(0)
    bounded = Generator(spatial_dims, 8, out_shape, **SMALL).eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        # same weights: only the output activation differs
        torch.testing.assert_close(bounded(z), torch.tanh(linear(z)))
    assert not any(isinstance(m, torch.nn.Tanh) for m in linear.modules())


@pytest.mark.parametrize("spatial_dims,out_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_torchscript(spatial_dims: int, out_shape: tuple[int, ...], tmp_path) -> None:
    net = Generator(spatial_dims, 8, out_shape, **SMALL).eval()
    z = torch.randn(2, 8)
    path = tmp_path / "generator.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), net(z))


@pytest.mark.parametrize("spatial_dims,out_shape,kwargs", INVALID_CASES)
def test_invalid_shape(spatial_dims: int, out_shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Generator(spatial_dims, 8, out_shape, **kwargs)


def test_invalid_latent_size() -> None:
    with pytest.raises(ValueError, match="latent_size"):
        Generator(2, 0, (1, 32, 32), **SMALL)


@pytest.mark.parametrize("spatial_dims,out_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_normal_init(spatial_dims: int, out_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = Generator(spatial_dims, 8, out_shape, channels=(32, 16), strides=(2, 2))
    weight = net.up[0].conv.weight  # 32 * 16 * 4**d values
    assert abs(weight.std().item() - 0.02) < 0.002
    assert abs(weight.mean().item()) < 0.002
    assert torch.all(net.up[0].conv.bias == 0)
    assert abs(net.fc.weight.std().item() - 0.02) < 0.002
