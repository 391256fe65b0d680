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
"""The DICOM objects of a scored scan (SEG, Parametric Map, SR) as a post-processing transform."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monai_bigan.io.dicom import (
    anomaly_segmentation,
    heatmap_parametric_map,
    read_series,
    reorient_for_dicom,
    score_report,
    volume_to_frames,
    write_dataset,
    write_dicom_series,
)

__all__ = ["DICOM_OUTPUT_MODES", "SaveDicomResultsd"]

#: the accepted ``mode`` values and what they mean
DICOM_OUTPUT_MODES = ("auto", "always", "never")
_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


class OutputPaths(Protocol):
    """What names the outputs (``monai_bigan.data.InferenceBatch``)."""

    def output_path(self, source: str | os.PathLike, postfix: str, extension: str) -> Path: ...


def _package_version() -> str:
    try:
        return version("monai_bigan")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _mode(mode: str | bool) -> str:
    if isinstance(mode, bool):
        return "always" if mode else "never"
    name = str(mode).strip().lower()
    name = "always" if name in _TRUE else "never" if name in _FALSE else name
    if name not in DICOM_OUTPUT_MODES:
        raise ValueError(f"dicom_outputs must be one of {DICOM_OUTPUT_MODES} (or true/false), got {mode!r}.")
    return name


def _source_of(data: Mapping[Hashable, Any], keys: tuple[Hashable, ...]) -> str:
    for key in keys:
        meta = getattr(data.get(key), "meta", None) or {}
        source = meta.get("filename_or_obj")
        if source:
            return str(source)
    raise KeyError(f"DICOM outputs: no input path (meta 'filename_or_obj') under any of {list(keys)}.")


class SaveDicomResultsd:
    """
    Write the DICOM objects of a scored scan next to its other outputs: ``<stem>_seg.dcm`` (binary SEG of the mask),
    ``<stem>_pmap.dcm`` (Parametric Map of the heatmap) and ``<stem>_sr.dcm`` (Comprehensive 3D SR of the scores),
    each in the study of the input and referencing its series; their paths go to ``data["dicom_outputs"]`` (a list
    of str, empty when nothing was written) for a later upload. The mask and the heatmap (in the input's geometry,
    after ``Invertd``) are sampled on the source instances through world coordinates (see
    :py:func:`monai_bigan.io.dicom.volume_to_frames`).

    Args:
        outputs: what names the outputs: any object with ``output_path(source, postfix, extension) -> Path``
            (``monai_bigan.data.InferenceBatch``, which records the files for the input's completion record).
        mode: "auto" (only for an input that is a DICOM series folder), "always" or True (a NIfTI input too: it is
            first written as the DICOM series ``<stem>_series/IM0001.dcm, ...`` that the objects reference),
            "never" or False.
        model_name: the model named in the objects.
        model_version: its version (default: the installed monai_bigan's, ``monai_bigan.__version__``; read from
            the package metadata because ``monai_bigan`` imports this package).
        heatmap_label: what the heatmap's values mean (``ScoringSettings.heatmap_label``).
        mask_key: key of the binary mask (1 channel).
        heatmap_key: key of the heatmap (1 channel).
        source_key: key whose meta ``filename_or_obj`` is the input path (then ``mask_key``'s).
        output_key: key of the list of written paths.

    Raises:
        ValueError: for an unknown mode, or (naming the input) when the objects cannot be made, e.g. a "always" input
            that nibabel cannot read.

    Example::

        SaveDicomResultsd(outputs=batch, mode="auto", heatmap_label=scoring.heatmap_label)(data)["dicom_outputs"]
    """

    def __init__(
        self,
        outputs: OutputPaths,
        mode: str | bool = "auto",
        model_name: str = "monai_bigan BiGAN",
        model_version: str | None = None,
        heatmap_label: str = "anomaly heatmap",
        mask_key: str = "pred_mask",
        heatmap_key: str = "pred_heatmap",
        source_key: str = "image",
        output_key: str = "dicom_outputs",
    ) -> None:
        self.outputs = outputs
        self.mode = _mode(mode)
        self.model_name = str(model_name)
        self.model_version = str(model_version) if model_version is not None else _package_version()
        self.heatmap_label = str(heatmap_label)
        self.mask_key, self.heatmap_key, self.source_key = mask_key, heatmap_key, source_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.output_key] = []
        if self.mode == "never":
            return d
        source = _source_of(d, (self.source_key, self.mask_key))
        is_series = os.path.isdir(source)
        if not is_series and self.mode == "auto":
            return d
        try:
            series_files = [] if is_series else self._write_input_series(source)
            sources = read_series(source if is_series else series_files[0].parent, stop_before_pixels=True)
            d[self.output_key] = [str(p) for p in series_files + self._write_objects(d, source, sources)]
        except OSError:
            raise  # write errors already name the file and the problem
        except Exception as e:
            raise ValueError(f"{source}: DICOM outputs could not be written ({type(e).__name__}: {e}).") from e
        return d

    def _write_input_series(self, source: str) -> list[Path]:
        """Write a NIfTI input as the DICOM series the objects reference."""
        import nibabel as nib

        image = nib.load(source)
        volume = np.asarray(image.dataobj)
        while volume.ndim > 3 and volume.shape[-1] == 1:
            volume = volume[..., 0]
        if volume.ndim == 2:
            volume = volume[..., None]
        first = self.outputs.output_path(source, "series/IM0001", ".dcm")
        # each instance through output_path, so that the input's completion record lists every file; the series has
        # the slices of the volume as write_dicom_series reorients it (a coronal scan in RAS order: along y)
        for k in range(1, reorient_for_dicom(volume, image.affine)[0].shape[2]):
            self.outputs.output_path(source, f"series/IM{k + 1:04d}", ".dcm")
        return write_dicom_series(
            volume,
            image.affine,
            first.parent,
            series_description=f"{Path(source).name} (input as DICOM)"[:64],
            overwrite=True,  # the folder is an output of this input: a rerun replaces it
        )

    def _write_objects(self, d: Mapping[Hashable, Any], source: str, sources: list) -> list[Path]:
        mask, heatmap = d[self.mask_key], d[self.heatmap_key]
        mask_frames = volume_to_frames(mask, mask.affine, sources, order=0) > 0
        heatmap_frames = volume_to_frames(heatmap, heatmap.affine, sources, order=1).astype(np.float32)
        model = {"model_name": self.model_name, "model_version": self.model_version}
        seg = anomaly_segmentation(mask_frames, sources, **model)
        pmap = heatmap_parametric_map(heatmap_frames, sources, heatmap_label=self.heatmap_label, **model)
        report = score_report(d, sources, segmentation=seg, **model)
        return [
            write_dataset(seg, self.outputs.output_path(source, "seg", ".dcm")),
            write_dataset(pmap, self.outputs.output_path(source, "pmap", ".dcm")),
            write_dataset(report, self.outputs.output_path(source, "sr", ".dcm")),
        ]
