"""The 2D image preset: a BiGAN trained on PNG images directly and scored image by image."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
from monai.bundle import run
from PIL import Image

from tests.conftest import REPO_ROOT

BUNDLE = REPO_ROOT / "bundles" / "bigan"
PRESET = str(REPO_ROOT / "configs" / "images_2d.json")
TINY = {"channels": [4, 8], "strides": [2, 2], "image_size": [16, 16], "latent_size": 8}


def test_png_images_train_and_score(tmp_path):
    rng = np.random.default_rng(0)
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for split, count in (("training", 8), ("validation", 4), ("test", 2)):
        for i in range(count):
            yy, xx = np.mgrid[:40, :48]
            image = np.where(((yy - 20) / 15) ** 2 + ((xx - 24) / 18) ** 2 < 1, 150.0, 0.0)
            image += rng.normal(0, 5, image.shape)
            label = int(split != "training" and i % 2)
            if label:
                image[15:20, 20:26] = 255
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / f"{split}{i}.png")
            entry = {"image": f"{split}{i}.png"}
            if split != "training":
                entry["label"] = label
            datalist[split].append(entry)
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    bundle_root, out = tmp_path / "bundle", tmp_path / "out"
    common = {"bundle_root": str(bundle_root), "dataset_dir": str(tmp_path), **TINY}
    run("training", config_file=[str(BUNDLE / "train.json"), PRESET], max_epochs=1, batch_size=4, **common)
    assert (bundle_root / "models" / "model.pt").is_file()
    run(config_file=[str(BUNDLE / "inference.json"), PRESET], output_dir=str(out), **common)
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    heatmap = nib.load(out / "test0_heatmap.nii.gz")
    # MONAI reads PNGs as (width, height); the heatmap keeps the image's own grid
    assert heatmap.shape == (48, 40)
    assert (out / "test0_review.png").is_file()
