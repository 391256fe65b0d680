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
A 2D-image version of the demo data set: axial slices of the synthetic brain volumes of :py:mod:`.demo`, as 2D NIfTI
images, for the 2D-image workflow (``configs/images_2d.json``) and its benchmark.

Slices are taken from one anatomical band (by default 40-65 % of the brain's inferior-superior extent: the level of
the lateral ventricles and the centrum semiovale, where the demo lesions are most frequent), so that every image shows
roughly the same view, as in a 2D image data set:

- training: every ``step``-th slice of the band of each healthy training subject;
- validation: every ``validation_step``-th slice of the band of each validation subject (by default ``step``), so
  that thresholds and choices made on validation rest on about a hundred images rather than a dozen; lesion edges
  make it harder than the test split;
- test: one slice per subject; for a subject with lesions the band slice with the largest lesion area, otherwise a
  random band slice. ``validation_step=0`` picks the validation slices the same way.

Each image's label comes from the slice's own lesion mask (a slice whose subject's lesions lie elsewhere is healthy).

Command line::

    python -m monai_bigan.data.demo_slices --source_dir data/demo --output_dir data/demo2d
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_bigan.utils.progress import progress_bar

from .datalist import DATALIST_FILENAME, load_datalist

__all__ = ["SLICES_INFO_FILENAME", "extract_demo_slices", "ensure_demo_slices", "main"]

logger = logging.getLogger(__name__)

SLICES_INFO_FILENAME = "demo_slices_info.json"
SLICES_FORMAT_VERSION = 2


def _band(brain: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Axial slice indices inside ``band``, fractions of the brain's extent along the last axis."""
    occupied = np.flatnonzero(brain.reshape(-1, brain.shape[-1]).any(axis=0))
    if occupied.size == 0:
        raise ValueError("the brain mask is empty.")
    lo, hi = occupied[0], occupied[-1]
    first = int(round(lo + band[0] * (hi - lo)))
    last = int(round(lo + band[1] * (hi - lo)))
    return np.arange(first, max(last, first) + 1)


def _save_slice(array: np.ndarray, affine: np.ndarray, index: int, path: Path) -> None:
    # the in-plane part of the volume's affine, at the slice's own position: same voxel size, orientation and place
    affine2d = np.eye(4)
    affine2d[:3, :2] = affine[:3, :2]
    affine2d[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(index)]) + affine[:3, 3]
    img = nib.Nifti1Image(np.ascontiguousarray(array), affine2d)
    img.set_sform(affine2d, code="aligned")
    img.set_qform(affine2d, code="aligned")
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _write(
    source: Path,
    folder: Path,
    band: tuple[float, float],
    step: int,
    validation_step: int,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    splits = {
        split: load_datalist(source, split, required=split == "training")
        for split in ("training", "validation", "test")
    }
    # one step per source subject
    total = sum(len(entries) for entries in splits.values())
    bar = progress_bar(total=total, desc="demo slices", unit="subject", enabled=progress)
    datalist: dict[str, list[dict]] = {}
    for split, entries in splits.items():
        out: list[dict] = []
        for index, entry in enumerate(entries):
            img = nib.load(entry["image"])
            image = np.asarray(img.dataobj, dtype=np.float32)
            brain = np.asarray(nib.load(entry["brainmask"]).dataobj) > 0
            lesion = np.asarray(nib.load(entry["mask"]).dataobj) > 0 if "mask" in entry else None
            slices = _band(brain, band)
            if split == "training":
                chosen = slices[::step]
            elif split == "validation" and validation_step > 0:
                chosen = slices[::validation_step]
            elif lesion is not None and lesion[..., slices].any():
                chosen = [int(slices[np.argmax(lesion[..., slices].sum(axis=(0, 1)))])]
            else:
                rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(len(datalist), index)))
                chosen = [int(rng.choice(slices))]
            stem = Path(entry["image"]).name.replace(".nii.gz", "")
            for k in chosen:
                name = f"{stem}_z{int(k):03d}.nii.gz"
                item = {"image": f"images/{split}/{name}", "brainmask": f"brainmasks/{name}"}
                _save_slice(image[..., k], img.affine, k, folder / item["image"])
                _save_slice(brain[..., k].astype(np.uint8), img.affine, k, folder / item["brainmask"])
                if lesion is not None:
                    item = {"image": item["image"], "label": int(lesion[..., k].any()), "mask": f"masks/{name}", **item}
                    _save_slice(lesion[..., k].astype(np.uint8), img.affine, k, folder / item["mask"])
                out.append(item)
            bar.update()
        datalist[split] = out
    bar.close()
    with open(folder / DATALIST_FILENAME, "w", encoding="utf-8") as f:
        json.dump(datalist, f, indent=2)
    return {
        "counts": {split: len(v) for split, v in datalist.items()},
        "anomalous": {split: sum(e.get("label", 0) for e in v) for split, v in datalist.items()},
    }


def _params(source: Path, band: Sequence[float], step: int, validation_step: int | None, seed: int) -> dict[str, Any]:
    if not (0.0 <= band[0] <= band[1] <= 1.0):
        raise ValueError(f"band must be two fractions 0 <= low <= high <= 1, got {list(band)}.")
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}.")
    validation_step = step if validation_step is None else validation_step
    if validation_step < 0:
        raise ValueError(f"validation_step must be 0 (one slice per subject) or more, got {validation_step}.")
    info_path = source / "demo_info.json"
    source_info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return {
        "format_version": SLICES_FORMAT_VERSION,
        "source_parameters": source_info.get("parameters"),
        "band": [float(band[0]), float(band[1])],
        "step": int(step),
        "validation_step": int(validation_step),
        "seed": int(seed),
    }


def extract_demo_slices(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    band: Sequence[float] = (0.4, 0.65),
    step: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    validation_step: int | None = None,
    progress: bool = True,
) -> Path:
    """
    Write the 2D-image demo data set (see the module docstring) from a 3D demo data set.

    The data set is built in a hidden sibling folder and renamed into place when complete.

    Args:
        source_dir: a folder made by :py:func:`monai_bigan.data.generate_demo_data` (with brain masks).
        output_dir: the folder to create; it must not exist or be empty, unless ``overwrite`` and it holds a
            2D demo data set.
        band: the inferior-superior band of the brain the slices come from, as fractions of its extent.
        step: training slices are every ``step``-th slice of the band.
        seed: seed of the choice of the healthy test (and one-per-subject validation) slices.
        overwrite: replace an existing 2D demo data set.
        validation_step: validation slices are every ``validation_step``-th slice of the band (None: ``step``), or
            one slice per subject chosen as for the test split if 0.
        progress: show a progress bar with an ETA, one step per source subject (on a terminal; in a log file a
            status line every 10 s at most).

    Returns:
        the path of the written ``datalist.json``.

    Raises:
        FileExistsError: ``output_dir`` holds something else, or a data set and ``overwrite`` is False.
        ValueError: bad ``band``, ``step`` or ``validation_step``, or an empty brain mask.

    Example::

        extract_demo_slices("bundles/bigan/data/demo", "bundles/bigan/data/demo2d")
    """
    source = Path(os.path.abspath(source_dir))
    folder = Path(os.path.abspath(output_dir))
    params = _params(source, band, step, validation_step, seed)
    if folder.exists() and any(folder.iterdir()):
        if not (folder / SLICES_INFO_FILENAME).is_file():
            raise FileExistsError(f"{str(folder)!r} is not empty and holds no {SLICES_INFO_FILENAME}; left alone.")
        if not overwrite:
            raise FileExistsError(f"{str(folder)!r} already holds a 2D demo data set: pass overwrite=True.")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        summary = _write(source, tmp, tuple(params["band"]), step, params["validation_step"], seed, progress)
        with open(tmp / SLICES_INFO_FILENAME, "w", encoding="utf-8") as f:
            json.dump({**params, **summary, "source": str(source)}, f, indent=2)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "Wrote the 2D demo data set to %s: %s images, %s anomalous.", folder, summary["counts"], summary["anomalous"]
    )
    return folder / DATALIST_FILENAME


def ensure_demo_slices(output_dir: str | os.PathLike, source_dir: str | os.PathLike, **kwargs: Any) -> str:
    """
    Make sure ``output_dir`` holds the 2D demo data set of ``source_dir`` with these parameters, writing it only when
    needed; for bundle configs (``"dataset_dir": "$monai_bigan.data.ensure_demo_slices(..., ...)"``).

    Args:
        output_dir: the 2D data set folder.
        source_dir: the 3D demo data set folder.
        kwargs: ``band``, ``step``, ``validation_step``, ``seed``, ``progress`` of :py:func:`extract_demo_slices`.

    Returns:
        ``output_dir`` as an absolute path string.
    """
    folder = Path(os.path.abspath(output_dir))
    params = _params(
        Path(os.path.abspath(source_dir)),
        kwargs.get("band", (0.4, 0.65)),
        kwargs.get("step", 2),
        kwargs.get("validation_step"),
        kwargs.get("seed", 0),
    )
    info_path = folder / SLICES_INFO_FILENAME
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if all(info.get(k) == v for k, v in params.items()):
            logger.info("Using the 2D demo data set in %s (reused).", folder)
            return str(folder)
    extract_demo_slices(source_dir, folder, overwrite=info_path.is_file(), **kwargs)
    return str(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m monai_bigan.data.demo_slices --source_dir DIR --output_dir DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_bigan.data.demo_slices", description=__doc__.strip().split("\n")[0]
    )
    parser.add_argument("--source_dir", required=True, help="3D demo data set (python -m monai_bigan.data.demo)")
    parser.add_argument("--output_dir", required=True, help="folder of the 2D data set")
    parser.add_argument("--band", type=float, nargs=2, default=(0.4, 0.65), help="slice band, fractions of the brain")
    parser.add_argument("--step", type=int, default=2, help="every step-th training slice of the band")
    parser.add_argument(
        "--validation_step",
        type=int,
        default=None,
        help="every N-th validation slice of the band (default: --step); 0: one slice per subject, as for test",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the healthy test slice choice")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing 2D demo data set")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.overwrite:
        extract_demo_slices(
            args.source_dir,
            args.output_dir,
            band=args.band,
            step=args.step,
            seed=args.seed,
            overwrite=True,
            validation_step=args.validation_step,
            progress=not args.no_progress,
        )
    else:
        ensure_demo_slices(
            args.output_dir,
            args.source_dir,
            band=tuple(args.band),
            step=args.step,
            validation_step=args.validation_step,
            seed=args.seed,
            progress=not args.no_progress,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
