"""
Fault injection: the training bundle, run as ``python -m monai.bundle run training``, is killed with SIGKILL at random
moments (seeded) and, deliberately, in the middle of a checkpoint write and between a complete write and its rename;
each rerun of the same command must resume (never from scratch once a checkpoint existed), take over the lock the
killed run left, and the last run must finish with a ``model.pt`` whose identity matches ``calibration.json``. A second
launch while one trains is refused, naming the first.

One sequence of launches (a module fixture, about a minute and a half on two CPU cores) feeds the tests below.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from monai_bigan.bundle.loading import check_model_identity
from monai_bigan.exceptions import TrainingLockedError
from monai_bigan.utils import find_checkpoints
from tests.bundle.test_train_bundle import TINY_2D, TRAIN, _workflow
from tests.conftest import REPO_ROOT

SEED = 18
MAX_EPOCHS = 30
#: seconds after a launch took the training lock (so: after imports and data caching) before a random kill
KILL_DELAY = (0.5, 3.5)
#: seconds after a launch wrote its first epoch checkpoint before a random kill (epochs take a fraction of a second)
MID_TRAINING_KILL_DELAY = (0.0, 1.5)
TIMEOUT = 300
TINY = dict(TINY_2D, num_workers=0)

# Runs ``python -m monai.bundle ARGS`` with a pause injected into the checkpoint writer, for the test to kill it there:
#   mid-write PREFIX N MARKER: the N-th ``torch.save`` of a temporary file ``.PREFIX...`` writes half its bytes, pauses
#   before-rename PREFIX N MARKER: the N-th rename of a complete temporary file ``.PREFIX...`` pauses before renaming
# The pause creates MARKER, then sleeps until the test kills the process.
HOOK = textwrap.dedent("""
    import io, os, runpy, sys, time
    import torch

    mode, prefix, nth, marker = sys.argv[1], "." + sys.argv[2], int(sys.argv[3]), sys.argv[4]
    count = 0


    def reached(path):
        global count
        if not os.path.basename(os.fspath(path)).startswith(prefix):
            return False
        count += 1
        return count == nth


    def pause():
        open(marker, "w").close()
        time.sleep(3600)


    real_save, real_replace = torch.save, os.replace


    def save(obj, f, *args, **kwargs):
        if mode == "mid-write" and isinstance(f, (str, os.PathLike)) and reached(f):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            pause()
        real_save(obj, f, *args, **kwargs)


    def replace(src, dst, *args, **kwargs):
        if mode == "before-rename" and reached(src):
            pause()
        real_replace(src, dst, *args, **kwargs)


    torch.save, os.replace = save, replace
    sys.argv = ["monai.bundle", *sys.argv[5:]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    """)


class Launch:
    """One ``python -m monai.bundle run training`` process (optionally with a pause injected), logging to a file."""

    def __init__(self, folder: Path, name: str, args: list[str], hook: tuple[str, str, int] | None = None) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        self.marker = folder / f"{name}.paused"
        if hook is None:
            cmd = [sys.executable, "-m", "monai.bundle", *args]
        else:
            mode, prefix, nth = hook
            cmd = [sys.executable, str(folder / "hook.py"), mode, prefix, str(nth), str(self.marker), *args]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.proc.pid
        self.killed = False

    def wait_for(self, condition) -> bool:
        """Poll ``condition`` until it holds (True), or until the process ends or times out (False)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return condition()
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL the process (and anything it started), unless it has already ended."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.killed = True
        self.proc.wait()

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def trained_epochs(self) -> list[int]:
        """The epochs this run completed (and so checkpointed: Ignite logs this after the epoch's handlers)."""
        return [int(e) for e in re.findall(r"BiGANTrainer - INFO - Epoch\[(\d+)\] Complete", self.text)]

    @property
    def resumed(self) -> tuple[str, int] | None:
        match = re.search(r"resumed from (\S+) \(epoch (\d+)", self.text)
        return None if match is None else (match.group(1), int(match.group(2)))

    def failure(self) -> str:
        return f"{self.name} (rc {self.proc.returncode}):\n{self.text[-3000:]}"


def _lock_holder(models: Path) -> int | None:
    """The pid recorded in the training lock, or None (no lock, or its record being written)."""
    try:
        return int(json.loads((models / ".training.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


@pytest.fixture(scope="module")
def killed_training(tmp_path_factory, tiny_dataset):
    """Five launches of one training, four of them killed; what each left behind, for the tests to check."""
    folder = tmp_path_factory.mktemp("kills")
    (folder / "hook.py").write_text(HOOK)
    bundle, models = folder / "bundle", folder / "bundle" / "models"
    args = ["run", "training", "--config_file", TRAIN, "--bundle_root", str(bundle), "--dataset_dir", str(tiny_dataset)]
    args += ["--max_epochs", str(MAX_EPOCHS), "--device", "cpu"]
    for key, value in TINY.items():
        args += [f"--{key}", json.dumps(value)]
    rng = random.Random(SEED)
    record = SimpleNamespace(folder=folder, models=models, launches=[], delays=[])
    launches = record.launches

    def random_kill(name: str, mid_training: bool = False) -> None:
        """Kill at a random moment after the launch took the lock or, ``mid_training``, wrote its first checkpoint."""
        launch = Launch(folder, name, args)
        launches.append(launch)
        assert launch.wait_for(lambda: _lock_holder(models) == launch.pid), launch.failure()
        if mid_training:
            committed = max(e for run in launches for e in [0, *run.trained_epochs])
            assert launch.wait_for(lambda: find_checkpoints(models)[0][0] > committed), launch.failure()
        delay = rng.uniform(*(MID_TRAINING_KILL_DELAY if mid_training else KILL_DELAY))
        record.delays.append(delay)
        time.sleep(delay)
        launch.kill()

    try:
        # 1. paused half-way through writing its second epoch checkpoint, then killed
        launch = Launch(folder, "1-mid-write", args, hook=("mid-write", "checkpoint_epoch=", 2))
        launches.append(launch)
        assert launch.wait_for(launch.marker.exists), launch.failure()
        record.after_write_kill = sorted(os.listdir(models))
        # meanwhile, a second launch on the same bundle folder (in this process) must be refused at once
        wf = _workflow(TRAIN, bundle, tiny_dataset, **TINY)
        wf.parser["max_epochs"] = MAX_EPOCHS
        wf.initialize()
        with pytest.raises(Exception) as info:
            wf.run()
        record.concurrent_error = next((e for e in _chain(info.value) if isinstance(e, TrainingLockedError)), None)
        record.after_concurrent_launch = sorted(os.listdir(models))
        launch.kill()

        # 2. killed at a random moment
        random_kill("2-random")

        # 3. paused after writing its first epoch checkpoint completely, before renaming it into place, then killed
        launch = Launch(folder, "3-before-rename", args, hook=("before-rename", "checkpoint_epoch=", 1))
        launches.append(launch)
        assert launch.wait_for(launch.marker.exists), launch.failure()
        record.after_rename_kill = sorted(os.listdir(models))
        launch.kill()

        # 4. killed at a random moment after its first epoch
        random_kill("4-random", mid_training=True)

        # 5. left to finish
        launch = Launch(folder, "5-final", args)
        launches.append(launch)
        launch.proc.wait(timeout=TIMEOUT)
        assert launch.proc.returncode == 0, launch.failure()
    finally:
        for launch in launches:
            launch.kill()
    return record


def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one(killed_training):
    """Ignite removes the old checkpoint before writing the new one: the saver removes it only after the rename."""
    files = killed_training.after_write_kill
    assert "checkpoint_epoch=1.pt" in files, files
    assert [f for f in files if re.fullmatch(r"\.checkpoint_epoch=2\.pt\.\w+\.tmp", f)], files
    rerun = killed_training.launches[1]
    assert re.search(r"removing \S+\.checkpoint_epoch=2\.pt\.\w+\.tmp, an incomplete checkpoint", rerun.text)
    assert rerun.resumed is not None and rerun.resumed[1] == 1, rerun.failure()


def test_a_complete_checkpoint_killed_before_its_rename_is_recovered(killed_training):
    files = killed_training.after_rename_kill
    (temporary,) = [f for f in files if f.startswith(".checkpoint_epoch=")]
    epoch = int(re.match(r"\.checkpoint_epoch=(\d+)\.pt", temporary).group(1))
    assert f"checkpoint_epoch={epoch}.pt" not in files and f"checkpoint_epoch={epoch - 1}.pt" in files
    rerun = killed_training.launches[3]
    target = killed_training.models / f"checkpoint_epoch={epoch}.pt"
    assert f"recovered {target} from {killed_training.models / temporary}" in rerun.text, rerun.failure()
    assert rerun.resumed == (str(target), epoch), rerun.failure()


def test_every_rerun_resumes_and_the_epoch_never_goes_back(killed_training):
    launches = killed_training.launches
    assert [launch.killed for launch in launches] == [True, True, True, True, False], killed_training.delays
    committed = 0
    for previous, rerun in zip(launches, launches[1:]):
        committed = max([committed, *previous.trained_epochs])
        assert committed > 0
        assert "starts from scratch" not in rerun.text, rerun.failure()
        assert rerun.resumed is not None and rerun.resumed[1] >= committed, rerun.failure()
        trained = rerun.trained_epochs
        assert trained == list(range(rerun.resumed[1] + 1, rerun.resumed[1] + 1 + len(trained))), trained
    assert launches[-1].trained_epochs[-1] == MAX_EPOCHS


def test_the_lock_of_each_killed_run_is_taken_over(killed_training):
    launches = killed_training.launches
    for killed, rerun in zip(launches, launches[1:]):
        assert (
            f"taking over the training lock {killed_training.models / '.training.lock'} left by pid {killed.pid} "
            in (rerun.text)
        ), (rerun.failure())


def test_a_second_launch_is_refused_naming_the_first(killed_training):
    error = killed_training.concurrent_error
    assert error is not None
    first = killed_training.launches[0]
    message = str(error)
    assert f"pid {first.pid} on host {socket.gethostname()} since " in message
    assert str(killed_training.models / ".training.lock") in message and "\n" not in message
    assert killed_training.after_concurrent_launch == killed_training.after_write_kill  # it touched nothing


def test_the_last_run_ends_with_one_model_whose_calibration_matches(killed_training):
    models = killed_training.models
    assert sorted(os.listdir(models)) == [
        "calibration.json",
        f"checkpoint_epoch={MAX_EPOCHS}.pt",
        "model.pt",
        "model_best.pt",
    ]  # the lock released, no temporary file left behind
    assert [e for e, _ in find_checkpoints(models)] == [MAX_EPOCHS]
    check_model_identity(models / "model.pt", models / "calibration.json")
    model = torch.load(models / "model.pt", weights_only=True)
    recorded = json.loads((models / "calibration.json").read_text())["scoring"]["model"]
    assert model["model_identity"]["epoch"] == recorded["epoch"] == MAX_EPOCHS
    assert model["model_identity"]["run_id"] == recorded["run_id"]  # one run across all the kills
    assert model["trainer"]["iteration"] == MAX_EPOCHS * model["trainer"]["epoch_length"]
