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
"""Helpers that bundle configs call."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["as_bool", "default_bundle_root", "require_file"]


def default_bundle_root(name: str = "bigan") -> str:
    """
    Default ``bundle_root`` of the shipped bundle ``bundles/<name>``.

    MONAI's ``ConfigWorkflow`` does not tell a config where its file lives, and the bundle convention ``"."`` would
    put checkpoints into the current folder when the bundle is started from the repository root. The bundle lives
    beside the package in a source checkout (``pip install -e .``), so its folder is found from the package; anywhere
    else the current folder is used, as MONAI does. ``--bundle_root DIR`` always takes precedence.

    Args:
        name: folder name of the bundle under ``bundles/``.
    """
    candidate = Path(__file__).resolve().parents[2] / "bundles" / name
    return str(candidate) if (candidate / "train.json").is_file() else os.getcwd()


def require_file(path: str | os.PathLike, hint: str) -> str:
    """
    Return ``path`` if it is a file, else raise a FileNotFoundError that names it and says what to do.

    Args:
        path: the file a workflow needs, e.g. the trained checkpoint.
        hint: what the user should do to create it.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: {hint}")
    return str(path)


def as_bool(value: bool | str | int) -> bool:
    """
    ``value`` as a bool. ``python -m monai.bundle run --key false`` passes the string ``"false"`` (Python Fire only
    parses ``False``), which a config expression would take as true; the bundle configs wrap every boolean key in
    this function, so ``true``/``false``, ``True``/``False``, ``1``/``0``, ``yes``/``no`` and ``on``/``off`` all work.

    Raises:
        ValueError: for any other string.

    Example::

        "mask": "$monai_bigan.utils.as_bool(@heatmap_mask)"
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            raise ValueError(f"expected a boolean (true/false), got {value!r}.")
        return text in ("true", "1", "yes", "on")
    return bool(value)
