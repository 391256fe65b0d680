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
"""Data sets: the ``datalist.json`` contract, folder listing, and the synthetic brain MRI demo data set."""

from __future__ import annotations

from typing import Any

from .batch import RECORDS_DIRNAME, InferenceBatch, OutputLayout, open_inference_batch
from .datalist import DATALIST_FILENAME, PATH_KEYS, list_images, load_datalist
from .guarded import GuardedDataset, describe_error
from .inputs import inference_datalist, prepare_output_dir
from .outputs import IMAGE_EXTENSIONS, MANIFEST_FILENAME, OutputNames, data_root, output_stem
from .preflight import preflight_check
from .samplers import DistributedShareSampler

__all__ = [
    "DATALIST_FILENAME",
    "PATH_KEYS",
    "list_images",
    "load_datalist",
    "GuardedDataset",
    "describe_error",
    "inference_datalist",
    "prepare_output_dir",
    "IMAGE_EXTENSIONS",
    "MANIFEST_FILENAME",
    "RECORDS_DIRNAME",
    "InferenceBatch",
    "OutputLayout",
    "OutputNames",
    "data_root",
    "open_inference_batch",
    "output_stem",
    "DistributedShareSampler",
    "preflight_check",
    "DEMO_FORMAT_VERSION",
    "DEMO_INFO_FILENAME",
    "ensure_demo_data",
    "generate_demo_data",
    "ensure_demo_slices",
    "extract_demo_slices",
    "dicomweb_datalist",
    "inference_inputs",
    "orthanc_config",
    "upload",
]

_DEMO_NAMES = ("DEMO_FORMAT_VERSION", "DEMO_INFO_FILENAME", "ensure_demo_data", "generate_demo_data")
_DEMO_SLICES_NAMES = ("ensure_demo_slices", "extract_demo_slices")
_DICOMWEB_NAMES = ("dicomweb_datalist", "inference_inputs", "orthanc_config", "upload")


def __getattr__(name: str) -> Any:
    # demo is imported on first use, so that `python -m monai_bigan.data.demo` does not find it already imported
    if name in _DEMO_NAMES:
        from . import demo

        return getattr(demo, name)
    if name in _DEMO_SLICES_NAMES:
        from . import demo_slices

        return getattr(demo_slices, name)
    if name in _DICOMWEB_NAMES:
        # imported on first use too: `python -m monai_bigan.data.dicomweb`, and dicomweb-client is optional
        from . import dicomweb

        return getattr(dicomweb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
