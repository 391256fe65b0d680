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
"""
The bundle in the model zoo's layout: ``python -m monai_bigan.bundle.package --output_dir DIR``.

The repository keeps the configs in ``bundles/bigan/`` (so that ``python -m monai.bundle run training --config_file
bundles/bigan/train.json`` runs from the repository root) and shares definitions through ``common.json`` macros whose
paths start at the repository root. A model-zoo bundle keeps its configs in ``configs/``, runs from its own folder, and
each config must stand alone; this writes such a copy, with the shared definitions inlined.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.utils import MACRO_KEY

from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.utils.bundle import default_bundle_root

__all__ = ["SHARED_CONFIG", "inline_shared_config", "package_bundle", "main"]

#: the config the workflow files reference with macros
SHARED_CONFIG = "common.json"
#: the zoo's files that are not configs
_BUNDLE_FILES = ("LICENSE",)
_CONFIG_FILES = ("metadata.json", "logging.conf")


def inline_shared_config(config: dict, shared: dict, shared_name: str = SHARED_CONFIG) -> dict:
    """
    ``config`` with every macro into the shared config (``"%<path>/common.json#id"``) replaced by the content it names,
    so the config stands alone.

    Args:
        config: a workflow config's content.
        shared: the shared config's content.
        shared_name: file name of the shared config.
    """

    def visit(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v) for v in value]
        if isinstance(value, str) and value.startswith(MACRO_KEY):
            path, ids = ConfigParser.split_path_id(value[len(MACRO_KEY) :])
            if Path(path).name == shared_name:
                return copy.deepcopy(ConfigParser(shared)[ids])
        return value

    return visit(config)


def package_bundle(
    output_dir: str | Path, bundle_dir: str | Path | None = None, checkpoint: str | Path | None = None
) -> Path:
    """
    Write the bundle in the model zoo's layout: ``configs/`` (standalone configs, ``metadata.json``,
    ``logging.conf``), ``docs/``, ``LICENSE`` and, when given, ``models/model.pt`` (the training checkpoint: inference
    reads the residual statistics from it too). ``bundle_root`` becomes ``"."``, the zoo's convention of running from
    the bundle's folder.

    Args:
        output_dir: the bundle folder to write (e.g. ``models/bigan`` of a model-zoo checkout).
        bundle_dir: the repository's bundle folder; default ``bundles/bigan``.
        checkpoint: a trained ``models/model.pt`` to include.

    Returns:
        the output folder.
    """
    source = Path(bundle_dir if bundle_dir is not None else default_bundle_root())
    out = Path(output_dir)
    if out.resolve() == source.resolve():
        raise ValueError(f"output_dir {out} is the bundle folder itself; choose another folder.")
    shared = ConfigParser.load_config_file(source / SHARED_CONFIG)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for config_file in sorted(source.glob("*.json")):
        if config_file.name in (SHARED_CONFIG, "metadata.json"):
            continue
        content = inline_shared_config(ConfigParser.load_config_file(config_file), shared)
        if "bundle_root" in content:
            content["bundle_root"] = "."
        atomic_write_text(out / "configs" / config_file.name, json.dumps(content, indent=4) + "\n")
    for name in _CONFIG_FILES:
        shutil.copy2(source / name, out / "configs" / name)
    for name in _BUNDLE_FILES:
        shutil.copy2(source / name, out / name)
    shutil.copytree(source / "docs", out / "docs", dirs_exist_ok=True)
    if checkpoint is not None:
        (out / "models").mkdir(exist_ok=True)
        shutil.copy2(checkpoint, out / "models" / "model.pt")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :py:func:`package_bundle`."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_bigan.bundle.package", description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument("--output_dir", required=True, help="bundle folder to write, e.g. model-zoo/models/bigan")
    parser.add_argument("--bundle_dir", default=None, help="default: bundles/bigan of the repository")
    parser.add_argument("--checkpoint", default=None, help="a trained models/model.pt to include")
    args = parser.parse_args(argv)
    print(package_bundle(args.output_dir, args.bundle_dir, args.checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
