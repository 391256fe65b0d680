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
How the outputs of a batch of inputs are named: one function for the NIfTI writers, the review sheets and the report.

The outputs of an input are ``<output_dir>/<stem>_<postfix><extension>``, where the stem is the input's path relative
to the batch's *data root* (the deepest folder holding every input), without its image extension::

    inputs                                  data root    stems
    /data/a/scan.nii.gz, /data/b/scan.nii.gz  /data       a/scan, b/scan
    /data/imagesTs/case_1.nii.gz, ...       /data/imagesTs  case_1, ...
    /data/dicom/1.2.840.99 (a DICOM series)  /data/dicom  1.2.840.99

so inputs with the same file name in different folders never share outputs, and a flat folder of scans gives flat
outputs named after the files. Two inputs of one folder that differ only by their extension (``case.nii`` and
``case.nii.gz``) keep their extension in the stem (``case.nii``, ``case.nii.gz``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath

__all__ = ["IMAGE_EXTENSIONS", "MANIFEST_FILENAME", "OutputNames", "data_root", "output_stem", "source_key"]

#: the manifest of a batch of results in an output folder (see :py:class:`monai_bigan.data.InferenceBatch`)
MANIFEST_FILENAME = "inference_batch.json"

#: image extensions removed from the stems, compared without case (a DICOM series folder has none)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".png", ".dcm", ".mha", ".mhd", ".nrrd", ".jpg", ".jpeg", ".tif", ".tiff")


def source_key(path: str | os.PathLike) -> str:
    """``path`` absolute and normalized (no trailing separator), as inputs are compared."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _strip_extension(name: str) -> str:
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def output_stem(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> str:
    """
    The stem of the outputs of the input ``path``: its path relative to ``data_root`` (with ``/`` separators), or its
    file name when ``data_root`` is None, without a known image extension (:py:data:`IMAGE_EXTENSIONS`); ``"image"``
    when nothing is left.

    Example::

        output_stem("/data/a/case_1.nii.gz")             # "case_1"
        output_stem("/data/a/case_1.nii.gz", "/data")    # "a/case_1"
        output_stem("/data/dicom/series_7/")              # "series_7"
    """
    source = source_key(path)
    if data_root is None:
        relative = os.path.basename(source)
    else:
        relative = PurePath(os.path.relpath(source, source_key(data_root))).as_posix()
        if relative == ".." or relative.startswith("../"):
            raise ValueError(f"input {source} is not inside the data root {data_root}.")
    return _strip_extension(relative) or "image"


def data_root(paths: Iterable[str | os.PathLike]) -> str:
    """
    The deepest folder holding every input of ``paths``: the common folder of their parent folders (a DICOM series
    folder counts as an input inside its parent, like a file).

    Raises:
        ValueError: when ``paths`` is empty.
    """
    parents = [os.path.dirname(source_key(p)) for p in paths]
    if not parents:
        raise ValueError("no inputs: a batch needs at least one input to name its outputs.")
    return os.path.commonpath(parents)


class OutputNames:
    """
    The output stems of a batch of inputs (see the module documentation): relative to the batch's data root, without
    the image extension, unique within the batch.

    Args:
        inputs: the input paths, or datalist items holding them under ``image_key``.
        image_key: key of the input path in datalist items.
        root: the data root; default :py:func:`data_root` of the inputs.

    Raises:
        ValueError: when there is no input, or two inputs would get the same outputs (one input listed under two
            spellings that resolve to one path is one input).

    Example::

        names = OutputNames(["/data/a/scan.nii.gz", "/data/b/scan.nii.gz"])
        names.root                              # "/data"
        names.stem("/data/b/scan.nii.gz")       # "b/scan"
    """

    def __init__(
        self,
        inputs: Sequence[str | os.PathLike | Mapping],
        image_key: str = "image",
        root: str | os.PathLike | None = None,
    ) -> None:
        sources = list(dict.fromkeys(source_key(i[image_key] if isinstance(i, Mapping) else i) for i in inputs))
        self.root = source_key(root) if root is not None else data_root(sources)
        stems = {source: output_stem(source, self.root) for source in sources}
        counts: dict[str, int] = {}
        for stem in stems.values():
            counts[stem] = counts.get(stem, 0) + 1
        for source, stem in stems.items():
            if counts[stem] > 1:
                # same folder, same name, different extensions: keep the whole file name
                stems[source] = PurePath(os.path.relpath(source, self.root)).as_posix()
        seen: dict[str, str] = {}
        for source, stem in stems.items():
            if stem in seen:
                raise ValueError(f"inputs {seen[stem]} and {source} would both write outputs named {stem!r}.")
            seen[stem] = source
        self.stems = stems

    @property
    def sources(self) -> list[str]:
        """The inputs, absolute and normalized, in order, each once."""
        return list(self.stems)

    def __contains__(self, source: object) -> bool:
        return isinstance(source, (str, os.PathLike)) and source_key(source) in self.stems

    def stem(self, source: str | os.PathLike) -> str:
        """
        The output stem of the input ``source``.

        Raises:
            KeyError: when ``source`` is not an input of the batch.
        """
        key = source_key(source)
        if key not in self.stems:
            raise KeyError(f"{key} is not an input of this batch (data root {self.root}).")
        return self.stems[key]
