"""Shared fixtures: tiny networks and a tiny NIfTI data set written on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from monai_bigan.networks import BiGAN, Encoder, Generator, JointDiscriminator

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_bigan(spatial_dims: int = 2, size: int = 16, latent: int = 8, norm: str | None = "batch") -> BiGAN:
    """A BiGAN small enough for unit tests on a CPU."""
    in_shape = (1,) + (size,) * spatial_dims
    channels, strides = (4, 8), (2, 2)
    return BiGAN(
        Encoder(spatial_dims, in_shape, latent, channels=channels, strides=strides, norm=norm),
        Generator(spatial_dims, latent, in_shape, channels=channels[::-1], strides=strides, norm=norm),
        JointDiscriminator(
            spatial_dims, in_shape, latent, channels=channels, strides=strides, latent_features=16, joint_features=16
        ),
    )


def _phantom(rng: np.random.Generator, shape: tuple[int, ...], lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ellipsoid 'head' with noise; optionally a bright blob and its mask."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = sum((g / 0.8) ** 2 for g in grid)
    image = np.where(radius < 1, 100.0 + 20 * gaussian_filter(rng.standard_normal(shape), 2), 0.0)
    image += rng.normal(0, 2, shape)
    mask = np.zeros(shape, np.uint8)
    if lesion:
        centre = [s // 2 + int(rng.integers(-2, 3)) for s in shape]
        blob = sum(
            ((np.arange(s)[tuple(slice(None) if j == i else None for j in range(len(shape)))] - c) / 3.0) ** 2
            for i, (s, c) in enumerate(zip(shape, centre))
        )
        mask = (blob < 1).astype(np.uint8)
        image[mask > 0] += 150.0
    return np.abs(image).astype(np.float32), mask


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Folder with 4 healthy training volumes, 2 validation and 2 test volumes (one anomalous each) and datalist."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for split, n in (("training", 4), ("validation", 2), ("test", 2)):
        for i in range(n):
            label = int(split != "training" and i % 2 == 1)
            image, mask = _phantom(rng, (24, 28, 20), lesion=bool(label))
            name = f"{split}_{i}"
            nib.save(nib.Nifti1Image(image, affine), root / f"{name}.nii.gz")
            entry = {"image": f"{name}.nii.gz"}
            if split != "training":
                nib.save(nib.Nifti1Image(mask, affine), root / f"{name}_mask.nii.gz")
                entry.update(label=label, mask=f"{name}_mask.nii.gz")
            datalist[split].append(entry)
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return root


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """
    A real Orthanc PACS with DICOMweb (tests/orthanc.py) for the session: ``.url``, ``.dicomweb_url``. Skipped when
    Orthanc or its DICOMweb plugin is not installed, except in CI (env CI set), where that fails the test.
    """
    import os

    from tests.orthanc import orthanc_missing, start_orthanc

    missing = orthanc_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: CI must run the PACS tests.")
        pytest.skip(missing)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def train_tiny_bundle(root: Path, dataset_dir: Path, config_file, run_id: str = "training", **overrides) -> Path:
    """Run the training bundle (``run_id`` of it) for one epoch (unless overridden) into ``root`` and return it."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=config_file,
        workflow_type="train",
        run_id=run_id,
        bundle_root=str(root),
        dataset_dir=str(dataset_dir),
        **{"max_epochs": 1, **overrides},
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return root
