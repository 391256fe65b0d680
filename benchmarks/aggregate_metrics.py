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
Mean and standard deviation of evaluation metrics over runs (e.g. seeds), as a Markdown table.

    python benchmarks/aggregate_metrics.py runs/seed*/evaluation/metrics.json
"""

from __future__ import annotations

import json
import sys

import numpy as np

METRICS = (
    ("auroc", "image AUROC"),
    ("auprc", "image AUPRC"),
    ("sensitivity_at_95_specificity", "sens. @ 95 % spec."),
    ("f1", "F1 @ val. threshold"),
    ("voxel_auroc", "voxel AUROC"),
    ("voxel_auprc", "voxel AUPRC"),
    ("dice_best", "Dice (best threshold)"),
    ("lesion_detection_rate", "lesions detected @ val. voxel threshold"),
)


def main(paths: list[str]) -> None:
    runs = [json.load(open(p)) for p in paths]
    methods = {"BiGAN": [r["bigan"] for r in runs]}
    for name in runs[0]["baselines"]:
        methods[name] = [r["baselines"][name] for r in runs]
    print(f"{len(runs)} runs: " + ", ".join(paths) + "\n")
    print("| metric | " + " | ".join(methods) + " |")
    print("| --- |" + " ---: |" * len(methods))
    for key, label in METRICS:
        cells = []
        for values in methods.values():
            v = np.array([m.get(key, np.nan) for m in values], dtype=float)
            cells.append("n/a" if np.isnan(v).all() else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
