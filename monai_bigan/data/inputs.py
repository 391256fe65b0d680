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

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .datalist import DATALIST_FILENAME, list_images, load_datalist
from .outputs import MANIFEST_FILENAME

__all__ = ["inference_datalist", "prepare_output_dir"]

logger = logging.getLogger(__name__)


def _folder_of(image: str) -> Path:
    """
    The real folder of ``image``: a DICOM series folder itself (an output folder holding the SEG, Parametric Map and
    SR of a batch is listed as a series folder), else the folder holding the file.
    """
    if os.path.isdir(image):
        return Path(os.path.realpath(image))
    return Path(os.path.realpath(os.path.dirname(os.path.abspath(image))))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _result_folders(folder: Path, images: Sequence[str], output_dir: str | os.PathLike | None) -> list[Path]:
    """
    The real paths of the folders of ``folder`` holding results rather than scans: ``output_dir`` when it is inside
    ``folder``, and every folder holding a batch manifest.
    """
    root = Path(os.path.realpath(folder))
    found = set()
    if output_dir is not None:
        out = Path(os.path.realpath(Path(output_dir).expanduser()))
        # output_dir == folder itself is refused later by prepare_output_dir, with its own message
        if out != root and _within(out, root):
            found.add(out)
    has_manifest: dict[Path, bool] = {}
    for image in images:
        parent = _folder_of(image)
        for candidate in [parent, *parent.parents]:
            if not _within(candidate, root):
                break
            if candidate not in has_manifest:
                has_manifest[candidate] = (candidate / MANIFEST_FILENAME).is_file()
            if has_manifest[candidate]:
                found.add(candidate)
    return sorted(found)


def inference_datalist(
    dataset_dir: str | os.PathLike, split: str = "test", output_dir: str | os.PathLike | None = None
) -> list[dict]:
    """
    Inputs to score: the ``split`` entries of ``<dataset_dir>/datalist.json`` if the folder has one, otherwise every
    NIfTI file, PNG and DICOM series folder in it. Only the image paths are kept: labels and masks of a test split
    are never read by inference. Files that do not exist are kept and later reported as errors, one row each.

    A plain folder's listing leaves out the results it holds, so that heatmaps are never scored as scans: the
    ``output_dir`` when it is inside the folder, and every folder holding a batch manifest (``inference_batch.json``,
    see :py:class:`monai_bigan.data.InferenceBatch`), e.g. the output folder of an earlier run.

    Args:
        dataset_dir: a data set folder (with ``datalist.json``) or a plain folder of scans.
        split: the datalist split to score.
        output_dir: the output folder of the run, left out of a plain folder's listing.

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
        excluded = _result_folders(folder.expanduser(), [e["image"] for e in entries], output_dir)
        kept = [e for e in entries if not any(_within(_folder_of(e["image"]), f) for f in excluded)]
        if len(kept) < len(entries):
            where = ", ".join(str(f) for f in excluded)
            logger.info(f"{len(entries) - len(kept)} files in output folders ({where}) are not scored as inputs.")
            if not kept:
                raise ValueError(
                    f"No scan to score in {folder}: it holds only results of monai_bigan ({where}); point "
                    "--dataset_dir at the scans."
                )
        entries = kept
    return [{"image": entry["image"]} for entry in entries]


def prepare_output_dir(output_dir: str | os.PathLike, inputs: Sequence[dict], image_key: str = "image") -> str:
    """
    Create ``output_dir`` and make sure it is not an input folder, so results never mix with (or overwrite) the scans.

    Raises:
        ValueError: when ``output_dir`` is the folder of an input or inside a DICOM series folder being read.
    """
    # realpath, unlike Path.resolve, never raises on a looping link: that input becomes an error row later
    out = Path(os.path.realpath(output_dir))
    for entry in inputs:
        source = Path(os.path.realpath(entry[image_key]))
        input_dir = source if source.is_dir() else source.parent
        if out == input_dir or input_dir in out.parents and source.is_dir():
            raise ValueError(
                f"output_dir {out} is the folder of input {source}; choose another --output_dir so that results "
                "are never written into input folders."
            )
    out.mkdir(parents=True, exist_ok=True)
    return str(out)
