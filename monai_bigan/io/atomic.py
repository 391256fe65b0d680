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
"""Atomic file writing: a temporary file in the target folder, then a rename, so a crash never leaves half a file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_save_figure", "new_file_mode", "write_error"]

# errors of a write that the user can fix (free space, quota, permissions), as they are reported
_WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# the errors about space: their message says how much is left
_SPACE_ERRNOS = {errno.ENOSPC}
if hasattr(errno, "EDQUOT"):  # not on Windows
    _WRITE_PROBLEMS[errno.EDQUOT] = "disk quota exceeded"
    _SPACE_ERRNOS.add(errno.EDQUOT)
# torch.save reports a failed write as a RuntimeError of its zip writer or of a C++ stream, with neither errno nor path
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "inline_container.cc", "iostream error")
# a folder with less free space than this is full: the write that failed needed at least one more block
_FULL_DISK_BYTES = 1 << 20


def new_file_mode() -> int:
    """Permissions of a newly created file under the current umask, ``0o666 & ~umask``."""
    try:
        # read without changing it: os.umask would briefly change it for all threads
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


def _free_mib(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free // (1 << 20)} MiB free in {folder}"
    except OSError:
        return f"free space of {folder} unknown"


def _folder_problem(folder: Path) -> int | None:
    """The errno that explains a failed write in ``folder`` (read-only, not writable, full), or None."""
    statvfs = getattr(os, "statvfs", None)  # not on Windows
    with suppress(OSError):
        if statvfs is not None and statvfs(folder).f_flag & os.ST_RDONLY:
            return errno.EROFS
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    with suppress(OSError):
        if shutil.disk_usage(folder).free < _FULL_DISK_BYTES:
            return errno.ENOSPC
    return None


def _is_about(filename: Any, target: Path) -> bool:
    """Whether an OSError's ``filename`` (None when it has none) is ``target``, a file beside it, or a folder above."""
    if filename is None:
        return True
    try:
        named = Path(os.fsdecode(filename)).absolute()
    except TypeError:  # a file descriptor
        return True
    return named.parent == target.parent or named in target.parents


def write_error(error: BaseException, path: str | os.PathLike) -> OSError | None:
    """
    ``error``, raised while writing ``path``, as an OSError of the same errno whose message names the problem and the
    path, e.g. ``[Errno 28] no space left on device while writing /x/model.pt (0 MiB free in /x)``, when the user can
    fix it: a full disk (ENOSPC), an exceeded quota (EDQUOT), a read-only file system (EROFS), a missing permission
    (EACCES, EPERM). torch.save's RuntimeError ("PytorchStreamWriter failed writing file", "inline_container.cc",
    "basic_ios::clear: iostream error"), which names neither, counts as one when the folder turns out to be full, read-only or not writable. Any other error
    gives None: it is not about where the file goes.

    Args:
        error: the error raised by the writer.
        path: the file being written.
    """
    target = Path(os.path.abspath(path))
    folder = target.parent
    if isinstance(error, OSError) and not _is_about(error.filename, target):
        return None  # e.g. an input the writer could not read: not a problem of the output folder
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code not in _WRITE_PROBLEMS:
        is_torch_failure = isinstance(error, RuntimeError) and any(m in str(error) for m in _TORCH_WRITE_FAILURES)
        code = _folder_problem(folder) if is_torch_failure and folder.is_dir() else None
    if code not in _WRITE_PROBLEMS:
        return None
    detail = _free_mib(folder) if code in _SPACE_ERRNOS else f"{folder} is not writable"
    # OSError(errno, message) is the errno's subclass, e.g. PermissionError for EACCES, as the original error was
    return OSError(code, f"{_WRITE_PROBLEMS[code]} while writing {target} ({detail})")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """
    Yield a temporary path in the folder of ``path``; when the block succeeds, the file gets the usual permissions
    and is renamed onto ``path``, otherwise it is removed and an existing ``path`` is left as it was. The parent folder
    is created.

    A failure the user can fix (full disk, quota, read-only file system, missing permission, also when torch.save
    reports it as an opaque RuntimeError) is raised as an OSError of that errno naming the problem and ``path`` (see
    :py:func:`write_error`); other errors are raised as they are.

    Args:
        path: the final file.
        suffix: suffix of the temporary file (default: the suffixes of ``path``, so writers pick the same format).

    Raises:
        OSError: e.g. ``[Errno 28] no space left on device while writing out/model.pt (0 MiB free in out)``.

    Example::

        with atomic_path("out/scan_heatmap.nii.gz") as tmp:
            nib.save(img, tmp)
    """
    target = Path(path)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or ".tmp")
        os.close(fd)
    except OSError as e:
        error = write_error(e, target)
        if error is None:
            raise
        raise error from e
    try:
        yield tmp
        # mkstemp creates private (0600) files; give the output the permissions of any other new file
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, target)
    except BaseException as e:
        # diagnosed before the partial file is removed: removing it frees the space that ran out
        error = write_error(e, target) if isinstance(e, Exception) else None
        with suppress(OSError):  # the original error matters, not a failed clean-up
            os.unlink(tmp)
        if error is None:
            raise
        raise error from e


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path, suffix=".tmp") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def atomic_save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG atomically (white background) and return the path."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white", **savefig_kwargs)
    return Path(path)
