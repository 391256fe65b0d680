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
"""One training per bundle folder: an exclusive ``flock`` on ``models/.training.lock`` that names its holder."""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from monai_bigan.exceptions import TrainingLockedError
from monai_bigan.io.atomic import new_file_mode

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["TRAINING_LOCK_NAME", "TrainingLock"]

logger = logging.getLogger(__name__)

#: the lock file's name in the checkpoint folder (hidden, like the temporary files of atomic writes)
TRAINING_LOCK_NAME = ".training.lock"

# locks this process holds, by real path: [the TrainingLock, nesting depth, holding thread]. A recalibration run inside
# a training takes the lock its thread already holds (a second flock on a new descriptor would conflict with our own);
# another thread of the process (e.g. a second training request to a server) is refused like another process.
_HELD: dict[str, list[Any]] = {}


class TrainingLock:
    """
    Exclusive lock on a bundle's checkpoint folder, so that one process at a time trains (or recalibrates) into it:
    two trainings in one folder would mix their checkpoints, calibration and statistics.

    :py:meth:`acquire` takes ``fcntl.flock`` on ``<folder>/.training.lock`` without waiting and writes the holder's
    pid, host, start time and command line into it; :py:meth:`release` deletes the file and releases the lock.

    - When another process holds it, :py:class:`monai_bigan.exceptions.TrainingLockedError` is raised at once, one
      line naming that process and the lock file.
    - The kernel releases a ``flock`` when its process dies, so a lock file left by a killed process (``kill -9``) is
      taken over, with a warning naming the dead process.
    - The lock is re-entrant within a thread: a recalibration inside a training takes it again without conflict.
      Another thread of the same process is refused like another process.

    Where ``fcntl`` does not exist (Windows) the holder is recorded but nothing is locked.

    Args:
        folder: the checkpoint folder (created when missing), e.g. ``<bundle_root>/models``.
        name: the lock file's name in ``folder``.

    Example::

        with TrainingLock("models"):
            trainer.run()
    """

    def __init__(self, folder: str | os.PathLike, name: str = TRAINING_LOCK_NAME) -> None:
        self.path = Path(folder) / name
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this process holds the lock (through this object or another one on the same file)."""
        return self._key() in _HELD

    def _key(self) -> str:
        return os.path.realpath(self.path)

    def acquire(self) -> None:
        """
        Take the lock, or raise at once when another process holds it.

        Raises:
            TrainingLockedError: another running process holds the lock.
        """
        key = self._key()
        if key in _HELD:
            owner, _, thread = _HELD[key]
            if thread != threading.get_ident():
                raise TrainingLockedError(
                    f"{self.path}: another training is running in {self.path.parent}: "
                    f"{_describe(_read_holder(owner._fd))}, in another thread of this process. Wait for it to finish, "
                    "or give this run its own --bundle_root."
                )
            _HELD[key][1] += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, new_file_mode())
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise TrainingLockedError(
                    f"{self.path}: another training is running in {self.path.parent}: {_describe(holder)}. Wait for "
                    "it to finish (or stop it), or give this run its own --bundle_root."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            # the previous holder deleted the file between our open and our lock: lock the new file instead
            os.close(fd)
        previous = _read_holder(fd)
        if previous:
            logger.warning(
                f"taking over the training lock {self.path} left by {_describe(previous)}, which ended without "
                "releasing it (killed?)."
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_this_process()) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD[key] = [self, 1, threading.get_ident()]

    def release(self) -> None:
        """Release the lock (the outermost release of the holding thread deletes the lock file)."""
        key = self._key()
        held = _HELD.get(key)
        if held is None or held[2] != threading.get_ident():
            return
        held[1] -= 1
        if held[1] > 0:
            return
        owner = held[0]
        del _HELD[key]
        # delete while still locked: a process that opened the old file sees that it is gone and retries
        try:
            os.unlink(owner.path)
        except FileNotFoundError:
            pass
        if owner._fd is not None:
            os.close(owner._fd)
            owner._fd = None

    def __enter__(self) -> TrainingLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def _this_process() -> dict[str, Any]:
    """What the lock file says about its holder."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder recorded in an open lock file; empty when the file is empty or not readable as a record."""
    size = os.fstat(fd).st_size
    try:
        holder = json.loads(os.pread(fd, size, 0).decode("utf-8")) if size else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host node1 since 2024-05-01T10:00:00+02:00 (python -m monai.bundle run training ...)``."""
    if not holder:
        return "a process that has not recorded itself yet"
    command = f" ({' '.join(str(holder['command']).split())})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}{command}"
