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
"""Distributed (DDP) training bundle: two CPU processes with gloo, launched by torchrun as the README says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from monai_bigan.networks import BiGAN, Encoder, Generator, JointDiscriminator
from tests.bundle.test_train_bundle import TINY_2D, TRAIN
from tests.conftest import REPO_ROOT

MULTI_GPU = str(REPO_ROOT / "bundles" / "bigan" / "multi_gpu_train.json")


def _torchrun(bundle_root: Path, dataset_dir: Path, max_epochs: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", json.dumps([TRAIN, MULTI_GPU])]
    cmd += ["--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--max_epochs", str(max_epochs)]
    cmd += ["--debug_dump_weights", "true"]
    for key, value in TINY_2D.items():
        cmd += [f"--{key}", json.dumps(value)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_two_process_ddp_training_and_resume(tmp_path, tiny_dataset):
    root = tmp_path / "bundle"
    proc = _torchrun(root, tiny_dataset, max_epochs=1)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    models = root / "models"
    # rank 0 alone writes: one set of checkpoints and one pair of TensorBoard files (trainer + validator)
    assert sorted(p.name for p in models.iterdir()) == [
        "calibration.json",
        "checkpoint_epoch=1.pt",
        "model.pt",
        "model_best.pt",
    ]
    assert len(list((root / "logs").glob("events.out.tfevents.*"))) == 2
    # the DistributedSampler halves the epoch: 4 training volumes, 2 per rank, batches of 2
    ckpt = torch.load(models / "model.pt", weights_only=True)
    assert ckpt["trainer"]["epoch_length"] == 1 and ckpt["trainer"]["iteration"] == 1

    # both ranks end with identical parameters and buffers (network and its EMA copy)
    rank0, rank1 = (torch.load(root / f"rank{r}_final.pt", weights_only=True) for r in (0, 1))
    assert set(rank0) == set(rank1) == {"network", "ema_network"}
    for name in rank0:
        assert rank0[name].keys() == rank1[name].keys()
        for key, value in rank0[name].items():
            assert torch.equal(value, rank1[name][key]), f"{name}.{key} differs between ranks"
    assert all(torch.equal(v, rank0["network"][k]) for k, v in ckpt["network"].items())

    # model.pt loads into a plain single-process BiGAN (no DDP "module." prefixes)
    in_shape = (1, *TINY_2D["image_size"])
    latent, channels, strides = TINY_2D["latent_size"], TINY_2D["channels"], TINY_2D["strides"]
    plain = BiGAN(
        Encoder(2, in_shape, latent, channels=channels, strides=strides, norm="batch"),
        Generator(2, latent, in_shape, channels=channels[::-1], strides=strides, norm="batch"),
        JointDiscriminator(2, in_shape, latent, channels=channels, strides=strides),
    )
    assert not any("module." in k for k in ckpt["network"])
    plain.load_state_dict(ckpt["network"])
    plain.load_state_dict(ckpt["ema_network"])

    # a second run resumes on both ranks from the epoch checkpoint and continues
    proc = _torchrun(root, tiny_dataset, max_epochs=2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (proc.stdout + proc.stderr).count("resumed from") == 2
    assert torch.load(models / "model.pt", weights_only=True)["trainer"]["iteration"] == 2
