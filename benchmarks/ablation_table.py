"""
Markdown table of the ablation runs of ``benchmarks/ablation.sh``: mean ± standard deviation over seeds of each
variant, and the z-score and PCA baselines (evaluated with the default variant, and with any other variant that
changes them, named after it).

    python benchmarks/ablation_table.py RUNS_DIR/volumes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

COLUMNS = (
    ("auroc", "image AUROC"),
    ("auprc", "image AUPRC"),
    ("voxel_auprc", "voxel AUPRC"),
    ("dice_best", "Dice (best threshold)"),
    ("voxel_auroc", "voxel AUROC"),
)


def _cell(values: list[float]) -> str:
    v = np.array(values, dtype=float)
    return "n/a" if v.size == 0 or np.isnan(v).all() else f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def main(folder: str) -> None:
    root = Path(folder)
    rows: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*/seed*/evaluation/metrics.json")):
        metrics = json.loads(path.read_text())
        variant = path.parts[-4]
        rows.setdefault(variant, []).append(metrics["bigan"])
        for name, values in metrics.get("baselines", {}).items():
            suffix = "" if variant == "default" else f" ({variant})"
            rows.setdefault(f"baseline: {name}{suffix}", []).append(values)
    # a variant's baseline rows only where they differ from the default's (e.g. PCA has no polarity)
    for name in [k for k in rows if k.startswith("baseline:") and k.endswith(")")]:
        plain = name.rsplit(" (", 1)[0]
        if plain in rows and rows[name] == rows[plain]:
            del rows[name]
    order = (
        ["default"]
        + sorted(k for k in rows if k != "default" and not k.startswith("baseline"))
        + sorted(k for k in rows if k.startswith("baseline"))
    )
    print("| variant | seeds | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("| --- | ---: |" + " ---: |" * len(COLUMNS))
    for name in order:
        if name not in rows:
            continue
        runs = rows[name]
        cells = [_cell([r.get(key, np.nan) for r in runs]) for key, _ in COLUMNS]
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bigan_ablation/volumes")
