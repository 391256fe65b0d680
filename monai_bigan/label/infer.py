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
MONAI Label infer task of the BiGAN: the anomaly mask (model ``bigan``) or the float heatmap (``bigan_heatmap``) of
a scan in its own geometry, with the scan's score, percentile, flag and threshold in the result JSON.

The pre-processing, inferer, network and post-processing are those of ``inference.json``
(:py:func:`monai_bigan.label.workflow.build_inference_workflow`): there is no second scoring path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import Writer

from monai_bigan.label.dicom import DICOM_DIR_KEY, DicomOutputFolder
from monai_bigan.label.workflow import InferenceModel, InferenceWorkflow, LabelResultd
from monai_bigan.transforms import SaveDicomResultsd

__all__ = ["BiGANInferTask"]

_WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")


class BiGANInferTask(BasicInferTask):
    """
    Scores one scan with the BiGAN and returns its anomaly mask or heatmap in the scan's own geometry.

    The result JSON (``params`` of ``/infer``) holds ``score``, ``score_residual``, ``score_discriminator``,
    ``percentile``, ``flagged``, ``threshold``, ``threshold_mode``, ``voxel_threshold``, ``heatmap_vmax`` and
    ``mask_voxels``; for a DICOM series, the app adds the UIDs of the SEG, Parametric Map and SR under ``dicom``. The label file is a NIfTI (``.nii.gz`` for DICOM series input): uint8 with ``{"anomaly": 1}``
    for ``output="mask"``, float32 for ``output="heatmap"``.

    Args:
        model: the inference model (bundle settings and the loaded workflow cache), shared between tasks.
        output: ``"mask"`` or ``"heatmap"``.
        description: shown by MONAI Label clients.
    """

    def __init__(self, model: InferenceModel, output: str = "mask", description: str | None = None) -> None:
        if output not in ("mask", "heatmap"):
            raise ValueError(f"output must be 'mask' or 'heatmap', got {output!r}.")
        self.model = model
        self.output = output
        if description is None:
            description = (
                "BiGAN unsupervised anomaly detection: anomaly mask (inverted residual heatmap above the calibrated "
                "voxel threshold) and the scan's score, percentile among healthy scans and flag"
                if output == "mask"
                else "BiGAN unsupervised anomaly detection: float32 residual heatmap and the scan's score"
            )
        super().__init__(
            path=str(model.bundle.ckpt_file),
            network=None,
            type=InferType.SEGMENTATION if output == "mask" else InferType.OTHERS,
            labels={"anomaly": 1} if output == "mask" else None,
            dimension=3,
            description=description,
            load_strict=True,
        )

    def is_valid(self) -> bool:
        """Always listed: without a trained model the call fails with a 'train first' message."""
        return True

    def workflow(self, data: dict[str, Any] | None = None) -> InferenceWorkflow:
        """The inference workflow on the request's device (loaded, or reloaded after training)."""
        device = (data or {}).get("device") or "cpu"
        return self.model.get(device if isinstance(device, str) else device[0])

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        return self.workflow(data).preprocessing

    def inferer(self, data: dict[str, Any] | None = None) -> Inferer:
        return self.workflow(data).inferer

    def inverse_transforms(self, data: dict[str, Any] | None = None) -> None:
        """None: the config's ``Invertd`` post-transform brings the maps back to the input geometry."""
        return None

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        """
        The inference bundle's post-processing, then (when the app gave the request a DICOM folder, and the image is
        a DICOM series) the SEG, Parametric Map and SR of the bundle's own writer, then the MONAI Label result.
        """
        workflow = self.workflow(data)
        transforms = list(workflow.postprocessing)
        dicom_dir = (data or {}).get(DICOM_DIR_KEY)
        if dicom_dir:
            transforms.append(
                SaveDicomResultsd(DicomOutputFolder(dicom_dir), mode="auto", heatmap_label=workflow.heatmap_label)
            )
        return transforms + [LabelResultd(self.output, workflow.calibration, threshold_mode=workflow.threshold_mode)]

    def _get_network(self, device: str, data: dict[str, Any] | None) -> torch.nn.Module:
        return self.workflow({"device": device}).scorer

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """Writes ``pred`` with nibabel (NIfTI input or DICOM series) or ITK (NRRD), in the input's geometry."""
        path = str(data.get("image_path") or "")
        if not data.get("result_extension"):
            own = next((e for e in _WRITABLE_EXTENSIONS if path.lower().endswith(e)), None)
            data["result_extension"] = extension or (own if own and not os.path.isdir(path) else ".nii.gz")
        if not data.get("result_dtype"):
            data["result_dtype"] = dtype or (np.uint8 if self.output == "mask" else np.float32)
        if self.labels is not None:
            data["labels"] = self.labels
        return Writer(label=self.output_label_key, json=self.output_json_key, nibabel=True)(data)
