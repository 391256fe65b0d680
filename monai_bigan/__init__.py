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
"""
monai_bigan: unsupervised anomaly detection in medical images with a BiGAN (encoder E, generator G and joint
discriminator D(x, z)), trained on healthy scans only, built on MONAI and PyTorch-Ignite.
"""

from __future__ import annotations

__version__ = "0.8.0"

from . import (
    baselines,
    bundle,
    data,
    engines,
    exceptions,
    handlers,
    inferers,
    io,
    losses,
    metrics,
    networks,
    transforms,
    utils,
    visualize,
    workflows,
)
