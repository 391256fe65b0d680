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
"""Installation of monai_bigan. Install the pinned CPU torch first (see README) so pip does not fetch a CUDA build."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "monai_bigan" / "__init__.py").read_text()).group(1)

setup(
    name="monai_bigan",
    version=VERSION,
    description="BiGAN unsupervised anomaly detection for 2D and 3D medical images, as a MONAI plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["monai_bigan", "monai_bigan.*"]),
    include_package_data=True,
    install_requires=[
        "torch>=2.8",
        "monai[fire,jsonschema,ignite,nibabel,pydicom,tensorboard]>=1.6.1,<1.7",
        "pytorch-ignite>=0.4.11,<0.6",
        "numpy>=1.24,<3",
        "nibabel>=5.0",
        # pydicom 2: pydicom-seg (MONAI Label's DICOM SEG path) uses pydicom 2 APIs, and highdicom 0.22 is its last
        # release for pydicom 2. highdicom writes the DICOM SEG, Parametric Map and SR outputs.
        "pydicom>=2.4.4,<3",
        "highdicom>=0.22.0,<0.23",
        # DICOMweb (QIDO/WADO/STOW) for batch scoring from and to a PACS; 0.59 is MONAI Label 0.8.5's
        "dicomweb-client>=0.59.1,<0.60",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "scipy>=1.10",
        # ships the MNI152 template inside its package: the demo data set is made from it, offline
        "nilearn>=0.10",
        "scikit-learn>=1.3",
    ],
    extras_require={
        # selenium drives Debian's chromium (and chromium-driver) for the OHIF viewer test; nothing is downloaded
        "test": ["pytest>=7.0", "selenium>=4.20"],
        # ONNX export of the scorer and its parity tests (torch.onnx's dynamo exporter needs onnxscript)
        "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        # MONAI Label app (monai_bigan/label). monailabel itself and pydicom-seg are installed with --no-deps (see
        # README): their declared dependencies pull torchvision and SAM2, and that torchvision breaks beside the CPU
        # torch wheel. pydicom < 3 because pydicom-seg uses pydicom 2 APIs.
        "label": [
            "pydicom>=2.4.4,<3",
            "pynetdicom>=2.0.2,<3",
            "dicomweb-client[gcp]>=0.59.1,<0.60",
            "fastapi>=0.110.2",
            "uvicorn>=0.29.0",
            "pydantic>=2.7.0",
            "pydantic-settings>=2.2.1",
            "python-dotenv>=1.0.1",
            "python-multipart>=0.0.9",
            "httpx>=0.27.0",
            "requests>=2.31.0",
            "requests-toolbelt>=1.0.0",
            "urllib3>=2.2.1",
            "schedule>=1.2.1",
            "timeloop>=1.0.2",
            "expiringdict>=1.2.2",
            "expiring_dict>=1.1.0",
            "cachetools>=5.3.3",
            "watchdog>=4.0.0",
            "pynrrd>=1.0.0",
            "itk>=5.3",
            "SimpleITK>=2.2",
            "scikit-image>=0.22",
            "shapely>=2.0.4",
            "girder-client>=3.2.3",
            "einops>=0.7.0",
            "pyyaml>=6.0.1",
            "filelock>=3.11.0",
            "passlib>=1.7.4",
            "pyjwt>=2.8.0",
            "bcrypt>=4.1.2",
            "google-auth>=2.29.0",
            "psutil>=5.9",
        ],
        "dev": ["pytest>=7.0", "black>=24", "isort>=5.12", "flake8>=7"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
