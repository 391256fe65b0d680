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
"""Reading the bundle's layered configs from any working directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.utils import MACRO_KEY, merge_kv

__all__ = ["bundle_config_parser", "read_bundle_config", "resolve_macro_paths"]


def _resolve_macros(value: Any, folders: Sequence[Path]) -> Any:
    """``value`` with the file path of every ``%file#id`` macro made absolute when it is found under ``folders``."""
    if isinstance(value, dict):
        return {k: _resolve_macros(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_macros(v, folders) for v in value]
    if isinstance(value, str) and value.startswith(MACRO_KEY):
        path, ids = ConfigParser.split_path_id(value[len(MACRO_KEY) :])
        if path and not Path(path).is_absolute():
            for folder in folders:
                if (folder / path).is_file():
                    return f"{MACRO_KEY}{(folder / path).resolve()}" + (f"#{ids}" if ids else "")
    return value


def read_bundle_config(config_files: str | os.PathLike | Sequence[str | os.PathLike]) -> dict:
    """
    The merged content of ``config_files`` (later files override earlier ones, as ``monai.bundle run`` layers them),
    with the shared-config macros (``"%bundles/bigan/common.json#network_def"``) resolved to absolute paths.

    The bundle's macros name the shared config relative to the repository root, where the README's commands run;
    Python callers (MONAI Label, export, tests) may run anywhere, so each macro path is looked up relative to the
    current folder and then to the folders above each config file.

    Args:
        config_files: one config file or several, in layering order.
    """
    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    merged = ConfigParser(config={})
    for file in files:
        path = Path(file).resolve()
        content = _resolve_macros(ConfigParser.load_config_file(path), [Path.cwd(), *path.parents])
        for key, value in content.items():
            merge_kv(merged, key, value)
    return merged.get()


def resolve_macro_paths(parser: ConfigParser, config_files: str | os.PathLike | Sequence[str | os.PathLike]) -> None:
    """
    Make the macro paths of ``parser``'s content absolute in place (see :py:func:`read_bundle_config`), e.g. for the
    parser of a :py:class:`monai.bundle.ConfigWorkflow` built in another working directory.

    Args:
        parser: a parser that read ``config_files``.
        config_files: the config files it read.
    """
    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    folders = [Path.cwd()] + [folder for file in files for folder in Path(file).resolve().parents]
    parser.set(_resolve_macros(parser.get(), folders))


def bundle_config_parser(
    config_files: str | os.PathLike | Sequence[str | os.PathLike], **overrides: Any
) -> ConfigParser:
    """
    A :py:class:`monai.bundle.ConfigParser` of the layered ``config_files`` (see :py:func:`read_bundle_config`) with
    ``overrides`` set, as ``python -m monai.bundle run --config_file ... --key value`` builds it.

    Example::

        parser = bundle_config_parser(["bundles/bigan/inference.json", "configs/brain_3d.json"], bundle_root="runs/a")
        network = parser.get_parsed_content("network_def")
    """
    parser = ConfigParser(read_bundle_config(config_files))
    for key, value in overrides.items():
        parser[key] = value
    return parser
