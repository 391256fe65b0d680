"""AtomicCheckpointSaver, ResumeHandler and RNGState on a toy Ignite engine."""

from __future__ import annotations

import os
import random
import stat

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, RandCropByPosNegLabeld, RandGaussianNoised

from monai_bigan.handlers import AtomicCheckpointSaver, ResumeHandler
from monai_bigan.utils import RNGState, find_checkpoints


def _engine(net, max_epochs=2):
    def step(engine, batch):
        with torch.no_grad():
            net.weight.add_(1.0)

    engine = Engine(step)
    engine.state.max_epochs = max_epochs
    return engine


def test_atomic_saver_writes_complete_files_with_normal_permissions(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = _engine(net, max_epochs=3)
    AtomicCheckpointSaver(
        str(tmp_path), {"net": net, "other": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=1, save_final=True
    ).attach(engine)
    engine.run([0, 1], max_epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_epoch=3.pt", "checkpoint_final_iteration=6.pt"]
    mode = stat.S_IMODE(os.stat(tmp_path / "checkpoint_epoch=3.pt").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert torch.equal(torch.load(tmp_path / "checkpoint_epoch=3.pt", weights_only=True)["net"]["weight"], net.weight)


def test_atomic_saver_failure_keeps_previous_checkpoint(tmp_path):
    class Unsaveable:
        fail = False

        def state_dict(self):
            return {"f": (lambda: 0) if self.fail else 1}  # a lambda cannot be pickled

        def load_state_dict(self, state):
            pass

    obj = Unsaveable()
    engine = _engine(torch.nn.Linear(2, 2))
    AtomicCheckpointSaver(
        str(tmp_path), {"obj": obj, "other": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=2
    ).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED(once=2), lambda: setattr(obj, "fail", True))
    with pytest.raises(Exception):
        engine.run([0], max_epochs=2)
    assert os.listdir(tmp_path) == ["checkpoint_epoch=1.pt"]  # no partial epoch 2, no temporary file
    assert torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)["obj"] == {"f": 1}


def test_resume_handler_picks_newest_loadable_by_epoch_number(tmp_path):
    net = torch.nn.Linear(2, 2)
    for epoch in (2, 9, 10):
        torch.save(
            {"net": {k: v + epoch for k, v in net.state_dict().items()}}, tmp_path / f"checkpoint_epoch={epoch}.pt"
        )
    (tmp_path / "checkpoint_epoch=11.pt").write_bytes(b"truncated")
    (tmp_path / ".checkpoint_epoch=12.pt.abc123.tmp").write_bytes(b"killed while writing")
    assert [e for e, _ in find_checkpoints(tmp_path)] == [11, 10, 9, 2]
    target = torch.nn.Linear(2, 2)
    handler = ResumeHandler(tmp_path, {"net": target})
    handler(_engine(target))
    assert handler.resumed_from == str(tmp_path / "checkpoint_epoch=10.pt")
    assert torch.equal(target.weight, net.weight + 10)
    assert not (tmp_path / ".checkpoint_epoch=12.pt.abc123.tmp").exists()
    with pytest.raises(ValueError, match="boolean"):
        ResumeHandler(tmp_path, {"net": target}, enabled="maybe")


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    crop = RandCropByPosNegLabeld("img", "lbl", (2, 2), num_samples=2)
    transforms = Compose([RandGaussianNoised("img", prob=1.0), crop])
    transforms.set_random_state(3)
    rng = RNGState(transforms)
    torch.save({"rng": rng.state_dict()}, tmp_path / "rng.pt")

    def draw():
        return (
            torch.rand(3),
            np.random.rand(3),
            random.random(),
            [t.R.rand() for t in transforms.transforms],
            crop.cropper.R.rand(),
        )

    first = draw()
    rng.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    second = draw()
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]
