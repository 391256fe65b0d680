"""AtomicCheckpointSaver, ResumeHandler and RNGState on a toy Ignite engine."""

from __future__ import annotations

import logging
import os
import random
import stat

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, RandCropByPosNegLabeld, RandGaussianNoised

from monai_bigan.handlers import AtomicCheckpointSaver, ResumeHandler
from monai_bigan.handlers.checkpoint import BestMetricState
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


def test_rotation_removes_the_previous_checkpoint_only_after_the_new_one_is_in_place(tmp_path, monkeypatch):
    """Ignite removes the old checkpoint before writing the new one: a kill in between would leave none."""
    net = torch.nn.Linear(2, 2)
    engine = _engine(net, max_epochs=3)
    AtomicCheckpointSaver(
        str(tmp_path), {"net": net, "other": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=1
    ).attach(engine)
    real_save, seen = torch.save, []

    def save(obj, path, *args, **kwargs):
        seen.append(sorted(p for p in os.listdir(tmp_path) if not p.startswith(".")))  # what a kill would leave
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    engine.run([0], max_epochs=3)
    assert seen == [[], ["checkpoint_epoch=1.pt"], ["checkpoint_epoch=2.pt"]]
    assert os.listdir(tmp_path) == ["checkpoint_epoch=3.pt"]


def test_a_fixed_file_name_is_replaced_not_removed(tmp_path):
    """A key-metric saver with a fixed file name removes and writes the same file: the rename replaces it."""
    net = torch.nn.Linear(2, 2)
    evaluator = Engine(lambda engine, batch: None)
    scores = iter([0.5, 0.7, 0.9])
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metrics", {"m": next(scores)}))
    AtomicCheckpointSaver(
        str(tmp_path), {"net": net}, save_key_metric=True, key_metric_name="m", key_metric_filename="model_best.pt"
    ).attach(evaluator)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        evaluator.run([0], max_epochs=1)
        assert os.listdir(tmp_path) == ["model_best.pt"]
        assert torch.equal(torch.load(tmp_path / "model_best.pt", weights_only=True)["weight"], net.weight)


def test_interrupted_writes_are_recovered_when_complete_and_removed_otherwise(tmp_path, caplog):
    net = torch.nn.Linear(2, 2)

    def checkpoint(epoch):
        weights = {k: v + epoch for k, v in net.state_dict().items()}
        return {"net": weights, "engine": {"epoch": epoch, "epoch_length": 1, "max_epochs": 4}}

    for epoch in (1, 2):
        torch.save(checkpoint(epoch), tmp_path / f"checkpoint_epoch={epoch}.pt")
    # killed after writing epoch 3 completely, before its rename: the newest checkpoint there is
    torch.save(checkpoint(3), tmp_path / ".checkpoint_epoch=3.pt.k1ll3d_a.tmp")
    (tmp_path / ".checkpoint_epoch=4.pt.k1ll3d_b.tmp").write_bytes(b"half a checkpoint")  # killed while writing
    torch.save({"net": net.state_dict()}, tmp_path / "model.pt")
    torch.save({"net": net.state_dict()}, tmp_path / ".model.pt.k1ll3d_c.tmp")  # superseded: model.pt is kept
    (tmp_path / ".calibration.json.k1ll3d_d.tmp").write_text('{"healthy_scores": [0.1')
    target = torch.nn.Linear(2, 2)
    engine = _engine(target, max_epochs=4)
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": target, "engine": engine}, save_interval=1, n_saved=1)
    handler = ResumeHandler(tmp_path, {"net": target, "engine": engine}, saver=saver)
    saver.attach(engine)
    handler.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run([0], max_epochs=4)
    assert handler.resumed_from == str(tmp_path / "checkpoint_epoch=3.pt")
    recovered = (
        f"recovered {tmp_path / 'checkpoint_epoch=3.pt'} from {tmp_path / '.checkpoint_epoch=3.pt.k1ll3d_a.tmp'}"
    )
    assert recovered in caplog.text
    assert "k1ll3d_b.tmp, an incomplete checkpoint" in caplog.text
    assert "k1ll3d_c.tmp, a complete but superseded write" in caplog.text
    assert "k1ll3d_d.tmp, left by an interrupted write" in caplog.text
    # trained epoch 4 from epoch 3; the rotation (n_saved=1) removed all older checkpoints after writing epoch 4
    assert torch.equal(target.weight, net.weight + 3 + 1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_epoch=4.pt", "model.pt"]


def _validator(scores):
    """A toy evaluator keeping MONAI's best-metric record (``monai.engines.Workflow``), one score per validation."""
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1, -1
    scores = iter(scores)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def compare(engine):
        engine.state.metrics = {"m": next(scores)}
        if engine.state.best_metric_epoch == -1 or engine.state.metrics["m"] > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = engine.state.metrics["m"], engine.state.epoch

    return evaluator


def _validate(evaluator, epoch):
    """Validate at ``epoch`` of a training, as ``monai.engines.Evaluator.run(global_epoch)`` does."""
    evaluator.state.max_epochs, evaluator.state.epoch, evaluator.state.iteration = epoch, epoch - 1, 0
    Engine.run(evaluator, [0])


def test_best_metric_state_survives_a_resume(tmp_path):
    net = torch.nn.Linear(2, 2)
    saver_args = dict(save_key_metric=True, key_metric_name="m", key_metric_filename="model_best.pt")
    evaluator = _validator([0.9])
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": net}, **saver_args)
    saver.attach(evaluator)
    _validate(evaluator, 1)
    best_weight = net.weight.detach().clone()
    torch.save({"best_metric": BestMetricState(evaluator, saver).state_dict()}, tmp_path / "checkpoint_epoch=1.pt")

    # a new process resumes: a worse validation must not replace model_best.pt, a better one must
    with torch.no_grad():
        net.weight.add_(1.0)
    evaluator = _validator([0.5, 0.95])
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": net}, **saver_args)
    saver.attach(evaluator)
    state = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)["best_metric"]
    BestMetricState(evaluator, saver).load_state_dict(state)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.9, 1)
    _validate(evaluator, 2)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.9, 1)
    assert torch.equal(torch.load(tmp_path / "model_best.pt", weights_only=True)["weight"], best_weight)
    _validate(evaluator, 3)
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.95, 3)
    assert torch.equal(torch.load(tmp_path / "model_best.pt", weights_only=True)["weight"], net.weight)
