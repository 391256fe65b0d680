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
"""Atomic writes: a failed write leaves no temporary file and the old file as it was, and says why it failed."""

from __future__ import annotations

import errno
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from monai_bigan.io import atomic_path, atomic_write_text

DiskUsage = namedtuple("DiskUsage", "total used free")
# what torch.save raises when the disk fills up under it (its zip writer knows neither errno nor path)
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def _failing_write(error: BaseException):
    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise error

    return write


def _write(target: Path, write) -> BaseException:
    with pytest.raises(BaseException) as info:
        with atomic_path(target) as tmp:
            write(tmp)
    return info.value


@pytest.fixture
def target(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"previous checkpoint")
    return out / "model.pt"


def _untouched(target: Path) -> None:
    assert target.read_bytes() == b"previous checkpoint"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pt"], "temporary file left behind"


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
    ],
)
def test_write_errors_name_the_problem_and_the_path(target, monkeypatch, code, words):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 << 20, 7 << 20, 3 << 20))
    error = _write(target, _failing_write(OSError(code, os.strerror(code))))
    assert isinstance(error, OSError) and error.errno == code
    detail = (
        f"3 MiB free in {target.parent}" if code in (errno.ENOSPC, errno.EDQUOT) else f"{target.parent} is not writable"
    )
    assert error.strerror == f"{words} while writing {target} ({detail})"
    assert isinstance(error.__cause__, OSError)
    _untouched(target)


@pytest.mark.parametrize("numel", [100, 1000])  # torch reports a failed write in more than one way
def test_torch_save_failure_on_a_full_disk(target, monkeypatch, numel):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 << 20, 10 << 20, 0))

    def save_on_full_device(tmp: str) -> None:
        torch.save({"w": torch.zeros(numel)}, "/dev/full")  # the RuntimeError of torch.save on a full disk

    error = _write(target, save_on_full_device)
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert str(error) == (
        f"[Errno {errno.ENOSPC}] no space left on device while writing {target} (0 MiB free in {target.parent})"
    )
    assert isinstance(error.__cause__, RuntimeError)
    _untouched(target)


def test_torch_save_failure_in_a_folder_that_is_not_writable(target, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: False)  # tests run as root: chmod would not do
    error = _write(
        target, _failing_write(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    )
    assert isinstance(error, PermissionError) and error.errno == errno.EACCES
    assert error.strerror == f"permission denied while writing {target} ({target.parent} is not writable)"
    _untouched(target)


def test_other_errors_are_left_as_they_are(target, monkeypatch):
    # torch's write failure with room to spare and a writable folder: not about the folder
    unrelated = RuntimeError(TORCH_FULL_DISK)
    assert _write(target, _failing_write(unrelated)) is unrelated
    for error in (ValueError("bad value"), OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()):
        assert _write(target, _failing_write(error)) is error
    # an input the writer cannot read is not a problem of the output folder
    unreadable_input = PermissionError(errno.EACCES, "Permission denied", "/data/scans/a.nii.gz")
    assert _write(target, _failing_write(unreadable_input)) is unreadable_input
    _untouched(target)


def test_folder_that_cannot_be_created_or_written(tmp_path, monkeypatch):
    def mkdir_denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir_denied)
    target = tmp_path / "new" / "report.json"
    with pytest.raises(PermissionError) as info:
        atomic_write_text(target, "{}")
    assert info.value.strerror == f"permission denied while writing {target} ({target.parent} is not writable)"


def test_successful_write_replaces_the_file(target):
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"new checkpoint")
    assert target.read_bytes() == b"new checkpoint"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pt"]
