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

from monai_bigan.networks import (
    BiGAN,
    Encoder,
    Generator,
    ImagePairDiscriminator,
    JointDiscriminator,
    LatentPairDiscriminator,
)

CASES = [(2, (1, 32, 32)), (3, (1, 16, 16, 16)), (2, (3, 16, 16))]


def _bigan(spatial_dims: int, shape: tuple[int, ...], dxx: bool = False, dzz: bool = False) -> BiGAN:
    return BiGAN(
        Encoder(spatial_dims, shape, 8, channels=(4, 8), strides=(2, 2)),
        Generator(spatial_dims, 8, shape, channels=(8, 4), strides=(2, 2)),
        JointDiscriminator(
            spatial_dims, shape, 8, channels=(4, 8), strides=(2, 2), latent_features=16, joint_features=32
        ),
        discriminator_xx=ImagePairDiscriminator(spatial_dims, shape, channels=(4, 8), strides=(2, 2)) if dxx else None,
        discriminator_zz=LatentPairDiscriminator(8) if dzz else None,
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


def test_alad_discriminators_default_to_none() -> None:
    net = _bigan(2, (1, 32, 32))
    assert net.discriminator_xx is None and net.discriminator_zz is None
    assert net.discriminators() == [net.discriminator]
    assert [id(p) for p in net.discriminator_parameters()] == [id(p) for p in net.discriminator.parameters()]
    assert [name for name, _ in net.named_children()] == ["encoder", "generator", "discriminator"]


@pytest.mark.parametrize("dxx,dzz", [(True, False), (False, True), (True, True)])
def test_alad_discriminators(dxx: bool, dzz: bool) -> None:
    net = _bigan(2, (1, 32, 32), dxx=dxx, dzz=dzz)
    expected = [net.discriminator] + ([net.discriminator_xx] if dxx else []) + ([net.discriminator_zz] if dzz else [])
    assert net.discriminators() == expected
    assert isinstance(net.discriminator_xx, ImagePairDiscriminator) == dxx
    assert isinstance(net.discriminator_zz, LatentPairDiscriminator) == dzz
    params = [id(p) for p in net.discriminator_parameters()]
    assert params == [id(p) for d in expected for p in d.parameters()]
    # what the configs build the optimizers from: the discriminators and E + G share no parameter
    eg = {id(p) for p in net.encoder.parameters()} | {id(p) for p in net.generator.parameters()}
    assert len(params) == len(set(params)) and not eg & set(params)
    prefixes = {key.split(".")[0] for key in net.state_dict()}
    assert prefixes == {"encoder", "generator", "discriminator"} | {
        name for flag, name in ((dxx, "discriminator_xx"), (dzz, "discriminator_zz")) if flag
    }


def test_plain_state_dict_loads_into_the_shared_networks() -> None:
    # a checkpoint of a plain BiGAN holds exactly the keys of the three networks, with or without ALAD code
    torch.manual_seed(0)
    plain, alad = _bigan(2, (1, 32, 32)), _bigan(2, (1, 32, 32), dxx=True, dzz=True)
    state = plain.state_dict()
    assert all(not key.startswith("discriminator_") for key in state)
    result = alad.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        key.startswith(("discriminator_xx.", "discriminator_zz.")) for key in result.missing_keys
    )
    torch.testing.assert_close(alad.encoder.fc.weight, plain.encoder.fc.weight)
    # and a plain BiGAN loads strictly from a plain one
    _bigan(2, (1, 32, 32)).load_state_dict(state)


@pytest.mark.parametrize("spatial_dims,shape", CASES[:2])
def test_torchscript_with_alad_discriminators(spatial_dims: int, shape: tuple[int, ...]) -> None:
    net = _bigan(spatial_dims, shape, dxx=True, dzz=True).eval()
    x = torch.randn(2, *shape)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
        recon = net.reconstruct(x)
        for actual, expected in zip(scripted.discriminator_xx(x, recon), net.discriminator_xx(x, recon)):
            torch.testing.assert_close(actual, expected)
