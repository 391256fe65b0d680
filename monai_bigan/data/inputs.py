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
"""What an inference run scores, and where it may write."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .datalist import DATALIST_FILENAME, list_images, load_datalist

__all__ = ["inference_datalist", "prepare_output_dir"]


def inference_datalist(dataset_dir: str | os.PathLike, split: str = "test") -> list[dict]:
    """
    Inputs to score: the ``split`` entries of ``<dataset_dir>/datalist.json`` if the folder has one, otherwise every
    NIfTI file, PNG and DICOM series folder in it. Only the image paths are kept: labels and masks of a test split
    are never read by inference. Files that do not exist are kept and later reported as errors, one row each.

    Args:
        dataset_dir: a data set folder (with ``datalist.json``) or a plain folder of scans.
        split: the datalist split to score.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist.
        ValueError: when there is nothing to score.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist.")
    if (folder / DATALIST_FILENAME).is_file():
        try:
            entries = load_datalist(folder, split)
        except ValueError as e:
            if "do not exist" not in str(e):
                raise
            # missing files become error rows, so that the other inputs are still scored
            entries = load_datalist(folder, split, check_files=False)
    else:
        entries = list_images(folder)
    return [{"image": entry["image"]} for entry in entries]


def prepare_output_dir(output_dir: str | os.PathLike, inputs: Sequence[dict], image_key: str = "image") -> str:
    """
    Create ``output_dir`` and make sure it is not an input folder, so results never mix with (or overwrite) the scans.

    Raises:
        ValueError: when ``output_dir`` is the folder of an input or inside a DICOM series folder being read.
    """
    out = Path(output_dir).resolve()
    for entry in inputs:
        source = Path(entry[image_key]).resolve()
        input_dir = source if source.is_dir() else source.parent
        if out == input_dir or input_dir in out.parents and source.is_dir():
            raise ValueError(
                f"output_dir {out} is the folder of input {source}; choose another --output_dir so that results "
                "are never written into input folders."
            )
    out.mkdir(parents=True, exist_ok=True)
    return str(out)
