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
"""DDP wrapping of ALAD's extra discriminators, in a one-process gloo group."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from monai_bigan.engines import BiGANTrainer
from monai_bigan.networks import BiGAN, ImagePairDiscriminator, LatentPairDiscriminator
from monai_bigan.utils import BiGANKeys
from monai_bigan.utils.distributed import bigan_parts, ddp_bigan, unwrap_bigan
from tests.conftest import tiny_bigan


@pytest.fixture
def gloo_group(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _alad_bigan(dzz: bool = True) -> BiGAN:
    net = tiny_bigan()
    net.discriminator_xx = ImagePairDiscriminator(2, (1, 16, 16), channels=(4, 8), strides=(2, 2))
    if dzz:
        net.discriminator_zz = LatentPairDiscriminator(net.latent_size, hidden_features=(16, 8))
    return net


def test_without_process_group_nothing_is_wrapped():
    net = _alad_bigan()
    assert ddp_bigan(net) is net and unwrap_bigan(net) is net
    assert list(bigan_parts(net)) == ["encoder", "generator", "discriminator", "discriminator_xx", "discriminator_zz"]
    assert list(bigan_parts(tiny_bigan())) == ["encoder", "generator", "discriminator"]


@pytest.mark.parametrize("dzz", [True, False])
def test_ddp_bigan_wraps_and_unwraps_the_pair_discriminators(gloo_group, dzz):
    torch.manual_seed(0)
    net = _alad_bigan(dzz=dzz)
    wrapped = ddp_bigan(net, "cpu")
    assert wrapped is not net
    for name, module in bigan_parts(net).items():
        assert isinstance(getattr(wrapped, name), DistributedDataParallel), name
        assert getattr(wrapped, name).module is module  # the parameters are shared
    assert (wrapped.discriminator_zz is None) == (not dzz)
    plain = unwrap_bigan(wrapped)
    assert all(getattr(plain, name) is module for name, module in bigan_parts(net).items())
    assert list(plain.state_dict()) == list(net.state_dict())


def test_trainer_with_ddp_pair_discriminators(gloo_group):
    torch.manual_seed(1)
    net = _alad_bigan()
    wrapped = ddp_bigan(net, "cpu")
    data = [{"image": torch.rand(1, 16, 16) * 2 - 1} for _ in range(8)]
    trainer = BiGANTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=4),
        network=wrapped,
        eg_optimizer=torch.optim.Adam(itertools.chain(net.encoder.parameters(), net.generator.parameters()), 1e-3),
        d_optimizer=torch.optim.Adam(net.discriminator_parameters(), 1e-3),
        ema_network=copy.deepcopy(net),
        ema_decay=0.9,
    )
    assert len(trainer._ddp_networks) == 5
    assert trainer._plain_network.discriminator_xx is net.discriminator_xx
    before = copy.deepcopy(net.state_dict())
    trainer.run()  # two iterations: DDP raises on the second forward if a reduction was left pending
    assert trainer.state.iteration == 2
    for name in ("discriminator_xx", "discriminator_zz"):
        after = getattr(net, name).state_dict()
        assert any(not torch.equal(before[f"{name}.{k}"], v) for k, v in after.items()), name
        ema = getattr(trainer.ema_network, name).state_dict()
        assert any(not torch.equal(before[f"{name}.{k}"], v) for k, v in ema.items()), name
    for key in (BiGANKeys.D_XX_LOSS, BiGANKeys.D_ZZ_LOSS, BiGANKeys.CYCLE_X_LOSS, BiGANKeys.CYCLE_Z_LOSS):
        assert torch.isfinite(trainer.state.output[key])
