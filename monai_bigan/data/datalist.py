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
Reading and validating the ``datalist.json`` of a data set folder, and listing the images of a plain folder.

A data set is a folder holding ``datalist.json``::

    {
        "training": [{"image": "imagesTr/a.nii.gz"}, ...],
        "validation": [{"image": "imagesVal/b.nii.gz", "label": 1, "mask": "masks/b.nii.gz"}, ...],
        "test": [{"image": "imagesTs/c.nii.gz", "label": 0}, ...]
    }

Paths are relative to that folder (absolute paths are accepted too). ``"image"`` may be a NIfTI file, a PNG file or a
DICOM series folder. ``"label"`` is 1 for an anomalous and 0 for a healthy subject; ``"mask"`` is an optional voxel
mask of the anomaly and ``"brainmask"`` an optional mask of the region to score.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["DATALIST_FILENAME", "PATH_KEYS", "load_datalist", "list_images"]

logger = logging.getLogger(__name__)

DATALIST_FILENAME = "datalist.json"
# keys of a datalist entry that hold a file or folder path
PATH_KEYS = ("image", "mask", "brainmask")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_PNG_SUFFIXES = (".png",)


def _resolve(base: Path, value: str) -> str:
    """Return ``value`` as an absolute, normalized path; relative paths are taken relative to ``base``."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(os.path.abspath(path))


def _parse_label(value: Any) -> int | None:
    """Return ``value`` as 0 or 1, or None when it is not a valid binary label."""
    # bool is an int subclass: accept True/False as 1/0; accept 0.0/1.0 written by numeric tools
    if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer()):
        label = int(value)
        return label if label in (0, 1) else None
    return None


def load_datalist(
    dataset_dir: str | os.PathLike, split: str, required: bool = True, check_files: bool = True
) -> list[dict]:
    """
    Read one split of ``<dataset_dir>/datalist.json`` and validate it.

    Path keys (``"image"``, ``"mask"``, ``"brainmask"``) are made absolute (relative paths are taken relative to
    ``dataset_dir``), ``"label"`` is converted to ``int``, other keys are kept as they are. A path key set to
    ``null`` is dropped. Every referenced file or folder must exist.

    Args:
        dataset_dir: the data set folder that holds ``datalist.json``.
        split: the split to read, for example ``"training"``, ``"validation"`` or ``"test"``.
        required: when True, a missing or empty split is an error; when False, it gives an empty list.
        check_files: when True, every referenced file must exist; inference passes False so that a missing file
            becomes one error row while the other inputs are still scored.

    Returns:
        The entries of the split: new dictionaries, in file order.

    Raises:
        FileNotFoundError: ``dataset_dir`` or its ``datalist.json`` does not exist.
        ValueError: the file is not valid JSON, its top level is not an object, the split is missing or empty while
            ``required``, the split is not a list, an entry is not an object or has no ``"image"``, a label is not
            0 or 1, a path is not a string, or referenced files do not exist (all of them are listed).

    Example::

        train_files = load_datalist("data/demo", "training")
        test_files = load_datalist("data/demo", "test", required=False)
    """
    base = Path(dataset_dir).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"Data set folder {str(base)!r} does not exist (or is not a folder).")
    base = Path(os.path.abspath(base))
    datalist_path = base / DATALIST_FILENAME
    if not datalist_path.is_file():
        raise FileNotFoundError(
            f"{str(datalist_path)!r} does not exist: a data set folder must hold {DATALIST_FILENAME}."
        )
    try:
        with open(datalist_path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{str(datalist_path)!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})."
        ) from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{str(datalist_path)!r} is not valid UTF-8 text: {e}.") from e
    if not isinstance(content, dict):
        raise ValueError(
            f"{str(datalist_path)!r}: the top level must be a JSON object with split names as keys, "
            f"got {type(content).__name__}."
        )

    entries = content.get(split)
    if entries is None or (isinstance(entries, list) and not entries):
        if required:
            state = "has no" if entries is None else "has empty"
            raise ValueError(f"{DATALIST_FILENAME} at {str(datalist_path)!r} {state} {split!r} entries.")
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{str(datalist_path)!r}: {split!r} must be a list of objects, got {type(entries).__name__}.")

    result: list[dict] = []
    missing: list[str] = []
    for index, entry in enumerate(entries):
        where = f"{str(datalist_path)!r}: entry {index} of {split!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object, got {type(entry).__name__}.")
        if entry.get("image") is None:
            raise ValueError(f"{where} has no 'image' key.")
        item = dict(entry)
        for key in PATH_KEYS:
            if key not in item:
                continue
            value = item[key]
            if value is None:
                del item[key]
                continue
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise ValueError(f"{where}: {key!r} must be a non-empty path string, got {value!r}.")
            item[key] = _resolve(base, os.fspath(value))
            if check_files and not os.path.exists(item[key]):
                missing.append(f"entry {index} {key!r}: {item[key]}")
        if "label" in item:
            label = _parse_label(item["label"])
            if label is None:
                raise ValueError(f"{where} has label {item['label']!r}; a label must be 0 (healthy) or 1 (anomalous).")
            item["label"] = label
        result.append(item)

    if missing:
        raise ValueError(
            f"{str(datalist_path)!r}: {len(missing)} file(s) referenced by {split!r} do not exist:\n  "
            + "\n  ".join(missing)
        )
    logger.debug("Loaded %d %r entries from %s.", len(result), split, datalist_path)
    return result


def _has_suffix(name: str, suffixes: Iterable[str]) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in suffixes)


def _is_dicom(path: str) -> bool | None:
    """Whether ``path`` is a DICOM file (DICM preamble); None when it cannot be read (broken link, no permission)."""
    from pydicom.misc import is_dicom  # imported here: pydicom is only needed for folders of DICOM files

    try:
        return bool(is_dicom(path))
    except OSError:
        return None


def list_images(folder: str | os.PathLike) -> list[dict]:
    """
    List the scorable images of a folder that has no ``datalist.json``.

    The folder is searched recursively, following links to folders (each folder once, so link loops end); hidden
    files and folders (name starting with ``"."``) are skipped. An image is a NIfTI file (``.nii``, ``.nii.gz``), a
    PNG file, or a DICOM series folder: a folder that directly contains DICOM files (detected from their content with
    ``pydicom.misc.is_dicom``, whatever their names).

    Whatever may be a scan but cannot be read is listed too, so that it becomes one error row of the run instead of
    stopping the listing or silently disappearing: a folder that cannot be read, a file that cannot be read (broken
    or looping link, no permission) in a folder that holds no readable DICOM file (in a DICOM series folder the series
    check reports it), and a folder named like an image file (``scan.nii.gz/``).

    Args:
        folder: the folder to search.

    Returns:
        ``[{"image": absolute_path}, ...]``, sorted by path.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is not a folder.
        ValueError: the folder holds no NIfTI, PNG or DICOM series.

    Example::

        items = list_images("/data/new_scans")  # [{"image": "/data/new_scans/a.nii.gz"}, ...]
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder.")
    root = Path(os.path.abspath(root))

    image_suffixes = _NIFTI_SUFFIXES + _PNG_SUFFIXES
    images: set[str] = set()
    # real paths of the folders to walk: a link to a folder already listed, or a link loop, is walked no more
    real_root = os.path.realpath(root)
    queued = {real_root}

    def unreadable_folder(error: OSError) -> None:
        # os.walk skips a folder it cannot list: keep it, its check names the problem
        if error.filename is not None:
            images.add(os.path.normpath(os.fspath(error.filename)))

    for current, dirs, files in os.walk(root, onerror=unreadable_folder, followlinks=True):
        kept = []
        # real folders before links to them, so that a folder is listed under its own path
        for name in sorted(dirs, key=lambda d: os.path.islink(os.path.join(current, d))):
            real = os.path.realpath(os.path.join(current, name))
            # a link to a folder above the root would walk the root again, and everything beside it
            above_root = real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep)
            if not name.startswith(".") and real not in queued and not above_root:
                queued.add(real)
                kept.append(name)
        dirs[:] = kept
        images.update(os.path.join(current, d) for d in dirs if _has_suffix(d, image_suffixes))
        is_series, unreadable = False, []
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(current, name)
            if _has_suffix(name, image_suffixes):
                images.add(path)
                continue
            if os.path.exists(path) and not os.path.isfile(path):
                continue  # a socket or pipe is no scan, and opening a pipe would block
            dicom = _is_dicom(path) if not is_series else False
            if dicom is None:
                unreadable.append(path)
            is_series = is_series or bool(dicom)
        if is_series:
            # one DICOM file is enough: the folder is read as one series, whose check reports unreadable files
            images.add(os.path.normpath(current))
        else:
            images.update(unreadable)

    if not images:
        raise ValueError(
            f"No scorable image in {str(root)!r}: expected NIfTI (.nii, .nii.gz) or PNG files, "
            f"or folders of DICOM files (or a {DATALIST_FILENAME})."
        )
    return [{"image": p} for p in sorted(images)]
