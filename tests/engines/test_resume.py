"""Resuming the training bundle: after a SIGKILL, with resume disabled, and past a truncated latest checkpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from ignite.engine import Events

from monai_bigan.utils.checkpoint import find_checkpoints
from tests.bundle.test_train_bundle import TINY_2D, TRAIN, _workflow
from tests.conftest import REPO_ROOT

TINY = dict(TINY_2D, num_workers=0)


def _command(bundle_root, dataset_dir, max_epochs, **override):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN]
    cmd += ["--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--max_epochs", str(max_epochs)]
    cmd += ["--device", "cpu"]
    for key, value in dict(TINY_2D, **override).items():
        cmd += [f"--{key}", json.dumps(value)]
    return cmd


def _run_workflow(bundle_root, dataset_dir, max_epochs, **override):
    wf = _workflow(TRAIN, bundle_root, dataset_dir, **dict(TINY, **override))
    wf.parser["max_epochs"] = max_epochs  # _workflow pins max_epochs=1
    wf.initialize()
    return wf


def _state_after_resume(wf):
    """
    Run ``wf`` and return the networks, trainer counters and torch RNG state when the first epoch starts, and the
    trainer's log records.
    """
    trainer = wf.parser.get_parsed_content("train#trainer")
    captured = {"log": []}
    handler = logging.Handler()
    handler.emit = lambda record: captured["log"].append(record.getMessage())
    trainer.logger.addHandler(handler)

    def capture(engine):
        if "network" not in captured:
            captured["network"] = {k: v.clone() for k, v in engine.network.state_dict().items()}
            captured["ema_network"] = {k: v.clone() for k, v in engine.ema_network.state_dict().items()}
            # the epoch counter is already incremented for the epoch starting now
            captured["epoch"], captured["iteration"] = engine.state.epoch - 1, engine.state.iteration
            captured["rng"] = torch.get_rng_state()

    # EPOCH_STARTED fires right after STARTED, where the resume handler loads, and before any training step
    trainer.add_event_handler(Events.EPOCH_STARTED, capture)
    try:
        wf.run()
        wf.finalize()
    finally:
        trainer.logger.removeHandler(handler)
    return captured


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def test_killed_training_resumes_from_last_checkpoint(tmp_path, tiny_dataset):
    """SIGKILL a CLI training after its first epoch checkpoint, re-run the same command, and check it continued."""
    bundle, max_epochs = tmp_path / "bundle", 6
    models = bundle / "models"
    # 32 slices per volume: an epoch long enough to kill the run mid-way, short enough for a unit test
    cmd = _command(bundle, tiny_dataset, max_epochs, slices_per_volume=32, num_workers=0)
    with open(tmp_path / "run1.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not find_checkpoints(models) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "run1.log").read_text()[-3000:]
    killed_at = find_checkpoints(models)[0][0]
    assert 1 <= killed_at < max_epochs

    proc2 = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    out = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, out[-3000:]
    match = re.search(r"resumed from (\S+) \(epoch (\d+)", out)
    assert match, out[-3000:]
    resumed_epoch = int(match.group(2))
    assert resumed_epoch >= killed_at and match.group(1).endswith(f"checkpoint_epoch={resumed_epoch}.pt")
    trained = re.findall(r"BiGANTrainer - INFO - Epoch\[(\d+)\] Complete", out)
    assert [int(e) for e in trained] == list(range(resumed_epoch + 1, max_epochs + 1))  # fewer than 6 epochs

    # the epoch counter continued: the last checkpoint counts all 6 epochs, and the rotation kept only that one
    assert [e for e, _ in find_checkpoints(models)] == [max_epochs]
    final = torch.load(models / f"checkpoint_epoch={max_epochs}.pt", weights_only=True)
    assert (
        final["trainer"]["iteration"] == max_epochs * final["trainer"]["epoch_length"] == max_epochs * 2
    )  # 4 volumes, batch_size 2
    assert {"network", "ema_network", "eg_optimizer", "d_optimizer", "trainer", "rng"} <= set(final)
    assert not [p for p in os.listdir(models) if p.startswith(".")]  # no temporary files left behind


@pytest.mark.parametrize("override", [{}, {"augment_prob": 1.0}], ids=["plain", "augmented"])
def test_resume_restores_checkpoint_state_and_is_reproducible(tmp_path, tiny_dataset, override):
    """Weights, counters and RNG at the start of a resumed run equal the checkpoint; 1 + 1 epochs == 2 epochs."""
    _run_workflow(tmp_path / "split", tiny_dataset, 1, **override).run()
    ckpt_file = tmp_path / "split" / "models" / "checkpoint_epoch=1.pt"
    ckpt = torch.load(ckpt_file, weights_only=True)

    wf = _run_workflow(tmp_path / "split", tiny_dataset, 2, **override)
    state = _state_after_resume(wf)
    assert wf.parser.get_parsed_content("resume_handler").resumed_from == str(ckpt_file)
    _assert_same(state["network"], ckpt["network"])
    _assert_same(state["ema_network"], ckpt["ema_network"])
    assert (state["epoch"], state["iteration"]) == (1, ckpt["trainer"]["iteration"])
    assert torch.equal(state["rng"], ckpt["rng"]["torch"])

    wf = _run_workflow(tmp_path / "straight", tiny_dataset, 2, **override)
    wf.run()
    wf.finalize()
    resumed = torch.load(tmp_path / "split" / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    _assert_same(resumed["network"], straight["network"])
    _assert_same(resumed["ema_network"], straight["ema_network"])
    assert resumed["trainer"]["iteration"] == straight["trainer"]["iteration"]


def test_resume_false_starts_over(tmp_path, tiny_dataset):
    _run_workflow(tmp_path / "b", tiny_dataset, 2).run()
    models = tmp_path / "b" / "models"
    assert [e for e, _ in find_checkpoints(models)] == [2]

    wf = _run_workflow(tmp_path / "b", tiny_dataset, 1, resume="false")  # as the command line override gives it
    state = _state_after_resume(wf)
    assert (state["epoch"], state["iteration"]) == (0, 0)
    assert wf.parser.get_parsed_content("resume_handler").resumed_from is None
    # the abandoned run's checkpoint is gone, so a later resume continues this run
    assert [e for e, _ in find_checkpoints(models)] == [1]
    ckpt = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]


def test_truncated_latest_checkpoint_is_skipped(tmp_path, tiny_dataset):
    _run_workflow(tmp_path / "b", tiny_dataset, 1).run()
    models = tmp_path / "b" / "models"
    good = models / "checkpoint_epoch=1.pt"
    data = good.read_bytes()
    (models / "checkpoint_epoch=2.pt").write_bytes(data[: len(data) // 2])  # killed while writing, non-atomically

    wf = _run_workflow(tmp_path / "b", tiny_dataset, 3)
    state = _state_after_resume(wf)
    assert wf.parser.get_parsed_content("resume_handler").resumed_from == str(good)
    assert any("skipping checkpoint" in m and "checkpoint_epoch=2.pt" in m for m in state["log"]), state["log"]
    assert any(m.startswith(f"resumed from {good} (epoch 1") for m in state["log"]), state["log"]
    assert state["epoch"] == 1
    assert [e for e, _ in find_checkpoints(models)] == [3]
    ckpt = torch.load(models / "checkpoint_epoch=3.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 3 * ckpt["trainer"]["epoch_length"]


def test_completed_training_is_not_repeated(tmp_path, tiny_dataset):
    _run_workflow(tmp_path / "b", tiny_dataset, 1).run()
    wf = _run_workflow(tmp_path / "b", tiny_dataset, 1)
    trainer = wf.parser.get_parsed_content("train#trainer")
    steps = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: steps.append(e.state.iteration))
    wf.run()
    assert steps == [] and trainer.state.epoch == 1


def test_resume_restores_the_best_metric_record(tmp_path, tiny_dataset):
    """After a resume, model_best.pt is replaced only by a validation better than the best before the kill."""
    _run_workflow(tmp_path / "b", tiny_dataset, 2).run()
    models = tmp_path / "b" / "models"
    best = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)["best_metric"]
    assert best["best_metric_epoch"] in (1, 2) and len(best["key_metric_saved"]) == 1
    best_bytes = (models / "model_best.pt").read_bytes()

    wf = _run_workflow(tmp_path / "b", tiny_dataset, 3)
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    saver = wf.parser.get_parsed_content("validate#best_saver")
    restored = []

    def capture(engine):
        saved = [list(item) for item in saver._key_metric_checkpoint.state_dict()["_saved"]]
        restored.append((evaluator.state.best_metric, evaluator.state.best_metric_epoch, saved))

    wf.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_STARTED(once=3), capture)
    wf.run()
    assert restored == [(best["best_metric"], best["best_metric_epoch"], best["key_metric_saved"])]
    improved = evaluator.state.metrics["val_criterion"] > best["best_metric"]
    assert ((models / "model_best.pt").read_bytes() != best_bytes) == improved


@pytest.fixture(autouse=True)
def _no_leftover(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)
