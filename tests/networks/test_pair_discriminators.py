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
"""Tests of ALAD's image-pair (D_xx) and latent-pair (D_zz) discriminators in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from monai_bigan.networks import ImagePairDiscriminator, LatentPairDiscriminator

SMALL = {"channels": (4, 8), "strides": (2, 2)}

XX_SHAPE_CASES = [
    # (spatial_dims, in_shape, kwargs, feature size): without feature_size, the flattened conv output (8 * 8 * 8)
    (2, (1, 32, 32), SMALL, 8 * 8 * 8),
    (3, (1, 16, 16, 16), SMALL, 8 * 4 * 4 * 4),
    (2, (3, 16, 24), {**SMALL, "feature_size": 20, "norm": "batch", "dropout": None}, 20),
    (3, (2, 8, 12, 16), {**SMALL, "strides": (2, 1), "kernel_size": 5, "feature_size": 6}, 6),
    # ALAD's CIFAR-10 D_xx: two 5x5 stride-2 convolutions, 64 and 128 channels
    (2, (3, 32, 32), {"channels": (64, 128), "strides": (2, 2), "kernel_size": 5}, 128 * 8 * 8),
]

XX_INVALID_CASES = [
    (2, (1, 32, 32, 32), SMALL),  # 3 spatial sizes for 2D
    (3, (1, 16, 16), SMALL),  # 2 spatial sizes for 3D
    (4, (1, 16, 16, 16, 16), SMALL),  # only 2D and 3D
    (2, (1, 30, 32), SMALL),  # 30 not divisible by 4
    (2, (1, 32, 32), {**SMALL, "strides": (2,)}),  # one stride per layer
    (2, (1, 32, 32), {**SMALL, "feature_size": 0}),
    (2, (1, 32, 32), {**SMALL, "strides": (1, 1)}),  # even kernel with stride 1
]


def _xx_layers(net: ImagePairDiscriminator) -> list[torch.nn.Module]:
    convs = [block.conv for block in net.x_net if hasattr(block, "conv")]
    dense = [net.feature_net.linear] if hasattr(net.feature_net, "linear") else []
    return convs + dense + [net.logit]


def _zz_layers(net: LatentPairDiscriminator) -> list[torch.nn.Module]:
    return [block.linear for block in net.hidden] + [net.logit]


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs,features", XX_SHAPE_CASES)
def test_image_pair_shape(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict, features: int) -> None:
    net = ImagePairDiscriminator(spatial_dims, in_shape, **kwargs)
    logits, feats = net(torch.randn(3, *in_shape), torch.randn(3, *in_shape))
    assert logits.shape == (3, 1)
    assert feats.shape == (3, features)
    assert net.feature_size == features
    # the pair is stacked along the channels
    assert net.x_net[0].conv.in_channels == 2 * in_shape[0]


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_image_pair_depends_on_both_images_and_order(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = ImagePairDiscriminator(spatial_dims, in_shape, **SMALL).eval()
    x, x_prime = torch.randn(2, *in_shape), torch.randn(2, *in_shape)
    with torch.no_grad():
        logits, features = net(x, x_prime)
        # eval mode disables dropout: deterministic
        torch.testing.assert_close(net(x, x_prime)[1], features)
        assert not torch.allclose(net(x, torch.randn(2, *in_shape))[1], features)
        assert not torch.allclose(net(torch.randn(2, *in_shape), x_prime)[1], features)
        # (x, x') and (x', x) are different pairs
        assert not torch.allclose(net(x_prime, x)[1], features)
        # without a dense layer the logit is a linear function of the features
        torch.testing.assert_close(logits, net.logit(features))


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs,features", XX_SHAPE_CASES[:2])
def test_image_pair_torchscript(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict, features: int) -> None:
    net = ImagePairDiscriminator(spatial_dims, in_shape, **kwargs).eval()
    x, x_prime = torch.randn(2, *in_shape), torch.randn(2, *in_shape)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        for actual, expected in zip(scripted(x, x_prime), net(x, x_prime)):
            torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", XX_INVALID_CASES)
def test_image_pair_invalid(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ImagePairDiscriminator(spatial_dims, in_shape, **kwargs)


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_image_pair_normal_init(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = ImagePairDiscriminator(spatial_dims, in_shape, channels=(16, 32), strides=(2, 2))
    weight = net.x_net[1].conv.weight  # 16 * 32 * 4**d values
    assert abs(weight.std().item() - 0.02) < 0.002
    assert abs(weight.mean().item()) < 0.002
    assert torch.all(net.logit.bias == 0)


@pytest.mark.parametrize(
    "spatial_dims,in_shape,feature_size", [(2, (1, 32, 32), None), (3, (1, 16, 16, 16), 16), (2, (2, 16, 16), 8)]
)
def test_image_pair_spectral_norm(spatial_dims: int, in_shape: tuple[int, ...], feature_size: int | None) -> None:
    torch.manual_seed(0)
    net = ImagePairDiscriminator(spatial_dims, in_shape, feature_size=feature_size, spectral_norm=True, **SMALL)
    layers = _xx_layers(net)
    assert len(layers) == (3 if feature_size is None else 4)
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    net.train()
    # each training forward runs one more power iteration
    for _ in range(20):
        net(torch.randn(2, *in_shape), torch.randn(2, *in_shape))
    for layer in layers:
        weight = layer.weight.detach()
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05
    # and the default has none
    assert not any(parametrize.is_parametrized(m) for m in _xx_layers(ImagePairDiscriminator(2, (1, 16, 16), **SMALL)))


@pytest.mark.parametrize(
    "latent_size,kwargs,features",
    [(8, {}, 32), (64, {}, 32), (16, {"hidden_features": (24,), "dropout": None, "act": "relu"}, 24)],
)
def test_latent_pair_shape(latent_size: int, kwargs: dict, features: int) -> None:
    net = LatentPairDiscriminator(latent_size, **kwargs)
    logits, feats = net(torch.randn(5, latent_size), torch.randn(5, latent_size))
    assert logits.shape == (5, 1)
    assert feats.shape == (5, features)
    assert net.feature_size == features


def test_latent_pair_defaults_are_alad_sizes() -> None:
    net = LatentPairDiscriminator(100)
    linears = _zz_layers(net)
    assert [(m.in_features, m.out_features) for m in linears] == [(200, 64), (64, 32), (32, 1)]
    act = net.hidden.dense0.act
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == 0.2
    assert net.hidden.dense0.dropout.p == 0.2 and net.hidden.dense1.dropout.p == 0.2


def test_latent_pair_depends_on_both_codes_and_torchscript() -> None:
    torch.manual_seed(0)
    net = LatentPairDiscriminator(8).eval()
    z, z_prime = torch.randn(3, 8), torch.randn(3, 8)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        logits, features = net(z, z_prime)
        torch.testing.assert_close(scripted(z, z_prime)[0], logits)
        torch.testing.assert_close(scripted(z, z_prime)[1], features)
        assert not torch.allclose(net(z, torch.randn(3, 8))[0], logits)
        assert not torch.allclose(net(torch.randn(3, 8), z_prime)[0], logits)


def test_latent_pair_spectral_norm() -> None:
    torch.manual_seed(0)
    net = LatentPairDiscriminator(8, hidden_features=(16, 12), spectral_norm=True).train()
    layers = _zz_layers(net)
    assert len(layers) == 3 and all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    for _ in range(30):
        net(torch.randn(2, 8), torch.randn(2, 8))
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05


@pytest.mark.parametrize(
    "latent_size,hidden_features", [(0, (64, 32)), (-1, (64, 32)), (8, ()), (8, (64, 0)), (8, (-4,))]
)
def test_latent_pair_invalid(latent_size: int, hidden_features: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        LatentPairDiscriminator(latent_size, hidden_features=hidden_features)
