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
The validation figures a selection script chooses by: for each setting folder (``OUT/SETTING/seed*/validation``), the
image AUROC and voxel AUPRC of the BiGAN over the seeds, and their mean (the criterion of the choice).

    python benchmarks/validation_summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(out: str) -> None:
    for folder in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        runs = [json.loads(p.read_text())["bigan"] for p in sorted(folder.glob("seed*/validation/metrics.json"))]
        if not runs:
            continue
        auroc = np.array([r["auroc"] for r in runs])
        voxel = np.array([r["voxel_auprc"] for r in runs])
        print(
            f"{folder.name}: {len(runs)} seeds, image AUROC {auroc.mean():.3f} ± {auroc.std():.3f}, "
            f"voxel AUPRC {voxel.mean():.3f} ± {voxel.std():.3f}, mean of both {(auroc.mean() + voxel.mean()) / 2:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
