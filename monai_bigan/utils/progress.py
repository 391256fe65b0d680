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
"""Progress bars with an ETA that stay readable in log files, for every long phase of the package."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

__all__ = ["NON_TTY_MININTERVAL", "is_interactive", "progress_bar"]

# seconds between two updates of a bar written to a file or a pipe (log files, CI): a line every 10 s at most
NON_TTY_MININTERVAL = 10.0


def is_interactive(stream: IO | None = None) -> bool:
    """Whether ``stream`` (``sys.stderr`` by default, where tqdm writes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    transient: bool = False,
    file: IO | None = None,
    **kwargs: Any,
) -> tqdm:
    """
    A ``tqdm`` progress bar (with its ETA) that stays readable in log files.

    On a terminal the bar is redrawn as usual. Written to a file or a pipe (a log file, CI) it is redrawn at most
    every :py:data:`NON_TTY_MININTERVAL` seconds, so a long phase leaves a status line every 10 s and a short one
    only its first and last lines.

    Args:
        iterable: what to iterate over; None for a bar updated by hand with ``update``.
        total: number of expected iterations; by default ``len(iterable)`` when it has one.
        desc: prefix of the bar.
        unit: name of one iteration (``"scan"``, ``"subject"``, ...).
        enabled: False gives a disabled bar: iteration passes through and nothing is written.
        transient: a short, repeated sub-phase (e.g. before each validation): on a terminal its bar is erased when
            done; in a log file it is written only when the phase lasts more than :py:data:`NON_TTY_MININTERVAL`.
        file: the stream, ``sys.stderr`` by default.
        kwargs: further ``tqdm`` arguments, overriding the above settings (e.g. ``mininterval``, ``smoothing``).

    Returns:
        the ``tqdm`` object; use it as an iterable or a context manager, and close it when done.

    Example::

        for item in progress_bar(items, desc="preflight", unit="file"):
            check(item)
    """
    interactive = is_interactive(file)
    options: dict[str, Any] = {"dynamic_ncols": interactive, "leave": not (transient and interactive)}
    if not interactive:
        options["mininterval"] = NON_TTY_MININTERVAL
        if transient:
            options["delay"] = NON_TTY_MININTERVAL
    options.update(kwargs)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, file=file, **options)
