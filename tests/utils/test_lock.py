"""TrainingLock: one training per bundle folder, naming the holder, taking over the lock of a killed process."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from monai_bigan.exceptions import TrainingLockedError
from monai_bigan.utils import TrainingLock

# another process holding the lock, as a second training would; plain Python, so that it starts in milliseconds
HOLDER = textwrap.dedent("""
    import fcntl, json, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    record = {"pid": os.getpid(), "host": "node7", "since": "2024-05-01T10:00:00+00:00", "command": "train it"}
    os.write(fd, json.dumps(record).encode())
    print("locked", flush=True)
    sys.stdin.read()
    """)


def test_lock_records_its_holder_and_is_gone_after_release(tmp_path):
    folder = tmp_path / "models"
    with TrainingLock(folder) as lock:
        holder = json.loads(lock.path.read_text())
        assert lock.path == folder / ".training.lock" and lock.locked
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["since"] and "pytest" in holder["command"]
        with TrainingLock(folder):  # re-entrant within the process (a recalibration inside a training)
            pass
        assert lock.path.is_file() and lock.locked  # the inner release keeps the outer lock
    assert not lock.path.exists() and not lock.locked


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path):
    path = tmp_path / ".training.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingLockedError) as info:
            TrainingLock(tmp_path).acquire()
    finally:
        holder.communicate("")
    message = str(info.value)
    assert f"pid {holder.pid} on host node7 since 2024-05-01T10:00:00+00:00 (train it)" in message
    assert str(path) in message and "--bundle_root" in message and "\n" not in message
    assert json.loads(path.read_text())["pid"] == holder.pid  # the holder's record is left alone


def test_the_lock_file_of_a_dead_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / ".training.lock"
    # flock is released by the kernel when a process dies (kill -9): only its record remains
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    path.write_text(json.dumps({"pid": dead_pid, "host": "node7", "since": "yesterday", "command": "train it"}))
    with caplog.at_level(logging.WARNING, logger="monai_bigan.utils.lock"):
        with TrainingLock(tmp_path):
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"left by pid {dead_pid} on host node7 since yesterday" in caplog.text
    assert not path.exists()


def test_a_lock_file_deleted_by_its_releasing_holder_is_not_locked_in_vain(tmp_path, monkeypatch):
    """The holder deletes the file while we wait to lock it: we must lock the new file, not the deleted one."""
    import monai_bigan.utils.lock as lock_module

    real_flock, calls = lock_module.fcntl.flock, []

    def flock_after_the_holder_released(fd, operation):
        if not calls:  # the previous holder releases between our open and our flock
            os.unlink(tmp_path / ".training.lock")
        calls.append(fd)
        real_flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock_after_the_holder_released)
    with TrainingLock(tmp_path) as lock:
        assert len(calls) == 2 and lock.path.is_file()  # retried on the file that now exists
        assert os.fstat(lock._fd).st_ino == os.stat(lock.path).st_ino


def test_another_thread_of_the_process_is_refused(tmp_path):
    """E.g. a second training request to a MONAI Label server, which trains in-process."""
    errors = []

    def second_training():
        try:
            TrainingLock(tmp_path).acquire()
        except TrainingLockedError as e:
            errors.append(str(e))

    with TrainingLock(tmp_path):
        thread = threading.Thread(target=second_training)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"pid {os.getpid()} on host" in errors[0] and "another thread" in errors[0]
    assert not (tmp_path / ".training.lock").exists()
