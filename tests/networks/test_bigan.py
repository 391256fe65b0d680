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
"""Tests of the BiGAN container in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from monai_bigan.networks import BiGAN, Encoder, Generator, JointDiscriminator

CASES = [(2, (1, 32, 32)), (3, (1, 16, 16, 16)), (2, (3, 16, 16))]


def _bigan(spatial_dims: int, shape: tuple[int, ...]) -> BiGAN:
    return BiGAN(
        Encoder(spatial_dims, shape, 8, channels=(4, 8), strides=(2, 2)),
        Generator(spatial_dims, 8, shape, channels=(8, 4), strides=(2, 2)),
        JointDiscriminator(
            spatial_dims, shape, 8, channels=(4, 8), strides=(2, 2), latent_features=16, joint_features=32
        ),
    )


@pytest.mark.parametrize("spatial_dims,shape", CASES)
def test_methods(spatial_dims: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = _bigan(spatial_dims, shape).eval()
    assert isinstance(net.encoder, Encoder)
    assert isinstance(net.generator, Generator)
    assert isinstance(net.discriminator, JointDiscriminator)
    assert net.latent_size == 8
    x = torch.randn(2, *shape)
    with torch.no_grad():
        z = net.encode(x)
        assert z.shape == (2, 8)
        torch.testing.assert_close(z, net.encoder(x))
        fake = net.generate(z)
        assert fake.shape == (2, *shape)
        recon = net.reconstruct(x)
        torch.testing.assert_close(recon, net.generator(net.encoder(x)))
        torch.testing.assert_close(net(x), recon)
        logits, features = net.discriminate(x, z)
        assert logits.shape == (2, 1)
        assert features.shape == (2, 32)
        torch.testing.assert_close(logits, net.discriminator(x, z)[0])


def test_latent_size_read_only() -> None:
    net = _bigan(2, (1, 32, 32))
    with pytest.raises(AttributeError):
        net.latent_size = 4


def test_state_dict_groups_networks() -> None:
    keys = _bigan(2, (1, 32, 32)).state_dict().keys()
    prefixes = {key.split(".")[0] for key in keys}
    assert prefixes == {"encoder", "generator", "discriminator"}


@pytest.mark.parametrize("spatial_dims,shape", CASES[:2])
def test_torchscript(spatial_dims: int, shape: tuple[int, ...], tmp_path) -> None:
    net = _bigan(spatial_dims, shape).eval()
    x = torch.randn(2, *shape)
    path = tmp_path / "bigan.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
        z = loaded.encode(x)
        torch.testing.assert_close(z, net.encode(x))
        torch.testing.assert_close(loaded.generate(z), net.generate(z))
        torch.testing.assert_close(loaded.reconstruct(x), net.reconstruct(x))
        torch.testing.assert_close(loaded.discriminate(x, z)[1], net.discriminate(x, z)[1])
    assert loaded.encoder.latent_size == 8
