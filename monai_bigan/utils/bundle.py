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

__all__ = ["default_bundle_root", "require_file"]


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
