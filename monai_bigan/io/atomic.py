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

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_save_figure", "new_file_mode"]


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


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """
    Yield a temporary path in the folder of ``path``; when the block succeeds, the file gets the usual permissions
    and is renamed onto ``path``, otherwise it is removed. The parent folder is created.

    Args:
        path: the final file.
        suffix: suffix of the temporary file (default: the suffixes of ``path``, so writers pick the same format).

    Example::

        with atomic_path("out/scan_heatmap.nii.gz") as tmp:
            nib.save(img, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates private (0600) files; give the output the permissions of any other new file
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
