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
A small synthetic brain MRI data set for demos and tests, built offline from the MNI152 2009 template.

The template (ICBM 2009a symmetric T1, with its gray and white matter probability maps) ships inside the nilearn
package, so nothing is downloaded. Each subject is the skull-stripped template resampled to ``spacing`` mm, warped by
a random smooth deformation, with a random bias field, contrast and Rician noise. Anomalous subjects (only in the
validation and test splits) also hold 1 to 3 irregular **hypo-intense** lesions, mostly in the white matter, like the
T1 "black holes" of multiple sclerosis or chronic lacunar infarcts.

Folder layout (paths in ``datalist.json`` are relative to the folder)::

    datalist.json       training: [{image, brainmask}], validation and test: [{image, label, mask, brainmask}]
    demo_info.json      generator parameters and format version
    imagesTr/           float32 NIfTI images of the healthy training subjects (train_000.nii.gz, ...)
    imagesVal/          float32 NIfTI images of the validation subjects (val_000.nii.gz, ...)
    imagesTs/           float32 NIfTI images of the test subjects (test_000.nii.gz, ...)
    masks/              uint8 lesion masks of the validation and test subjects (all zero when healthy)
    brainmasks/         uint8 brain masks of every subject

Command line::

    python -m monai_bigan.data.demo --output_dir data/demo --seed 0
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import inspect
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from monai_bigan.utils.progress import progress_bar

from .datalist import DATALIST_FILENAME, load_datalist

__all__ = ["DEMO_INFO_FILENAME", "DEMO_FORMAT_VERSION", "generate_demo_data", "ensure_demo_data", "main"]

logger = logging.getLogger(__name__)

DEMO_INFO_FILENAME = "demo_info.json"
# bump when the content or layout of the generated data changes, so that ensure_demo_data regenerates old copies
DEMO_FORMAT_VERSION = 1
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# split name -> (image folder, file name prefix)
SPLIT_FOLDERS = {"training": ("imagesTr", "train"), "validation": ("imagesVal", "val"), "test": ("imagesTs", "test")}
MASK_FOLDER = "masks"
BRAINMASK_FOLDER = "brainmasks"
# parameters of generate_demo_data that define the content (the others only change how it is written)
_CONTENT_PARAMETERS = ("seed", "num_training", "num_validation", "num_test", "anomaly_fraction", "spacing")


@dataclass(frozen=True)
class _Template:
    """The skull-stripped template at the output spacing (read-only arrays)."""

    image: np.ndarray  # float32 T1, about 0.87 in white matter, 0 outside the brain
    brain: np.ndarray  # float32 brain mask in {0, 1}
    wm: np.ndarray  # float32 white matter probability
    depth: np.ndarray  # float32 distance to the outside of the brain, in voxels
    affine: np.ndarray  # 4x4 RAS voxel-to-world (mm)
    wm_level: float  # median T1 intensity of white matter


def _template_paths() -> dict[str, Path]:
    """Locate the MNI152 2009 template files inside the installed nilearn package."""
    try:
        data_dir = importlib.resources.files("nilearn") / "datasets" / "data"
    except ModuleNotFoundError as e:
        raise ImportError(
            "The demo data set is built from the MNI152 template that ships with nilearn, which is not installed: "
            "run `pip install nilearn` (version 0.9 or later)."
        ) from e
    paths = {key: Path(str(data_dir / name)) for key, name in TEMPLATE_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"The installed nilearn does not ship the MNI152 2009 template files {missing}: "
            "run `pip install -U nilearn` (version 0.9 or later ships them)."
        )
    return paths


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 3D holes, then 2D holes slice by slice along each axis (closes the ventricles and midline CSF)."""
    mask = ndi.binary_fill_holes(mask)
    for axis in range(mask.ndim):
        moved = np.moveaxis(mask, axis, 0)
        moved[...] = np.stack([ndi.binary_fill_holes(s) for s in moved])
    return mask


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, num = ndi.label(mask)
    if num <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


@functools.lru_cache(maxsize=2)
def _load_template(spacing: float, mask_smoothing_mm: float = 2.0, mask_threshold: float = 0.3) -> _Template:
    """
    Load the template, build its brain mask and resample both to ``spacing`` mm.

    The output grid keeps the template's first voxel and orientation, so the affine stays exact:
    ``affine = template_affine @ diag(spacing / template_voxel_size, 1)``.
    """
    paths = _template_paths()
    t1, src_affine = _read_volume(paths["t1"])
    gm, _ = _read_volume(paths["gm"])
    wm, _ = _read_volume(paths["wm"])
    t1 /= max(float(t1.max()), 1e-6)
    gm /= max(float(gm.max()), 1e-6)
    wm /= max(float(wm.max()), 1e-6)

    voxel = np.sqrt((src_affine[:3, :3] ** 2).sum(axis=0))
    scale = spacing / voxel
    in_shape = np.array(t1.shape)
    out_shape = tuple(int(n) for n in np.floor((in_shape - 1) / scale + 1e-6).astype(int) + 1)
    affine = src_affine @ np.diag([*scale, 1.0])
    # Gaussian anti-aliasing before down-sampling
    aa_sigma = np.maximum(scale - 1.0, 0.0) / 2.0

    def resample(volume: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        if np.any(sigma > 0):
            volume = ndi.gaussian_filter(volume, sigma)
        return ndi.affine_transform(volume, scale, output_shape=out_shape, order=1, mode="nearest", output=np.float32)

    # brain = smoothed (gm + wm) > threshold, holes filled: includes ventricles and sulcal CSF
    brain_prob = resample(gm + wm, np.sqrt((mask_smoothing_mm / voxel) ** 2 + aa_sigma**2))
    brain = _largest_component(_fill_holes(brain_prob > mask_threshold))
    image = resample(t1, aa_sigma) * brain
    wm_res = resample(wm, aa_sigma)
    wm_level = float(np.median(image[(wm_res > 0.9) & brain])) if np.any((wm_res > 0.9) & brain) else 1.0
    depth = ndi.distance_transform_edt(brain).astype(np.float32)
    arrays = [image, brain.astype(np.float32), wm_res, depth, affine]
    for a in arrays:
        a.flags.writeable = False
    return _Template(*arrays, wm_level=wm_level)


def _smooth_random_field(
    shape: Sequence[int], control_points: Sequence[int], rng: np.random.Generator, count: int = 1
) -> np.ndarray:
    """
    Random fields that are smooth cubic-spline interpolations of i.i.d. normal values on a coarse grid.

    The interpolation is separable, so it is done with three small matrix products instead of a full 3D zoom.

    Returns:
        float32 array of shape ``(count, *shape)``, values of about unit standard deviation.
    """
    bases = []
    for n, c in zip(shape, control_points):
        c = max(int(c), 2)
        # column j = cubic-spline interpolation of the j-th unit vector: the 1D interpolation matrix (n, c)
        bases.append(ndi.zoom(np.eye(c), (n / c, 1.0), order=3, mode="nearest", grid_mode=False)[:n])
    coarse = rng.standard_normal((count, *(b.shape[1] for b in bases)))
    field = np.einsum("nijk,xi,yj,zk->nxyz", coarse, *bases, optimize=True)
    return field.astype(np.float32)


def _random_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """A 3x3 rotation with Euler angles uniform in +-max_angle_deg."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sample_coordinates(
    shape: Sequence[int],
    spacing: float,
    rng: np.random.Generator,
    max_rotation_deg: float = 4.0,
    max_scaling: float = 0.05,
    max_shift_mm: float = 3.0,
    control_spacing_mm: float = 20.0,
    displacement_std_mm: float = 2.5,
) -> np.ndarray:
    """
    Source coordinates of a random smooth deformation: a small random affine plus an elastic displacement.

    With the defaults at 2 mm the elastic part moves voxels by about 1.2 voxels on average and up to 4 voxels.

    Returns:
        float32 array ``(3, *shape)`` of template voxel coordinates for ``scipy.ndimage.map_coordinates``.
    """
    matrix = _random_rotation(rng, max_rotation_deg) @ np.diag(1.0 + rng.uniform(-max_scaling, max_scaling, 3))
    shift = rng.uniform(-max_shift_mm, max_shift_mm, 3) / spacing
    control = [int(np.ceil(n * spacing / control_spacing_mm)) + 2 for n in shape]
    coords = _smooth_random_field(shape, control, rng, count=3)
    coords *= displacement_std_mm / spacing
    center = (np.asarray(shape) - 1) / 2.0
    grid = [np.arange(n, dtype=np.float32) - np.float32(c) for n, c in zip(shape, center)]
    for i in range(3):
        coords[i] += np.float32(center[i] + shift[i])
        for j, g in enumerate(grid):
            view = [1, 1, 1]
            view[j] = -1
            coords[i] += np.float32(matrix[i, j]) * g.reshape(view)
    return coords


def _add_lesions(
    image: np.ndarray,
    brain: np.ndarray,
    wm: np.ndarray,
    depth: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    max_lesions: int = 3,
    radius_mm: tuple[float, float] = (6.0, 16.0),
    contrast: tuple[float, float] = (0.3, 0.5),
    irregularity: float = 0.2,
    edge_width: float = 0.15,
) -> np.ndarray:
    """
    Darken ``image`` in place with 1 to ``max_lesions`` irregular lesions centered in white matter.

    Each lesion is a randomly oriented ellipsoid whose normalized radius is perturbed by smoothed noise (irregular
    boundary) with a tanh edge. Its intensity is the tissue intensity times ``1 - c``, with ``c`` in ``contrast``
    (white matter at 0.87 becomes 0.43-0.61: between CSF and gray matter, clearly but not trivially abnormal).

    Returns:
        bool lesion mask (normalized radius < 1), inside ``brain`` and never empty.
    """
    shape = np.asarray(image.shape)
    profile = np.zeros(image.shape, dtype=np.float32)
    attenuation = np.zeros(image.shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        radius = rng.uniform(*radius_mm) / spacing
        candidates = np.flatnonzero((wm > 0.6) & (depth > radius + 1.0))
        if candidates.size == 0:  # coarse grids: fall back to the deepest brain voxels
            candidates = np.flatnonzero(depth >= 0.5 * depth.max())
        center = np.array(np.unravel_index(int(rng.choice(candidates)), image.shape))
        half = int(np.ceil(1.3 * radius * (1 + 2 * irregularity))) + 2
        lo = np.maximum(center - half, 0)
        hi = np.minimum(center + half + 1, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        rel = np.stack(np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, center)], indexing="ij"))
        # random orientation (QR of a Gaussian matrix) and axis lengths
        rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        axes = radius * rng.uniform(0.7, 1.3, 3)
        local = np.einsum("ij,i...->j...", rotation, rel) / axes.reshape(3, 1, 1, 1)
        rho = np.sqrt((local**2).sum(axis=0))
        noise = ndi.gaussian_filter(rng.standard_normal(rho.shape), max(radius / 2.0, 1.0))
        noise /= max(float(noise.std()), 1e-6)
        # clipping keeps the center inside the lesion, so the mask is never empty
        rho += np.clip(irregularity * noise, -2 * irregularity, 2 * irregularity)
        weight = (0.5 * (1.0 + np.tanh((1.0 - rho) / edge_width))).astype(np.float32)
        profile[box] = np.maximum(profile[box], weight)
        attenuation[box] = np.maximum(attenuation[box], np.float32(rng.uniform(*contrast)) * weight)
    image *= 1.0 - attenuation * brain
    return (profile > 0.5) & (brain > 0)


def _synthesize_subject(
    template: _Template,
    spacing: float,
    rng: np.random.Generator,
    anomalous: bool,
    gamma_range: tuple[float, float] = (0.8, 1.2),
    scale_range: tuple[float, float] = (0.85, 1.15),
    bias_range: tuple[float, float] = (0.1, 0.2),
    noise_range: tuple[float, float] = (0.02, 0.04),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    One random subject: deformation, lesions (when ``anomalous``), gamma, bias field, scale and Rician noise.

    Returns:
        ``(image float32, brain mask uint8, lesion mask uint8)``; the image is zero outside the brain mask
        (skull-stripped), about 0.87 * scale in white matter.
    """
    shape = template.image.shape
    coords = _sample_coordinates(shape, spacing, rng)
    warp = functools.partial(ndi.map_coordinates, coordinates=coords, order=1, mode="constant", output=np.float32)
    image = warp(template.image)
    brain = warp(template.brain) > 0.5
    if anomalous:
        # the warped template depth approximates the subject's (the deformation is small and smooth)
        lesion = _add_lesions(image, brain, warp(template.wm), warp(template.depth), spacing, rng)
    else:
        lesion = np.zeros(shape, dtype=bool)
    del coords, warp

    gamma = rng.uniform(*gamma_range)
    scale = rng.uniform(*scale_range)
    np.clip(image, 0.0, None, out=image)
    image **= np.float32(gamma)
    # smooth multiplicative bias field in [1 - a, 1 + a]
    bias = _smooth_random_field(shape, (4, 4, 4), rng)[0]
    bias *= np.float32(rng.uniform(*bias_range) / max(float(np.abs(bias).max()), 1e-6))
    bias += np.float32(1.0)
    image *= bias * np.float32(scale)
    del bias
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels
    sigma = np.float32(rng.uniform(*noise_range) * scale * template.wm_level**gamma)
    real = rng.standard_normal(shape, dtype=np.float32)
    real *= sigma
    real += image
    imag = rng.standard_normal(shape, dtype=np.float32)
    imag *= sigma
    image = np.hypot(real, imag)
    del real, imag
    # skull-stripped: nothing outside the brain mask
    image *= brain
    return image.astype(np.float32, copy=False), brain.astype(np.uint8), lesion.astype(np.uint8)


def _content_parameters(
    seed: Any, num_training: Any, num_validation: Any, num_test: Any, anomaly_fraction: Any, spacing: Any
) -> dict[str, Any]:
    """Validate the content parameters and normalize their types (so that they compare equal to demo_info.json)."""

    def as_int(name: str, value: Any, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        return int(value)

    params: dict[str, Any] = {
        "seed": as_int("seed", seed, 0),
        "num_training": as_int("num_training", num_training, 1),
        "num_validation": as_int("num_validation", num_validation, 0),
        "num_test": as_int("num_test", num_test, 0),
        "anomaly_fraction": float(anomaly_fraction),
        "spacing": float(spacing),
    }
    if not 0.0 <= params["anomaly_fraction"] <= 1.0:
        raise ValueError(f"anomaly_fraction must be in [0, 1], got {anomaly_fraction!r}.")
    # below 0.5 mm the volumes get large for no gain (the template has 1 mm voxels); above 8 mm lesions vanish
    if not 0.5 <= params["spacing"] <= 8.0:
        raise ValueError(f"spacing must be in [0.5, 8] mm, got {spacing!r}.")
    return params


def _plan_subjects(params: dict[str, Any]) -> list[tuple[str, int, int, bool]]:
    """``(split, split_id, index, anomalous)`` for every subject; anomalous subjects are drawn per split."""
    plan = []
    counts = {"training": params["num_training"], "validation": params["num_validation"], "test": params["num_test"]}
    for split_id, (split, count) in enumerate(counts.items()):
        anomalous = np.zeros(count, dtype=bool)
        if split != "training" and count > 0:
            num_anomalous = int(np.floor(params["anomaly_fraction"] * count + 0.5))
            rng = np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=(split_id, 1)))
            anomalous[rng.permutation(count)[:num_anomalous]] = True
        plan.extend((split, split_id, i, bool(anomalous[i])) for i in range(count))
    return plan


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code="aligned")
    img.set_qform(affine, code="aligned")
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def _write_dataset(folder: Path, params: dict[str, Any], progress: bool) -> None:
    """Generate every subject and write the images, masks, datalist and (last) demo_info into ``folder``."""
    spacing = params["spacing"]
    template = _load_template(spacing)
    plan = _plan_subjects(params)
    for name in [f for f, _ in SPLIT_FOLDERS.values()] + [MASK_FOLDER, BRAINMASK_FOLDER]:
        (folder / name).mkdir()

    datalist: dict[str, list[dict]] = {split: [] for split in SPLIT_FOLDERS}
    items = progress_bar(plan, desc="demo data", unit="subject", enabled=progress)
    for split, split_id, index, anomalous in items:
        # one independent stream per subject: subjects do not depend on the split sizes
        rng = np.random.default_rng(np.random.SeedSequence(params["seed"], spawn_key=(split_id, 0, index)))
        image, brain, lesion = _synthesize_subject(template, spacing, rng, anomalous)
        image_folder, prefix = SPLIT_FOLDERS[split]
        stem = f"{prefix}_{index:03d}"
        entry = {"image": f"{image_folder}/{stem}.nii.gz", "brainmask": f"{BRAINMASK_FOLDER}/{stem}.nii.gz"}
        _save_nifti(image, template.affine, folder / entry["image"])
        _save_nifti(brain, template.affine, folder / entry["brainmask"])
        if split != "training":
            entry = {"image": entry["image"], "label": int(anomalous), "mask": f"{MASK_FOLDER}/{stem}.nii.gz", **entry}
            _save_nifti(lesion, template.affine, folder / entry["mask"])
        datalist[split].append(entry)
        logger.debug("Wrote %s (anomalous=%s, lesion voxels=%d).", entry["image"], anomalous, int(lesion.sum()))

    with open(folder / DATALIST_FILENAME, "w", encoding="utf-8") as f:
        json.dump(datalist, f, indent=2)
    info = {
        "format_version": DEMO_FORMAT_VERSION,
        "generator": __name__,
        "parameters": params,
        "template": "MNI152 ICBM 2009a symmetric (shipped with nilearn)",
        "lesions": "hypo-intense (T1 black holes), 1-3 per anomalous subject, mostly in white matter",
        "shape": list(template.image.shape),
        "affine": template.affine.tolist(),
        "counts": {split: len(entries) for split, entries in datalist.items()},
        "anomalous": {split: sum(e.get("label", 0) for e in entries) for split, entries in datalist.items()},
    }
    # written last: a folder with a demo_info.json is complete
    with open(folder / DEMO_INFO_FILENAME, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


def _read_demo_info(folder: Path) -> dict | None:
    """The content of ``folder/demo_info.json``: None when absent, ``{}`` when unreadable."""
    path = folder / DEMO_INFO_FILENAME
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _is_valid_demo(folder: Path, params: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete demo data set made with ``params`` by this format version."""
    info = _read_demo_info(folder)
    if not info or info.get("format_version") != DEMO_FORMAT_VERSION or info.get("parameters") != params:
        return False
    expected = {"training": params["num_training"], "validation": params["num_validation"], "test": params["num_test"]}
    try:
        return all(len(load_datalist(folder, split, required=False)) == n for split, n in expected.items())
    except (OSError, ValueError):
        return False


def _install(tmp: Path, folder: Path, params: dict[str, Any], overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``folder`` with renames, so ``folder`` is never half written."""
    old = None
    if overwrite and folder.is_dir() and (folder / DEMO_INFO_FILENAME).is_file():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(folder, old)
    try:
        try:
            os.replace(tmp, folder)  # POSIX replaces a missing or empty folder atomically
        except OSError:
            if folder.is_dir() and not any(folder.iterdir()):  # e.g. Windows does not replace empty folders
                folder.rmdir()
                os.replace(tmp, folder)
            else:
                raise
    except OSError as e:
        if old is not None:
            os.replace(old, folder)
        if _is_valid_demo(folder, params):  # another process finished the same data set first
            logger.debug("%s was generated concurrently; discarding this copy.", folder)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise FileExistsError(f"Could not move the generated demo data set to {str(folder)!r}: {e}") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _generate(folder: Path, params: dict[str, Any], overwrite: bool, progress: bool) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"{str(folder)!r} exists and is not a folder.")
        if any(folder.iterdir()):
            if not (folder / DEMO_INFO_FILENAME).is_file():
                raise FileExistsError(
                    f"{str(folder)!r} is not empty and holds no {DEMO_INFO_FILENAME}: it was not made by "
                    "generate_demo_data, so it is left alone. Choose a new or empty output folder."
                )
            if not overwrite:
                raise FileExistsError(
                    f"{str(folder)!r} already holds a demo data set: pass overwrite=True to replace it, "
                    "or use ensure_demo_data to reuse it."
                )
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a hidden sibling on the same file system, so that the final rename is atomic
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        _write_dataset(tmp, params, progress)
        _install(tmp, folder, params, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def generate_demo_data(
    output_dir: str | os.PathLike,
    seed: int = 0,
    num_training: int = 48,
    num_validation: int = 12,
    num_test: int = 24,
    anomaly_fraction: float = 0.5,
    spacing: float = 2.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """
    Generate the synthetic brain MRI demo data set (see the module docstring) into ``output_dir``.

    Training subjects are all healthy; in the validation and test splits, ``anomaly_fraction`` of the subjects
    (rounded) hold 1 to 3 hypo-intense lesions. At the default 2 mm spacing every image is 99 x 117 x 95 voxels with
    an RAS affine ``diag(2, 2, 2)`` and origin ``(-98, -134, -72)`` mm (the MNI template's). The same ``seed`` gives
    identical arrays; each subject has its own random stream derived from ``seed``, its split and its index.

    The data set is built in a hidden sibling folder and renamed into place when complete, so an interrupted run
    never leaves a partial data set behind.

    Args:
        output_dir: the folder to create. It must not exist, be empty, or (with ``overwrite``) hold a demo data set.
        seed: master random seed (>= 0).
        num_training: number of healthy training subjects (>= 1).
        num_validation: number of validation subjects (>= 0).
        num_test: number of test subjects (>= 0).
        anomaly_fraction: fraction of validation and test subjects with lesions, in [0, 1].
        spacing: isotropic voxel size in mm, in [0.5, 8].
        overwrite: replace ``output_dir`` if it holds a demo data set (a ``demo_info.json``). A folder without
            ``demo_info.json`` is never deleted.
        progress: show a progress bar with an ETA, one step per subject (on a terminal; in a log file a status
            line every 10 s at most).

    Returns:
        The path of the generated ``datalist.json``.

    Raises:
        ImportError: nilearn is not installed.
        FileNotFoundError: nilearn does not ship the MNI152 2009 template.
        FileExistsError: ``output_dir`` is not empty and cannot be replaced.
        ValueError: a parameter is out of range.

    Example::

        datalist_path = generate_demo_data("data/demo", seed=0)
        train_files = load_datalist(datalist_path.parent, "training")
    """
    params = _content_parameters(seed, num_training, num_validation, num_test, anomaly_fraction, spacing)
    folder = Path(os.path.abspath(Path(output_dir).expanduser()))
    start = time.perf_counter()
    _generate(folder, params, overwrite=overwrite, progress=progress)
    logger.info("Generated the demo data set in %s (%.1f s).", folder, time.perf_counter() - start)
    return folder / DATALIST_FILENAME


def ensure_demo_data(output_dir: str | os.PathLike, **kwargs: Any) -> str:
    """
    Make sure ``output_dir`` holds the demo data set for these parameters, generating it only when needed.

    An existing data set is reused when its ``demo_info.json`` has the same format version and parameters and its
    datalist files all exist; otherwise it is regenerated (replacing the old one). Logs one INFO line saying where
    the data set is and whether it was generated or reused. Designed for bundle configs::

        "dataset_dir": "$monai_bigan.data.ensure_demo_data(@bundle_root + '/data/demo')"

    Args:
        output_dir: the data set folder.
        kwargs: parameters of :py:func:`generate_demo_data` (``seed``, ``num_training``, ``num_validation``,
            ``num_test``, ``anomaly_fraction``, ``spacing``, ``progress``), not ``overwrite``.

    Returns:
        ``output_dir`` as an absolute path string.

    Raises:
        TypeError: an unknown keyword, or ``overwrite``.
        FileExistsError: ``output_dir`` is a non-empty folder that holds no demo data set.
        ImportError, FileNotFoundError, ValueError: as :py:func:`generate_demo_data`.

    Example::

        dataset_dir = ensure_demo_data("bundles/bigan/data/demo", num_training=8)
    """
    if "overwrite" in kwargs:
        raise TypeError(
            "ensure_demo_data replaces outdated demo data by itself; use generate_demo_data(overwrite=True)."
        )
    bound = inspect.signature(generate_demo_data).bind(output_dir, **kwargs)
    bound.apply_defaults()
    params = _content_parameters(**{k: bound.arguments[k] for k in _CONTENT_PARAMETERS})
    folder = Path(os.path.abspath(Path(output_dir).expanduser()))
    if _is_valid_demo(folder, params):
        logger.info("Using the demo data set in %s (reused).", folder)
        return str(folder)
    start = time.perf_counter()
    replace = folder.is_dir() and (folder / DEMO_INFO_FILENAME).is_file()
    _generate(folder, params, overwrite=replace, progress=bound.arguments["progress"])
    action = "regenerated: parameters or format changed" if replace else "generated"
    logger.info("Using the demo data set in %s (%s, %.1f s).", folder, action, time.perf_counter() - start)
    return str(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line entry point: ``python -m monai_bigan.data.demo --output_dir DIR [--seed N ...]``.

    Reuses a valid demo data set in ``DIR`` unless ``--overwrite`` is given.

    Args:
        argv: the arguments, ``sys.argv[1:]`` when None.

    Returns:
        The exit status, 0 on success.
    """
    defaults = {k: p.default for k, p in inspect.signature(generate_demo_data).parameters.items()}
    parser = argparse.ArgumentParser(prog="python -m monai_bigan.data.demo", description=__doc__.strip().split("\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder of the data set")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="master random seed")
    parser.add_argument("--num_training", type=int, default=defaults["num_training"], help="healthy training subjects")
    parser.add_argument("--num_validation", type=int, default=defaults["num_validation"], help="validation subjects")
    parser.add_argument("--num_test", type=int, default=defaults["num_test"], help="test subjects")
    parser.add_argument(
        "--anomaly_fraction", type=float, default=defaults["anomaly_fraction"], help="fraction of val/test with lesions"
    )
    parser.add_argument("--spacing", type=float, default=defaults["spacing"], help="isotropic voxel size in mm")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if a valid demo data set exists")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = {k: getattr(args, k) for k in _CONTENT_PARAMETERS}
    if args.overwrite:
        generate_demo_data(args.output_dir, overwrite=True, progress=not args.no_progress, **kwargs)
    else:
        ensure_demo_data(args.output_dir, progress=not args.no_progress, **kwargs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
